//! A trained model as one folder (config, weights, tokenizer) and running it: audio → encoder → CTC log-probs or
//! RNN-T greedy decoding → transcript.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use mezcla_models::conformer::{ConformerConfig, ConformerEncoder};
use mezcla_models::cpu_inference::CpuConformer;
use mezcla_models::ctc::CtcHead;
use mezcla_models::frontend::{FrontendOptions, MelFrontend, PadTo, PreprocessorConfig};
use mezcla_models::transducer::{Transducer, TransducerConfig};
use mezcla_tokenizer::ConcatTokenizer;
use serde::{Deserialize, Serialize};

use crate::decode::{self, Emission, LogProbs, Transcript};

/// Name of the model's configuration file inside its folder.
pub const CONFIG_FILE: &str = "config.json";
/// Name of the weights file inside a model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Name of the tokenizer folder inside a model folder.
pub const TOKENIZER_DIR: &str = "tokenizer";
const FORMAT: &str = "mezcla-asr-model/1";

/// `config.json` of a model folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelConfig {
    pub format: String,
    /// NeMo's preprocessor block.
    pub preprocessor: PreprocessorConfig,
    /// NeMo's pre-2025 front-end (+1 frame, reflect padding), for checkpoints trained with it.
    #[serde(default)]
    pub legacy_frontend: bool,
    /// NeMo's ConformerEncoder block.
    pub encoder: ConformerConfig,
    /// Vocabulary size V of the tokenizer; the CTC head (or the RNN-T joint) has V + 1 outputs, blank last.
    pub vocab_size: usize,
    /// An RNN-T head (prediction network and joint, decoded greedily) instead of the CTC head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transducer: Option<TransducerConfig>,
    /// How to decode by default when the folder holds a word LM (`lm.arpa.gz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding: Option<DecodingConfig>,
}

/// The default decoding of a model folder with its own word LM (`mezcla convert --lm`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DecodingConfig {
    pub beam: usize,
    pub lm_alpha: f64,
    pub lm_beta: f64,
    pub lm_unk: f64,
}

/// Name of the word LM inside a model folder.
pub const LM_FILE: &str = "lm.arpa.gz";

impl ModelConfig {
    /// A model config for the tokenizer's vocabulary, NeMo's Conformer-CTC front-end (80 mels) and a preset.
    pub fn new(preset: &str, vocab_size: usize) -> Result<Self> {
        let preprocessor = PreprocessorConfig {
            window_size: Some(0.025),
            window_stride: Some(0.01),
            features: 80,
            n_fft: Some(512),
            pad_to: PadTo::Frames(0),
            ..PreprocessorConfig::default()
        };
        let encoder = ConformerConfig::preset(preset, 80).with_context(|| {
            format!("unknown model preset {preset:?} (tiny, small, medium or large)")
        })?;
        Ok(Self::from_parts(preprocessor, false, encoder, vocab_size))
    }

    /// A model config from its parts (e.g. mapped from a NeMo checkpoint).
    pub fn from_parts(
        preprocessor: PreprocessorConfig,
        legacy_frontend: bool,
        encoder: ConformerConfig,
        vocab_size: usize,
    ) -> Self {
        Self {
            format: FORMAT.into(),
            preprocessor,
            legacy_frontend,
            encoder,
            vocab_size,
            transducer: None,
            decoding: None,
        }
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the model config", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates the text of a `config.json`; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> Result<Self> {
        let cfg: Self =
            serde_json::from_str(text).with_context(|| format!("{name}: invalid model config"))?;
        if cfg.format != FORMAT {
            bail!(
                "{name}: unsupported model format {:?} (expected {FORMAT:?})",
                cfg.format
            );
        }
        cfg.encoder
            .validate()
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        if let Some(t) = &cfg.transducer {
            t.validate().map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            if cfg.decoding.is_some() {
                bail!("{name}: decoding (a word LM) is for CTC models; this one has an RNN-T head");
            }
        }
        if cfg.decoding.is_some_and(|d| d.beam < 2) {
            bail!("{name}: decoding.beam must be at least 2 (the LM needs a beam search)");
        }
        Ok(cfg)
    }
}

/// A loaded model: front-end, encoder, CTC or RNN-T head and tokenizer.
pub struct AsrModel {
    pub config: ModelConfig,
    pub frontend: MelFrontend,
    pub encoder: ConformerEncoder,
    /// The CTC head; `None` for RNN-T models.
    pub head: Option<CtcHead>,
    /// The RNN-T head of RNN-T models (inference only).
    pub transducer: Option<Transducer>,
    pub tokenizer: ConcatTokenizer,
    pub device: Device,
    /// The fused CPU inference path over the same weights (models loaded for inference; not while training).
    cpu: Option<CpuConformer>,
    /// Each token's word start and text, for the beam search.
    pieces: decode::Pieces,
    /// The folder's own word LM (`lm.arpa.gz`, with `config.decoding`), used unless told otherwise.
    pub lm: Option<std::sync::Arc<crate::lm::NgramLm>>,
}

/// How to decode.
#[derive(Clone)]
pub struct DecodeOptions {
    /// 1: greedy; more: CTC prefix beam search with that many prefixes.
    pub beam: usize,
    /// A word language model fused into the beam search (used when `beam` > 1).
    pub lm: Option<std::sync::Arc<decode::LmFusion>>,
    /// Audio longer than this (seconds) is transcribed in chunks.
    pub chunk_seconds: f64,
    /// Overlap between consecutive chunks (seconds).
    pub overlap_seconds: f64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            beam: 1,
            lm: None,
            chunk_seconds: 30.0,
            overlap_seconds: 4.0,
        }
    }
}

impl AsrModel {
    /// Builds the modules from a config under a VarBuilder with NeMo's names (`encoder.…`, and `decoder.…` for
    /// a CTC head or `decoder.prediction.…` and `joint.…` for an RNN-T head).
    pub fn build(
        config: ModelConfig,
        tokenizer: ConcatTokenizer,
        vb: VarBuilder,
        device: &Device,
    ) -> Result<Self> {
        if tokenizer.vocab_size() != config.vocab_size {
            bail!(
                "the tokenizer has {} tokens but the model expects {}",
                tokenizer.vocab_size(),
                config.vocab_size
            );
        }
        let options = FrontendOptions {
            legacy: config.legacy_frontend,
            ..Default::default()
        };
        let frontend = MelFrontend::with_options(&config.preprocessor, options)?;
        if frontend.n_features() != config.encoder.feat_in {
            bail!(
                "the front-end gives {} features but encoder.feat_in is {}",
                frontend.n_features(),
                config.encoder.feat_in
            );
        }
        let encoder = ConformerEncoder::new(&config.encoder, vb.pp("encoder"))?;
        let (head, transducer) = match &config.transducer {
            Some(t) => (
                None,
                Some(Transducer::new(
                    t,
                    config.encoder.output_dim(),
                    config.vocab_size,
                    &vb,
                )?),
            ),
            None => (
                Some(CtcHead::new(
                    config.encoder.output_dim(),
                    config.vocab_size,
                    vb.pp("decoder"),
                )?),
                None,
            ),
        };
        Ok(Self {
            pieces: decode::Pieces::new(&tokenizer)?,
            lm: None,
            config,
            frontend,
            encoder,
            head,
            transducer,
            tokenizer,
            device: device.clone(),
            cpu: None,
        })
    }

    /// Packs the weights under `vb` (the same as the modules') for the fused CPU inference path, which
    /// [`Self::log_probs`] and [`Self::encode`] then use. Only for fixed weights: a model being trained keeps the candle path.
    pub fn with_cpu_inference(mut self, vb: &VarBuilder) -> Result<Self> {
        if self.device.is_cpu() {
            let ctc_classes = self.head.is_some().then_some(self.config.vocab_size);
            self.cpu = Some(CpuConformer::new(&self.config.encoder, ctc_classes, vb)?);
        }
        Ok(self)
    }

    /// Drops the fused CPU path: inference then runs through the candle modules (for comparisons).
    pub fn without_cpu_inference(mut self) -> Self {
        self.cpu = None;
        self
    }

    /// Loads a model folder: `config.json`, `model.safetensors` (f32, f16, bf16 or int8 with row scales) and
    /// `tokenizer/`.
    pub fn load(dir: &Path) -> Result<Self> {
        let f = FolderFiles::read(dir)?;
        let lm = match f.config.decoding {
            Some(_) => Some(std::sync::Arc::new(crate::lm::NgramLm::read_arpa(
                &dir.join(LM_FILE),
            )?)),
            None => None,
        };
        let mut model = Self::from_weights(f.config, f.tokenizer, &f.weights, &f.weights_name)
            .with_context(|| format!("{}: the weights do not fit the config", dir.display()))?;
        model.lm = lm;
        Ok(model)
    }

    /// Builds a model from its config, tokenizer and the bytes of its weights file (`name` is used in errors).
    pub fn from_weights(
        config: ModelConfig,
        tokenizer: ConcatTokenizer,
        weights: &[u8],
        name: &str,
    ) -> Result<Self> {
        let device = Device::Cpu;
        let tensors = crate::weights::load(weights, name, &device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        Self::build(config, tokenizer, vb.clone(), &device)?.with_cpu_inference(&vb)
    }

    /// Seconds of audio per encoder output frame.
    pub fn frame_seconds(&self) -> f64 {
        self.frontend.hop_length() as f64 / self.frontend.sample_rate() as f64
            * self.config.encoder.subsampling_factor as f64
    }

    /// Sample rate the model expects.
    pub fn sample_rate(&self) -> u32 {
        self.frontend.sample_rate()
    }

    /// Whether the model decodes with an RNN-T head (greedy only; no frame-wise log-probabilities).
    pub fn is_transducer(&self) -> bool {
        self.transducer.is_some()
    }

    /// The encoder output [T', output_dim] (time-major) and T' of each utterance of a batch of audio at the
    /// model's sample rate.
    pub fn encode(&self, audios: &[&[f32]]) -> Result<Vec<(Vec<f32>, usize)>> {
        if let Some(cpu) = &self.cpu {
            return audios
                .iter()
                .map(|audio| {
                    let f = self.frontend.compute(audio)?;
                    Ok(cpu.encode(&f.data, f.n_frames, f.length)?)
                })
                .collect();
        }
        let batch = self.frontend.batch(audios, &self.device)?;
        let (encoded, lengths) = self
            .encoder
            .forward(&batch.features, &batch.lengths, false)?;
        // [B, d, T] → per utterance [T, d] over its valid frames.
        let encoded = encoded.transpose(1, 2)?.contiguous()?;
        let (_, t, d) = encoded.dims3()?;
        let data = encoded.flatten_all()?.to_vec1::<f32>()?;
        Ok(lengths
            .iter()
            .enumerate()
            .map(|(i, &len)| (data[i * t * d..(i * t + len) * d].to_vec(), len))
            .collect())
    }

    /// RNN-T greedy decoding of one utterance (an RNN-T model only); with `record`, the joint's
    /// log-probabilities at every step are kept.
    pub fn transducer_path(
        &self,
        audio: &[f32],
        record: bool,
    ) -> Result<mezcla_models::transducer::TransducerPath> {
        let Some(transducer) = &self.transducer else {
            bail!("the model has no RNN-T head");
        };
        let (encoded, frames) = self.encode(&[audio])?.remove(0);
        Ok(transducer.greedy(&encoded, frames, record)?)
    }

    /// Log-probabilities [B, T', V+1] and valid frames for a batch of audio at the model's sample rate (CTC
    /// models).
    pub fn log_probs(&self, audios: &[&[f32]]) -> Result<(Tensor, Vec<usize>)> {
        let Some(head) = &self.head else {
            bail!("an RNN-T model has no frame-wise CTC log-probabilities");
        };
        if let Some(cpu) = &self.cpu {
            // One utterance at a time at its own length, each product on all threads.
            let mut outs = Vec::with_capacity(audios.len());
            for audio in audios {
                let f = self.frontend.compute(audio)?;
                outs.push(cpu.log_probs(&f.data, f.n_frames, f.length)?);
            }
            let classes = cpu.classes();
            let frames = outs.iter().map(|(_, t)| *t).max().unwrap_or(0);
            let mut data = vec![0f32; audios.len() * frames * classes];
            for (i, (lp, t)) in outs.iter().enumerate() {
                data[i * frames * classes..][..t * classes].copy_from_slice(lp);
            }
            let lengths = outs.iter().map(|(_, t)| *t).collect();
            let lp = Tensor::from_vec(data, (audios.len(), frames, classes), &self.device)?;
            return Ok((lp, lengths));
        }
        let batch = self.frontend.batch(audios, &self.device)?;
        let (encoded, lengths) = self
            .encoder
            .forward(&batch.features, &batch.lengths, false)?;
        Ok((head.log_probs(&encoded)?, lengths))
    }

    /// Greedy or beam emissions of each utterance of a batch, in that utterance's frames.
    fn emissions(&self, audios: &[&[f32]], opts: &DecodeOptions) -> Result<Vec<Emission>> {
        if let Some(transducer) = &self.transducer {
            check_transducer_options(opts)?;
            let mut out = Vec::new();
            for (encoded, frames) in self.encode(audios)? {
                let path = transducer.greedy(&encoded, frames, false)?;
                out.extend(path.tokens.iter().map(|&(id, t)| Emission {
                    id,
                    start: t,
                    end: t + 1,
                }));
            }
            return Ok(out);
        }
        let (lp, lengths) = self.log_probs(audios)?;
        let (_, t, c) = lp.dims3()?;
        let data = lp.flatten_all()?.to_vec1::<f32>()?;
        let mut out = Vec::new();
        for (i, &len) in lengths.iter().enumerate() {
            let rows = LogProbs {
                data: &data[i * t * c..(i * t + len) * c],
                frames: len,
                classes: c,
            };
            out.extend(self.decode_rows(rows, opts));
        }
        Ok(out)
    }

    fn decode_rows(&self, rows: LogProbs, opts: &DecodeOptions) -> Vec<Emission> {
        let blank = self.tokenizer.blank_id();
        if opts.beam > 1 {
            decode::prefix_beam(rows, blank, opts.beam, &self.pieces, opts.lm.as_deref())
        } else {
            decode::greedy(rows, blank)
        }
    }

    /// Log-probabilities of one utterance (data, frames, classes), or None if it is longer than a chunk or the
    /// model is an RNN-T model.
    pub fn utterance_log_probs(
        &self,
        audio: &[f32],
        opts: &DecodeOptions,
    ) -> Result<Option<(Vec<f32>, usize, usize)>> {
        if self.is_transducer()
            || audio.len() as f64 > opts.chunk_seconds * self.sample_rate() as f64
        {
            return Ok(None);
        }
        let (lp, lengths) = self.log_probs(&[audio])?;
        let (_, _, c) = lp.dims3()?;
        let mut data = lp.flatten_all()?.to_vec1::<f32>()?;
        data.truncate(lengths[0] * c);
        Ok(Some((data, lengths[0], c)))
    }

    /// Decodes one utterance's log-probabilities (from `utterance_log_probs`) into a transcript.
    pub fn decode_log_probs(&self, lp: LogProbs, opts: &DecodeOptions) -> Result<Transcript> {
        let e = self.decode_rows(lp, opts);
        Ok(decode::transcript(
            &self.tokenizer,
            &e,
            self.frame_seconds(),
            0.0,
        )?)
    }

    /// Transcribes audio at the model's sample rate; long audio goes in overlapping chunks whose seams are
    /// placed in pauses (runs of blank frames), so that no word is cut, doubled or lost.
    pub fn transcribe(&self, audio: &[f32], opts: &DecodeOptions) -> Result<Transcript> {
        self.transcribe_with(audio.len(), opts, |s, e| Ok(audio[s..e].to_vec()))
    }

    /// Transcribes a WAV file of any format and rate. A file longer than the chunk is read chunk by chunk, so
    /// memory stays bounded whatever its length. Returns the transcript and the file's duration in seconds.
    pub fn transcribe_file(&self, path: &Path, opts: &DecodeOptions) -> Result<(Transcript, f64)> {
        let info = mezcla_datagen::audio::wav_info(path)?;
        if info.frames == 0 {
            bail!("{}: the file has no samples", path.display());
        }
        let sr = self.sample_rate();
        let total =
            mezcla_datagen::audio::resampled_len(info.frames as usize, info.sample_rate, sr);
        let t = self.transcribe_with(total, opts, |s, e| {
            // Source frames covering [s, e) at the model's rate, plus a margin for the resampler's filter.
            let ratio = info.sample_rate as f64 / sr as f64;
            let margin = 64usize;
            let src_start = ((s as f64 * ratio).floor() as usize).saturating_sub(margin);
            let src_end = ((e as f64 * ratio).ceil() as usize + margin).min(info.frames as usize);
            let part = mezcla_datagen::audio::read_wav_frames(
                path,
                src_start as u64,
                src_end - src_start,
            )?;
            let res = mezcla_datagen::audio::resample(&part.samples, info.sample_rate, sr)
                .map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))?;
            // Where sample s falls inside the resampled part.
            let skip = ((s as f64 - src_start as f64 / ratio).round().max(0.0)) as usize;
            let mut out: Vec<f32> = res.into_iter().skip(skip).take(e - s).collect();
            out.resize(e - s, 0.0);
            Ok(out)
        })?;
        Ok((t, info.duration()))
    }

    /// Transcribes `total` samples that `read(start, end)` supplies on demand.
    fn transcribe_with(
        &self,
        total: usize,
        opts: &DecodeOptions,
        mut read: impl FnMut(usize, usize) -> Result<Vec<f32>>,
    ) -> Result<Transcript> {
        let sr = self.sample_rate() as f64;
        let chunk = (opts.chunk_seconds * sr) as usize;
        let overlap = (opts.overlap_seconds * sr) as usize;
        if chunk == 0 || overlap * 2 >= chunk {
            bail!("the chunk must be longer than twice the overlap");
        }
        let fs = self.frame_seconds();
        if total <= chunk {
            let audio = read(0, total)?;
            let e = self.emissions(&[&audio], opts)?;
            return Ok(decode::transcript(&self.tokenizer, &e, fs, 0.0)?);
        }
        // Chunks start on frame boundaries, so that chunk frames map exactly onto the file's frames.
        let spf = self.frontend.hop_length() * self.config.encoder.subsampling_factor;
        let step = ((chunk - overlap) / spf).max(1) * spf;
        let mut chunks = Vec::new();
        let mut start = 0usize;
        loop {
            let end = (start + chunk).min(total);
            let audio = read(start, end)?;
            chunks.push(ChunkEmissions {
                offset: start / spf,
                overlap: if end == total {
                    None
                } else {
                    Some(((start + step) / spf, end / spf))
                },
                emissions: self.emissions(&[&audio], opts)?,
            });
            if end == total {
                break;
            }
            start += step;
        }
        Ok(decode::transcript(
            &self.tokenizer,
            &merge_chunks(&chunks),
            fs,
            0.0,
        )?)
    }
}

/// RNN-T models decode greedily: a beam or a word LM is an error.
fn check_transducer_options(opts: &DecodeOptions) -> Result<()> {
    if opts.beam > 1 || opts.lm.is_some() {
        bail!(
            "beam search and word LMs are for CTC models; this RNN-T model decodes greedily (drop --beam and --lm)"
        );
    }
    Ok(())
}

/// The emissions of one chunk of a long file.
#[derive(Debug, Clone)]
pub struct ChunkEmissions {
    /// The chunk's first frame in the file.
    pub offset: usize,
    /// The file frames [start, end) this chunk shares with the next one; `None` for the last chunk.
    pub overlap: Option<(usize, usize)>,
    /// Emissions in the chunk's own frames.
    pub emissions: Vec<Emission>,
}

/// Joins chunk emissions into the file's: each seam is the middle of the longest stretch without emissions in
/// the middle half of an overlap (a pause), and every emission belongs to the one chunk whose span between seams
/// holds its start.
pub fn merge_chunks(chunks: &[ChunkEmissions]) -> Vec<Emission> {
    let mut merged = Vec::new();
    let mut cut = 0usize;
    for c in chunks {
        let next_cut = match c.overlap {
            None => usize::MAX,
            Some((lo, hi)) => {
                let quarter = hi.saturating_sub(lo) / 4;
                seam(&c.emissions, c.offset, lo + quarter, hi - quarter).max(cut)
            }
        };
        for e in &c.emissions {
            let g = Emission {
                id: e.id,
                start: e.start + c.offset,
                end: e.end + c.offset,
            };
            if g.start >= cut && g.start < next_cut {
                merged.push(g);
            }
        }
        cut = next_cut;
    }
    merged
}

/// The middle of the longest gap between emissions inside global frames [lo, hi).
fn seam(emissions: &[Emission], offset: usize, lo: usize, hi: usize) -> usize {
    let mut best = (0usize, (lo + hi) / 2);
    let mut prev_end = lo;
    for e in emissions {
        let (s, en) = (e.start + offset, e.end + offset);
        if en <= lo {
            continue;
        }
        if s >= hi {
            break;
        }
        if s > prev_end && s - prev_end > best.0 {
            best = (s - prev_end, (prev_end + s) / 2);
        }
        prev_end = prev_end.max(en);
    }
    if hi > prev_end && hi - prev_end > best.0 {
        best = (hi - prev_end, (prev_end + hi) / 2);
    }
    best.1
}

/// Rewrites a model folder with its weights stored in `format` (e.g. int8 for a smaller model to ship); the
/// result is loaded once to check it. Returns the config and the size of the new weights file in bytes.
pub fn convert_folder(
    dir: &Path,
    out: &Path,
    format: crate::weights::WeightFormat,
) -> Result<(ModelConfig, u64)> {
    if out.exists() && std::fs::canonicalize(out).ok() == std::fs::canonicalize(dir).ok() {
        bail!("{}: --out must differ from the input folder", out.display());
    }
    let f = FolderFiles::read(dir)?;
    let tensors = crate::weights::load(&f.weights, &f.weights_name, &Device::Cpu)?;
    save_model_as(out, &f.config, &tensors, &f.tokenizer, Some(format))?;
    if f.config.decoding.is_some() {
        let (from, to) = (dir.join(LM_FILE), out.join(LM_FILE));
        let bytes =
            std::fs::read(&from).with_context(|| format!("{}: cannot read", from.display()))?;
        mezcla_datagen::atomic::write_atomic(&to, &bytes)
            .with_context(|| format!("{}: cannot write", to.display()))?;
    }
    AsrModel::load(out)?;
    let size = std::fs::metadata(out.join(WEIGHTS_FILE))?.len();
    Ok((f.config, size))
}

/// The config and weights (f32, by name) of a model folder.
pub fn folder_tensors(
    dir: &Path,
) -> Result<(ModelConfig, std::collections::HashMap<String, Tensor>)> {
    let f = FolderFiles::read(dir)?;
    let tensors = crate::weights::load(&f.weights, &f.weights_name, &Device::Cpu)?;
    Ok((f.config, tensors))
}

/// The parts of a model folder as read from disk, before the model is built.
struct FolderFiles {
    config: ModelConfig,
    tokenizer: ConcatTokenizer,
    weights: Vec<u8>,
    /// Path of the weights file, for errors.
    weights_name: String,
}

impl FolderFiles {
    fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{}: not a model folder", dir.display());
        }
        let config = ModelConfig::read(&dir.join(CONFIG_FILE))?;
        let tok_dir = dir.join(TOKENIZER_DIR);
        let tokenizer = ConcatTokenizer::load(&tok_dir)
            .with_context(|| format!("{}: cannot load the tokenizer", tok_dir.display()))?;
        let path = dir.join(WEIGHTS_FILE);
        let weights = std::fs::read(&path)
            .with_context(|| format!("{}: cannot read the weights", path.display()))?;
        Ok(Self {
            config,
            tokenizer,
            weights,
            weights_name: path.display().to_string(),
        })
    }
}

/// Writes a model folder: config, weights (as given) and tokenizer, each file atomically.
pub fn save_model(
    dir: &Path,
    config: &ModelConfig,
    tensors: &std::collections::HashMap<String, Tensor>,
    tokenizer: &ConcatTokenizer,
) -> Result<()> {
    save_model_as(dir, config, tensors, tokenizer, None)
}

/// [`save_model`] with the weights stored in `format` (`None`: each tensor's own dtype).
pub fn save_model_as(
    dir: &Path,
    config: &ModelConfig,
    tensors: &std::collections::HashMap<String, Tensor>,
    tokenizer: &ConcatTokenizer,
    format: Option<crate::weights::WeightFormat>,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let weights = dir.join(WEIGHTS_FILE);
    let tmp = dir.join(format!(".{WEIGHTS_FILE}.tmp"));
    match format {
        None => candle_core::safetensors::save(tensors, &tmp)
            .with_context(|| format!("{}: cannot write", tmp.display()))?,
        Some(f) => std::fs::write(&tmp, crate::weights::serialize(tensors, f)?)
            .with_context(|| format!("{}: cannot write", tmp.display()))?,
    }
    std::fs::rename(&tmp, &weights)
        .with_context(|| format!("{}: cannot write", weights.display()))?;
    tokenizer
        .save(dir.join(TOKENIZER_DIR))
        .with_context(|| format!("{}: cannot write the tokenizer", dir.display()))?;
    let text = serde_json::to_string_pretty(config)? + "\n";
    mezcla_datagen::atomic::write_atomic(&dir.join(CONFIG_FILE), text.as_bytes())
        .with_context(|| format!("{}: cannot write the config", dir.display()))?;
    Ok(())
}

/// Gives a model folder its own word LM: writes it as `lm.arpa.gz` and records the decoding in `config.json`.
pub fn attach_lm(dir: &Path, lm: &crate::lm::NgramLm, decoding: DecodingConfig) -> Result<()> {
    let mut config = ModelConfig::read(&dir.join(CONFIG_FILE))?;
    if decoding.beam < 2 {
        bail!("the LM needs a beam search: give a beam of 2 or more");
    }
    if config.transducer.is_some() {
        bail!(
            "{}: a word LM is for CTC models; this one has an RNN-T head",
            dir.display()
        );
    }
    lm.save_arpa(&dir.join(LM_FILE))?;
    config.decoding = Some(decoding);
    let text = serde_json::to_string_pretty(&config)? + "\n";
    mezcla_datagen::atomic::write_atomic(&dir.join(CONFIG_FILE), text.as_bytes())
        .with_context(|| format!("{}: cannot write the config", dir.display()))?;
    AsrModel::load(dir).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a model that only hears local context would emit for a chunk: the file's emissions whose frames
    /// lie inside it, in chunk frames.
    fn chunk_of(file: &[Emission], start: usize, end: usize) -> Vec<Emission> {
        file.iter()
            .filter(|e| e.start >= start && e.end <= end)
            .map(|e| Emission {
                id: e.id,
                start: e.start - start,
                end: e.end - start,
            })
            .collect()
    }

    #[test]
    fn merged_chunks_give_the_file_emissions_once_each() {
        // Words of 3 to 12 frames with pauses of 2 to 9 frames, over about 3000 frames.
        let mut file = Vec::new();
        let mut t = 0usize;
        let mut k = 0u32;
        while t < 3000 {
            let len = 3 + (k as usize * 7) % 10;
            for j in 0..len {
                file.push(Emission {
                    id: k % 50,
                    start: t + j,
                    end: t + j + 1,
                });
            }
            t += len + 2 + (k as usize * 5) % 8;
            k += 1;
        }
        for (chunk, overlap) in [(250usize, 60usize), (400, 100), (333, 77)] {
            let step = chunk - overlap;
            let mut chunks = Vec::new();
            let mut start = 0;
            loop {
                let end = (start + chunk).min(t);
                chunks.push(ChunkEmissions {
                    offset: start,
                    overlap: (end < t).then_some((start + step, end)),
                    emissions: chunk_of(&file, start, end),
                });
                if end == t {
                    break;
                }
                start += step;
            }
            assert_eq!(
                merge_chunks(&chunks),
                file,
                "chunk {chunk}, overlap {overlap}"
            );
        }
    }

    #[test]
    fn seams_fall_in_the_longest_pause() {
        let e = |s: usize| Emission {
            id: 1,
            start: s,
            end: s + 1,
        };
        // Inside [100, 140): emissions at 105, 110 and 131; the longest gap is 111..131.
        let em = vec![e(90), e(105), e(110), e(131), e(150)];
        assert_eq!(seam(&em, 0, 100, 140), 121);
        // Offsets shift chunk frames into file frames.
        let shifted: Vec<Emission> = em
            .iter()
            .map(|x| Emission {
                id: 1,
                start: x.start - 50,
                end: x.end - 50,
            })
            .collect();
        assert_eq!(seam(&shifted, 50, 100, 140), 121);
    }
}
