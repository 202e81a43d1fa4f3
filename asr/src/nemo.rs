//! NeMo `.nemo` checkpoints (Conformer CTC, RNN-T and hybrid RNN-T/CTC with char, SentencePiece or agg
//! vocabularies): read, load and convert.
//!
//! A `.nemo` file is a tar (old files: tar.gz) holding `model_config.yaml`, `model_weights.ckpt` (a PyTorch zip
//! checkpoint, read with candle's pickle reader) and tokenizer artifacts referenced from the config as
//! `nemo:<name>`. The config is mapped key by key onto mezcla's; a key or value mezcla cannot honour is an error
//! naming it, never silently ignored (keys that only matter for training are accepted).

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use mezcla_models::conformer::{ConformerConfig, ConvNorm, Subsampling};
use mezcla_models::frontend::PreprocessorConfig;
use mezcla_models::transducer::{JointActivation, TransducerConfig};
use mezcla_tokenizer::proto::{int32_value, Fields, Value as PValue};
use mezcla_tokenizer::{ConcatTokenizer, SentencePieceModel, SPACE_SYMBOL};
use serde_yaml::{Mapping, Value};

use crate::model::{save_model_as, AsrModel, ModelConfig};

/// Name of the config member of a `.nemo` archive.
pub const CONFIG_MEMBER: &str = "model_config.yaml";
/// Name of the weights member of a `.nemo` archive.
pub const WEIGHTS_MEMBER: &str = "model_weights.ckpt";
/// A converted model folder keeps the original NeMo config under this name, for reference.
pub const NEMO_CONFIG_COPY: &str = "nemo_model_config.yaml";
/// Language name given to a monolingual NeMo tokenizer when none is asked for (NeMo records none).
pub const MONOLINGUAL_LANG: &str = "default";

/// How to read a `.nemo` file.
#[derive(Debug, Clone, Default)]
pub struct NemoOptions {
    /// Force NeMo's pre-2025 front-end on (`Some(true)`) or off; `None`: decided by `nemo_version`
    /// (older than 2.5.0, the first release with NVIDIA/NeMo 0fd4de534b, means the old front-end).
    pub legacy_frontend: Option<bool>,
    /// Run a hybrid RNN-T/CTC model (`EncDecHybridRNNTCTC[BPE]Model`) with its CTC head (`aux_ctc`), as NeMo
    /// does after `change_decoding_strategy(decoder_type="ctc")`; without it such models run their RNN-T
    /// head, as NeMo does by default.
    pub ctc_head: bool,
    /// Language of a monolingual (char or single SentencePiece) vocabulary; default `default`. An error for
    /// aggregate tokenizers, whose languages are in the config.
    pub lang: Option<String>,
}

/// The vocabulary of a NeMo model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VocabularyKind {
    /// `EncDecCTCModel` / `EncDecRNNTModel` with character labels.
    Char,
    /// A `…BPE` model with one SentencePiece model.
    SentencePiece,
    /// A `…BPE` model with an aggregate tokenizer; the languages in id order.
    Aggregate(Vec<String>),
}

/// Which head of a NeMo model mezcla runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadKind {
    /// `decoder` (ConvASRDecoder) of a CTC model.
    Ctc,
    /// `aux_ctc.decoder` of a hybrid model, stored as `ctc_decoder.…`.
    HybridCtc,
    /// `decoder` (RNNTDecoder) and `joint` (RNNTJoint) of an RNN-T or hybrid model.
    Transducer,
}

/// A `.nemo` checkpoint mapped onto mezcla: config, weights (NeMo names, f32; a hybrid's CTC head renamed
/// `decoder.…`, or its RNN-T head as it is) and tokenizer.
pub struct NemoCheckpoint {
    pub config: ModelConfig,
    pub tensors: HashMap<String, Tensor>,
    pub tokenizer: ConcatTokenizer,
    /// The model class (`target`), e.g. `nemo.collections.asr.models.ctc_bpe_models.EncDecCTCModelBPE`.
    pub target: String,
    /// `nemo_version` of the config, when present.
    pub nemo_version: Option<String>,
    pub vocabulary: VocabularyKind,
    /// The archive's `model_config.yaml` as stored.
    pub config_yaml: String,
}

/// Whether `--model PATH` names a `.nemo` archive rather than a model folder: a `.nemo` extension, or a file.
pub fn is_nemo_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("nemo"))
        || path.is_file()
}

/// Loads a model for inference: a `.nemo` archive or a mezcla model folder; `legacy_frontend` overrides the
/// front-end behaviour recorded in either.
pub fn load_model(path: &Path, legacy_frontend: Option<bool>, ctc_head: bool) -> Result<AsrModel> {
    if is_nemo_path(path) {
        return load_nemo(
            path,
            &NemoOptions {
                legacy_frontend,
                ctc_head,
                lang: None,
            },
        );
    }
    let mut model = AsrModel::load(path)?;
    if let Some(legacy) = legacy_frontend {
        if legacy != model.config.legacy_frontend {
            model.config.legacy_frontend = legacy;
            let options = mezcla_models::frontend::FrontendOptions {
                legacy,
                ..Default::default()
            };
            model.frontend = mezcla_models::frontend::MelFrontend::with_options(
                &model.config.preprocessor,
                options,
            )
            .with_context(|| format!("{}: cannot build the front-end", path.display()))?;
        }
    }
    Ok(model)
}

/// The config and weights (f32, by name) of a `.nemo` archive or a mezcla model folder, e.g. to start training
/// from them.
pub fn model_tensors(path: &Path) -> Result<(ModelConfig, HashMap<String, Tensor>)> {
    if is_nemo_path(path) {
        let ckpt = read_nemo(path, &NemoOptions::default())?;
        return Ok((ckpt.config, ckpt.tensors));
    }
    crate::model::folder_tensors(path)
}

/// Loads a `.nemo` file as a ready model (CPU, f32).
pub fn load_nemo(path: &Path, opts: &NemoOptions) -> Result<AsrModel> {
    let ckpt = read_nemo(path, opts)?;
    let device = Device::Cpu;
    let vb = VarBuilder::from_tensors(ckpt.tensors, DType::F32, &device);
    AsrModel::build(ckpt.config, ckpt.tokenizer, vb.clone(), &device)
        .and_then(|m| m.with_cpu_inference(&vb))
        .map_err(|e| {
            anyhow!(
                "{}: {WEIGHTS_MEMBER} does not fit {CONFIG_MEMBER}: {}",
                path.display(),
                one_line(&e)
            )
        })
}

/// Converts a `.nemo` file into a mezcla model folder (config.json, model.safetensors, tokenizer/, and the
/// original config as `nemo_model_config.yaml`). The model is built once to check that the weights fit.
pub fn convert(
    path: &Path,
    out: &Path,
    opts: &NemoOptions,
    weights: Option<crate::weights::WeightFormat>,
) -> Result<NemoCheckpoint> {
    let ckpt = read_nemo(path, opts)?;
    let device = Device::Cpu;
    let vb = VarBuilder::from_tensors(ckpt.tensors.clone(), DType::F32, &device);
    AsrModel::build(ckpt.config.clone(), ckpt.tokenizer.clone(), vb, &device).map_err(|e| {
        anyhow!(
            "{}: {WEIGHTS_MEMBER} does not fit {CONFIG_MEMBER}: {}",
            path.display(),
            one_line(&e)
        )
    })?;
    save_model_as(out, &ckpt.config, &ckpt.tensors, &ckpt.tokenizer, weights)?;
    let copy = out.join(NEMO_CONFIG_COPY);
    mezcla_datagen::atomic::write_atomic(&copy, ckpt.config_yaml.as_bytes())
        .with_context(|| format!("{}: cannot write", copy.display()))?;
    Ok(ckpt)
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    let text = format!("{e:#}");
    text.lines().next().unwrap_or("").trim_end().to_string()
}

/// The members of a `.nemo` archive: small files in memory, the weights in a temporary file.
struct Archive {
    members: HashMap<String, Vec<u8>>,
    weights: Option<tempfile::NamedTempFile>,
    /// Weights of model-parallel checkpoints (`mp_rank_XX/model_weights.ckpt`), which mezcla does not read.
    sharded: Option<String>,
}

fn read_archive(path: &Path) -> Result<Archive> {
    let shown = path.display();
    let mut file = std::fs::File::open(path).with_context(|| format!("{shown}: cannot open"))?;
    let mut magic = [0u8; 2];
    let n = file
        .read(&mut magic)
        .with_context(|| format!("{shown}: cannot read"))?;
    let file = std::fs::File::open(path).with_context(|| format!("{shown}: cannot open"))?;
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut out = Archive {
        members: HashMap::new(),
        weights: None,
        sharded: None,
    };
    let mut seen = 0usize;
    // Before the first member, any failure means the file is no tar at all; after it, a damaged archive.
    let not_tar = |seen: usize, e: std::io::Error| {
        if seen == 0 {
            anyhow!("{shown}: not a .nemo file (not a tar or tar.gz archive)")
        } else {
            let first = e.to_string();
            let first: String = first
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(80)
                .collect();
            anyhow!("{shown}: damaged .nemo archive after {seen} members: {first}")
        }
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| not_tar(0, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| not_tar(seen, e))?;
        seen += 1;
        let not_tar = |e| not_tar(seen, e);
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw = entry
            .path()
            .map_err(not_tar)?
            .to_string_lossy()
            .into_owned();
        let mut name = raw.as_str();
        while let Some(rest) = name.strip_prefix("./") {
            name = rest;
        }
        let name = name.to_string();
        if name == WEIGHTS_MEMBER {
            let mut tmp = tempfile::NamedTempFile::new()
                .with_context(|| format!("{shown}: cannot create a temporary file"))?;
            std::io::copy(&mut entry, &mut tmp).map_err(not_tar)?;
            out.weights = Some(tmp);
        } else if name.ends_with(&format!("/{WEIGHTS_MEMBER}")) {
            out.sharded = Some(name);
        } else {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(not_tar)?;
            out.members.insert(name, data);
        }
    }
    if seen == 0 {
        bail!("{shown}: not a .nemo file (an empty or non-tar file)");
    }
    Ok(out)
}

/// Reads and maps a `.nemo` file.
pub fn read_nemo(path: &Path, opts: &NemoOptions) -> Result<NemoCheckpoint> {
    let shown = path.display().to_string();
    let archive = read_archive(path)?;
    let Some(yaml) = archive.members.get(CONFIG_MEMBER) else {
        bail!("{shown}: not a .nemo checkpoint: the archive has no {CONFIG_MEMBER}");
    };
    let config_yaml = String::from_utf8(yaml.clone())
        .map_err(|_| anyhow!("{shown}: {CONFIG_MEMBER} is not UTF-8"))?;
    let root: Value = serde_yaml::from_str(&config_yaml)
        .map_err(|e| anyhow!("{shown}: {CONFIG_MEMBER}: {}", one_line(&e)))?;
    let cerr = |msg: String| anyhow!("{shown}: {CONFIG_MEMBER}: {msg}");
    if !root.is_mapping() {
        return Err(cerr("not a mapping".into()));
    }
    // A config saved from a full experiment config keeps the model under `model:`.
    let root = match root.get("model") {
        Some(m) if m.is_mapping() && root.get("encoder").is_none() => m.clone(),
        _ => root,
    };
    // OmegaConf interpolations (`${model_defaults.pred_hidden}`) are resolved against the config.
    let root = resolve_interpolations(&root, &root, 0);

    let (target, head) = check_target(&root, opts.ctc_head).map_err(cerr)?;
    // A hybrid model's CTC head is `aux_ctc.decoder` in the config and `ctc_decoder.…` in the weights; an
    // RNN-T head's vocabulary is in `joint`.
    let (decoder_key, decoder) = match head {
        HeadKind::Ctc => ("decoder", section(&root, "decoder").map_err(cerr)?),
        HeadKind::HybridCtc => (
            "aux_ctc.decoder",
            section(section(&root, "aux_ctc").map_err(cerr)?, "decoder")
                .map_err(|e| cerr(format!("aux_ctc.{e}")))?,
        ),
        HeadKind::Transducer => ("joint", section(&root, "joint").map_err(cerr)?),
    };
    let nemo_version = root.get("nemo_version").map(value_text);
    let legacy = match opts.legacy_frontend {
        Some(l) => l,
        None => legacy_from_version(nemo_version.as_deref()).map_err(cerr)?,
    };

    let pre = section(&root, "preprocessor").map_err(cerr)?;
    let mut pre = pre.clone();
    if let Some(m) = pre.as_mapping_mut() {
        m.remove("rng"); // NeMo 1.10+: the generator of training-time randomness only
    }
    let preprocessor: PreprocessorConfig = serde_yaml::from_value(pre).map_err(|e| {
        // serde lists every accepted key after the offending one; the key is what matters.
        let msg = one_line(&e);
        let short = msg.split(", expected one of").next().unwrap_or(&msg);
        cerr(format!("preprocessor: {short}"))
    })?;
    let options = mezcla_models::frontend::FrontendOptions {
        legacy,
        ..Default::default()
    };
    let frontend = mezcla_models::frontend::MelFrontend::with_options(&preprocessor, options)
        .map_err(|e| cerr(one_line(&e)))?; // "preprocessor config `key`: ..."
    let encoder = map_encoder(section(&root, "encoder").map_err(cerr)?).map_err(cerr)?;
    if frontend.n_features() != encoder.feat_in {
        return Err(cerr(format!(
            "encoder.feat_in: {} differs from the {} features of the preprocessor",
            encoder.feat_in,
            frontend.n_features()
        )));
    }
    encoder.validate().map_err(cerr)?;
    if let Some(sr) = root.get("sample_rate").and_then(Value::as_u64) {
        if sr != u64::from(preprocessor.sample_rate) {
            return Err(cerr(format!(
                "sample_rate: {sr} differs from preprocessor.sample_rate {}",
                preprocessor.sample_rate
            )));
        }
    }

    let (tokenizer, vocabulary) = build_tokenizer(&root, decoder, decoder_key, &archive, &shown)?;
    let tokenizer = match (&opts.lang, &vocabulary) {
        (None, _) => tokenizer,
        (Some(_), VocabularyKind::Aggregate(langs)) => bail!(
            "{shown}: --lang applies to monolingual models; this one's languages are {} (tokenizer.langs)",
            langs.join(", ")
        ),
        (Some(lang), _) => {
            let model = tokenizer.models()[0].clone();
            ConcatTokenizer::new(vec![(lang.clone(), model)])
                .map_err(|e| anyhow!("--lang {lang:?}: {}", one_line(&e)))?
        }
    };
    let transducer = match head {
        HeadKind::Transducer => Some(
            map_transducer(&root, encoder.output_dim(), &tokenizer, &vocabulary).map_err(cerr)?,
        ),
        _ => {
            check_decoder(
                decoder,
                decoder_key,
                encoder.output_dim(),
                &tokenizer,
                &vocabulary,
            )
            .map_err(cerr)?;
            None
        }
    };

    if let Some(s) = &archive.sharded {
        bail!("{shown}: {s}: model-parallel checkpoints are not supported");
    }
    let Some(weights) = &archive.weights else {
        bail!("{shown}: the archive has no {WEIGHTS_MEMBER}");
    };
    let tensors = read_weights(weights.path(), head)
        .map_err(|e| anyhow!("{shown}: {WEIGHTS_MEMBER}: {}", one_line(&e)))?;

    let mut config = ModelConfig::from_parts(preprocessor, legacy, encoder, tokenizer.vocab_size());
    config.transducer = transducer;
    Ok(NemoCheckpoint {
        config,
        tensors,
        tokenizer,
        target,
        nemo_version,
        vocabulary,
        config_yaml,
    })
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

fn section<'a>(root: &'a Value, key: &str) -> std::result::Result<&'a Value, String> {
    match root.get(key) {
        Some(v) if v.is_mapping() => Ok(v),
        Some(_) => Err(format!("{key}: not a mapping")),
        None => Err(format!("{key}: missing")),
    }
}

/// Checks that `section._target_` (the value `v`) names the class `want`.
fn expect_class(section: &str, v: &Value, want: &str) -> std::result::Result<(), String> {
    let t = value_text(v);
    if class_name(&t) == want {
        Ok(())
    } else {
        Err(format!(
            "{section}._target_: {t} is not supported (only {want})"
        ))
    }
}

/// The last component of a dotted class path.
fn class_name(target: &str) -> &str {
    target.rsplit('.').next().unwrap_or(target)
}

fn check_target(root: &Value, ctc_head: bool) -> std::result::Result<(String, HeadKind), String> {
    let bpe = root.get("tokenizer").is_some_and(|t| !t.is_null());
    let target = match root.get("target") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(format!("target: not a class path: {}", value_text(other))),
        // Very old configs have no `target`; infer it from the modules.
        None if root.get("aux_ctc").is_some() && bpe => "EncDecHybridRNNTCTCBPEModel".into(),
        None if root.get("aux_ctc").is_some() => "EncDecHybridRNNTCTCModel".into(),
        None if root.get("joint").is_some() && bpe => "EncDecRNNTBPEModel".into(),
        None if root.get("joint").is_some() => "EncDecRNNTModel".into(),
        None if bpe => "EncDecCTCModelBPE".into(),
        None => "EncDecCTCModel".into(),
    };
    let head = match class_name(&target) {
        "EncDecCTCModel" | "EncDecCTCModelBPE" => HeadKind::Ctc,
        "EncDecHybridRNNTCTCModel" | "EncDecHybridRNNTCTCBPEModel" if ctc_head => {
            HeadKind::HybridCtc
        }
        "EncDecHybridRNNTCTCModel" | "EncDecHybridRNNTCTCBPEModel" => HeadKind::Transducer,
        "EncDecRNNTModel" | "EncDecRNNTBPEModel" if ctc_head => {
            return Err(format!(
                "target: {target} has no CTC head; --ctc-head is for hybrid RNN-T/CTC models"
            ))
        }
        "EncDecRNNTModel" | "EncDecRNNTBPEModel" => HeadKind::Transducer,
        _ => {
            return Err(format!(
                "target: {target} is not supported (only EncDecCTCModel[BPE], EncDecRNNTModel / \
                 EncDecRNNTBPEModel and EncDecHybridRNNTCTC[BPE]Model)"
            ))
        }
    };
    Ok((target, head))
}

/// Replaces every string that is exactly an OmegaConf interpolation `${a.b.c}` by the value at that path of
/// `root` (itself resolved), as OmegaConf does when the config is read. Other strings, and interpolations
/// that do not resolve this way (resolvers, relative paths, missing keys, cycles), stay as they are: they
/// matter only if mezcla reads their key, whose check then names it.
fn resolve_interpolations(value: &Value, root: &Value, depth: usize) -> Value {
    match value {
        Value::String(s) if depth <= 16 => {
            let Some(path) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) else {
                return value.clone();
            };
            if path.is_empty() || path.starts_with('.') || path.contains(['$', '{', '}', ':']) {
                return value.clone();
            }
            // Experiment configs interpolate from their top (`${model.encoder.d_model}`); the archive's
            // config is that `model` section.
            let inner = path
                .strip_prefix("model.")
                .filter(|_| root.get("model").is_none());
            let mut node = Some(root);
            for part in inner.unwrap_or(path).split('.') {
                node = node.and_then(|n| n.get(part));
            }
            match node {
                Some(n) => resolve_interpolations(n, root, depth + 1),
                None => value.clone(),
            }
        }
        Value::Mapping(m) => Value::Mapping(
            m.iter()
                .map(|(k, v)| (k.clone(), resolve_interpolations(v, root, depth)))
                .collect(),
        ),
        Value::Sequence(items) => Value::Sequence(
            items
                .iter()
                .map(|v| resolve_interpolations(v, root, depth))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Maps an RNN-T head (`decoder`: RNNTDecoder, `joint`: RNNTJoint, `decoding`: greedy settings) onto mezcla's;
/// `enc_dim` is the encoder output width.
fn map_transducer(
    root: &Value,
    enc_dim: usize,
    tok: &ConcatTokenizer,
    kind: &VocabularyKind,
) -> std::result::Result<TransducerConfig, String> {
    let vocab = tok.vocab_size();
    let count = |key: &str, v: &Value| -> std::result::Result<usize, String> {
        v.as_u64()
            .filter(|&n| n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| format!("{key}: {} is not a positive integer", value_text(v)))
    };
    let must_equal = |key: &str, v: &Value, want: usize, what: &str| {
        let n = count(key, v)?;
        if n == want {
            Ok(())
        } else {
            Err(format!("{key}: {n} differs from {what} {want}"))
        }
    };

    let dec = section(root, "decoder")?;
    let (mut pred_hidden, mut layers, mut rnn_hidden) = (None, None, None);
    for (k, v) in dec.as_mapping().expect("checked to be a mapping") {
        let key = value_text(k);
        match key.as_str() {
            "_target_" => expect_class("decoder", v, "RNNTDecoder")?,
            "vocab_size" => must_equal("decoder.vocab_size", v, vocab, "the vocabulary size")?,
            "normalization_mode" => {
                if !v.is_null() {
                    return Err(format!(
                        "decoder.normalization_mode: {} is not supported (only null)",
                        value_text(v)
                    ));
                }
            }
            // Training only: random initial states; blank_as_pad: whether the blank has an embedding row,
            // read from the weights' shape.
            "random_state_sampling" | "blank_as_pad" => {}
            "prednet" => {
                let Some(map) = v.as_mapping() else {
                    return Err("decoder.prednet: not a mapping".into());
                };
                for (pk, pv) in map {
                    let pkey = value_text(pk);
                    let full = format!("decoder.prednet.{pkey}");
                    match pkey.as_str() {
                        "pred_hidden" => pred_hidden = Some(count(&full, pv)?),
                        "pred_rnn_layers" => layers = Some(count(&full, pv)?),
                        "rnn_hidden_size" => rnn_hidden = pv.as_i64().filter(|&n| n > 0),
                        // Initialisation and training-time dropout only.
                        "forget_gate_bias"
                        | "t_max"
                        | "weights_init_scale"
                        | "hidden_hidden_bias_scale"
                        | "dropout" => {}
                        _ => return Err(format!("{full}: not supported by mezcla")),
                    }
                }
            }
            _ => return Err(format!("decoder.{key}: not supported by mezcla")),
        }
    }
    let pred_hidden = pred_hidden.ok_or("decoder.prednet.pred_hidden: missing")?;
    let pred_rnn_layers = layers.ok_or("decoder.prednet.pred_rnn_layers: missing")?;
    if let Some(n) = rnn_hidden.filter(|&n| n as usize != pred_hidden) {
        return Err(format!(
            "decoder.prednet.rnn_hidden_size: {n} is not supported (only pred_hidden, {pred_hidden})"
        ));
    }

    let joint = section(root, "joint")?;
    let (mut joint_hidden, mut activation) = (None, None);
    for (k, v) in joint.as_mapping().expect("checked to be a mapping") {
        let key = value_text(k);
        match key.as_str() {
            "_target_" => expect_class("joint", v, "RNNTJoint")?,
            "num_classes" => {
                if v.as_i64().is_some_and(|n| n > 0) {
                    must_equal("joint.num_classes", v, vocab, "the vocabulary size")?;
                }
            }
            "num_extra_outputs" => {
                if !is_null_or(v, |v| v.as_i64() == Some(0)) {
                    return Err(format!(
                        "joint.num_extra_outputs: {} is not supported (TDT and multi-blank models are not)",
                        value_text(v)
                    ));
                }
            }
            "vocabulary" => {
                if let (Some(list), VocabularyKind::Aggregate(_) | VocabularyKind::SentencePiece) =
                    (v.as_sequence(), kind)
                {
                    if !list.is_empty() && list.len() != vocab {
                        return Err(format!(
                            "joint.vocabulary: {} entries but the tokenizer has {vocab}",
                            list.len()
                        ));
                    }
                }
            }
            // The softmax does not change the greedy choice (mezcla's log-probs always have it); the rest
            // is memory and training machinery.
            "log_softmax"
            | "preserve_memory"
            | "fuse_loss_wer"
            | "fused_batch_size"
            | "experimental_fuse_loss_wer"
            | "masking_prob" => {}
            "jointnet" => {
                let Some(map) = v.as_mapping() else {
                    return Err("joint.jointnet: not a mapping".into());
                };
                for (jk, jv) in map {
                    let jkey = value_text(jk);
                    let full = format!("joint.jointnet.{jkey}");
                    match jkey.as_str() {
                        "joint_hidden" => joint_hidden = Some(count(&full, jv)?),
                        "encoder_hidden" => {
                            must_equal(&full, jv, enc_dim, "the encoder's output size")?
                        }
                        "pred_hidden" => {
                            must_equal(&full, jv, pred_hidden, "decoder.prednet.pred_hidden")?
                        }
                        "activation" => {
                            activation = Some(match jv.as_str() {
                                Some("relu") => JointActivation::Relu,
                                Some("tanh") => JointActivation::Tanh,
                                Some("sigmoid") => JointActivation::Sigmoid,
                                _ => {
                                    return Err(format!(
                                        "{full}: {} is not supported (relu, tanh or sigmoid)",
                                        value_text(jv)
                                    ))
                                }
                            })
                        }
                        "dropout" => {}
                        _ => return Err(format!("{full}: not supported by mezcla")),
                    }
                }
            }
            _ => return Err(format!("joint.{key}: not supported by mezcla")),
        }
    }
    let joint_hidden = joint_hidden.ok_or("joint.jointnet.joint_hidden: missing")?;
    let activation = activation.ok_or("joint.jointnet.activation: missing")?;

    if let Some(loss) = root.get("loss").and_then(|l| l.get("loss_name")) {
        let name = value_text(loss).to_ascii_lowercase();
        if name.contains("tdt") || name.contains("multiblank") {
            return Err(format!(
                "loss.loss_name: {} is not supported (TDT and multi-blank models are not)",
                value_text(loss)
            ));
        }
    }
    // The cap on tokens per frame is what a restored NeMo model uses: the first truthy of
    // `decoding.greedy.max_symbols` and `decoding.greedy.max_symbols_per_step`, none (no limit) if neither is.
    // Without a `decoding.greedy` section NeMo cannot build the model; mezcla then takes RNNTDecodingConfig's
    // default of 10.
    let decoding = root.get("decoding").filter(|d| !d.is_null());
    let mut max_symbols = Some(10);
    if let Some(d) = decoding {
        if let Some(strategy) = d.get("strategy").filter(|v| !v.is_null()) {
            if !matches!(strategy.as_str(), Some("greedy" | "greedy_batch")) {
                return Err(format!(
                    "decoding.strategy: {} is not supported (mezcla decodes RNN-T models greedily: \
                     greedy or greedy_batch)",
                    value_text(strategy)
                ));
            }
        }
        if let Some(mt) = d.get("model_type").filter(|v| !v.is_null()) {
            if mt.as_str() != Some("rnnt") {
                return Err(format!(
                    "decoding.model_type: {} is not supported (only rnnt)",
                    value_text(mt)
                ));
            }
        }
        if let Some(g) = d.get("greedy").filter(|g| !g.is_null()) {
            let positive = |key: &str| -> std::result::Result<Option<Option<usize>>, String> {
                match g.get(key) {
                    None => Ok(None),
                    Some(v) if v.is_null() => Ok(Some(None)),
                    Some(v) => match v.as_i64() {
                        // NeMo takes the first truthy of the two keys: 0 counts as unset.
                        Some(0) => Ok(Some(None)),
                        Some(n) if n > 0 => Ok(Some(Some(n as usize))),
                        _ => Err(format!(
                            "decoding.greedy.{key}: {} is not a count",
                            value_text(v)
                        )),
                    },
                }
            };
            let per_step = positive("max_symbols_per_step")?.flatten();
            max_symbols = match positive("max_symbols")? {
                Some(Some(n)) => Some(n),
                _ => per_step,
            };
        }
    }
    Ok(TransducerConfig {
        pred_hidden,
        pred_rnn_layers,
        joint_hidden,
        activation,
        max_symbols,
    })
}

/// Whether a checkpoint written by this NeMo version used the pre-2025-07 front-end (+1 frame, reflect
/// padding): versions before 2.5.0.
pub fn legacy_from_version(version: Option<&str>) -> std::result::Result<bool, String> {
    let Some(v) = version else {
        return Err(
            "nemo_version: missing, so the front-end behaviour is unknown; pass --legacy-frontend \
             (NeMo before 2.5) or --no-legacy-frontend"
                .into(),
        );
    };
    let mut parts = v.trim().trim_start_matches('v').split('.');
    let num = |p: Option<&str>| -> Option<u64> {
        let digits: String = p?.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    match (num(parts.next()), num(parts.next())) {
        (Some(major), Some(minor)) => Ok((major, minor) < (2, 5)),
        _ => Err(format!(
            "nemo_version: cannot parse {v:?}; pass --legacy-frontend (NeMo before 2.5) or \
             --no-legacy-frontend"
        )),
    }
}

/// Keys of NeMo's ConformerEncoder that mezcla's encoder takes as they are.
const ENCODER_KEYS: &[&str] = &[
    "feat_in",
    "n_layers",
    "d_model",
    "feat_out",
    "subsampling",
    "subsampling_factor",
    "subsampling_conv_channels",
    "ff_expansion_factor",
    "n_heads",
    "xscaling",
    "untie_biases",
    "pos_emb_max_len",
    "conv_kernel_size",
    "conv_norm_type",
    "dropout",
    "dropout_pre_encoder",
    "dropout_emb",
    "dropout_att",
];

/// Keys that do not change inference (memory chunking, training-only regularisation, kernels).
const ENCODER_IGNORED: &[&str] = &[
    "subsampling_conv_chunking_factor",
    "stochastic_depth_drop_prob",
    "stochastic_depth_mode",
    "stochastic_depth_start_layer",
    "use_pytorch_sdpa",
    "use_pytorch_sdpa_backends",
    "sync_max_audio_length",
    "global_tokens_spacing",
    "reduction_factor",
    "att_context_probs",
];

fn is_null_or(v: &Value, ok: impl Fn(&Value) -> bool) -> bool {
    v.is_null() || ok(v)
}

fn map_encoder(enc: &Value) -> std::result::Result<ConformerConfig, String> {
    let map = enc.as_mapping().expect("checked to be a mapping");
    match map.get("_target_") {
        Some(Value::String(t)) if class_name(t) == "ConformerEncoder" => {}
        Some(t) => {
            return Err(format!(
                "encoder._target_: {} is not supported (only ConformerEncoder)",
                value_text(t)
            ))
        }
        None => return Err("encoder._target_: missing".into()),
    }
    let mut kept = Mapping::new();
    let kernel = map
        .get("conv_kernel_size")
        .and_then(Value::as_i64)
        .unwrap_or(31);
    for (k, v) in map {
        let key = k
            .as_str()
            .ok_or_else(|| format!("encoder: non-string key {}", value_text(k)))?;
        let bad = || format!("encoder.{key}: {} is not supported", value_text(v));
        match key {
            "_target_" => {}
            _ if ENCODER_KEYS.contains(&key) => {
                if v.is_null() {
                    continue;
                }
                check_encoder_value(key, v)?;
                kept.insert(k.clone(), v.clone());
            }
            _ if ENCODER_IGNORED.contains(&key) => {}
            "causal_downsampling" | "global_attn_separate" => {
                if !is_null_or(v, |v| v.as_bool() == Some(false)) {
                    return Err(bad());
                }
            }
            "use_bias" => {
                if !is_null_or(v, |v| v.as_bool() == Some(true)) {
                    return Err(bad());
                }
            }
            "reduction" | "reduction_position" | "att_chunk_context_size" => {
                if !v.is_null() {
                    return Err(bad());
                }
            }
            "global_tokens" => {
                if !is_null_or(v, |v| v.as_i64() == Some(0)) {
                    return Err(bad());
                }
            }
            "self_attention_model" => {
                if !is_null_or(v, |v| v.as_str() == Some("rel_pos")) {
                    return Err(format!(
                        "encoder.self_attention_model: {} is not supported (only rel_pos)",
                        value_text(v)
                    ));
                }
            }
            "att_context_style" | "conv_context_style" => {
                if !is_null_or(v, |v| v.as_str() == Some("regular")) {
                    return Err(format!(
                        "encoder.{key}: {} is not supported (only regular)",
                        value_text(v)
                    ));
                }
            }
            "att_context_size" => {
                let full = |v: &Value| {
                    v.as_sequence().is_some_and(|s| {
                        s.len() == 2 && s.iter().all(|x| x.as_i64().is_some_and(|x| x < 0))
                    })
                };
                if !is_null_or(v, full) {
                    return Err(format!(
                        "encoder.att_context_size: {} is not supported (only full context, [-1, -1])",
                        value_text(v)
                    ));
                }
            }
            "conv_context_size" => {
                let half = (kernel - 1) / 2;
                let symmetric = |v: &Value| {
                    v.as_sequence()
                        .is_some_and(|s| s.len() == 2 && s.iter().all(|x| x.as_i64() == Some(half)))
                };
                if !is_null_or(v, symmetric) {
                    return Err(format!(
                        "encoder.conv_context_size: {} is not supported (only symmetric)",
                        value_text(v)
                    ));
                }
            }
            _ => return Err(format!("encoder.{key}: not supported by mezcla")),
        }
    }
    serde_yaml::from_value(Value::Mapping(kept)).map_err(|e| format!("encoder: {}", one_line(&e)))
}

fn check_encoder_value(key: &str, v: &Value) -> std::result::Result<(), String> {
    let ok = match key {
        "subsampling" => serde_yaml::from_value::<Subsampling>(v.clone()).is_ok(),
        "conv_norm_type" => serde_yaml::from_value::<ConvNorm>(v.clone()).is_ok(),
        "xscaling" | "untie_biases" => v.is_bool(),
        "feat_out" | "subsampling_conv_channels" => v.as_i64().is_some(),
        "dropout" | "dropout_pre_encoder" | "dropout_emb" | "dropout_att" => v.as_f64().is_some(),
        _ => v.as_u64().is_some(),
    };
    if ok {
        Ok(())
    } else {
        let hint = match key {
            "subsampling" => " (only striding and dw_striding)",
            "conv_norm_type" => " (only batch_norm and layer_norm)",
            _ => "",
        };
        Err(format!(
            "encoder.{key}: {} is not supported{hint}",
            value_text(v)
        ))
    }
}

fn check_decoder(
    dec: &Value,
    name: &str,
    feat: usize,
    tok: &ConcatTokenizer,
    kind: &VocabularyKind,
) -> std::result::Result<(), String> {
    let map = dec.as_mapping().expect("checked to be a mapping");
    for (k, v) in map {
        let key = k.as_str().unwrap_or("");
        match key {
            "_target_" => expect_class(name, v, "ConvASRDecoder")?,
            "feat_in" => {
                if !v.is_null() && v.as_u64() != Some(feat as u64) {
                    return Err(format!(
                        "{name}.feat_in: {} differs from the encoder's output size {feat}",
                        value_text(v)
                    ));
                }
            }
            "num_classes" => {
                let n = v.as_i64().unwrap_or(-1);
                if n > 0 && n as usize != tok.vocab_size() {
                    return Err(format!(
                        "{name}.num_classes: {n} differs from the vocabulary size {}",
                        tok.vocab_size()
                    ));
                }
            }
            "vocabulary" => {
                if let (Some(list), VocabularyKind::Aggregate(_) | VocabularyKind::SentencePiece) =
                    (v.as_sequence(), kind)
                {
                    if !list.is_empty() && list.len() != tok.vocab_size() {
                        return Err(format!(
                            "{name}.vocabulary: {} entries but the tokenizer has {}",
                            list.len(),
                            tok.vocab_size()
                        ));
                    }
                }
            }
            "init_mode" => {}
            "add_blank" => {
                if !is_null_or(v, |v| v.as_bool() == Some(true)) {
                    return Err(format!("{name}.add_blank: false is not supported"));
                }
            }
            _ => return Err(format!("{name}.{key}: not supported by mezcla")),
        }
    }
    Ok(())
}

/// The tokenizer of the checkpoint: SentencePiece (`bpe`), aggregate (`agg`) or a char vocabulary.
fn build_tokenizer(
    root: &Value,
    decoder: &Value,
    decoder_key: &str,
    archive: &Archive,
    shown: &str,
) -> Result<(ConcatTokenizer, VocabularyKind)> {
    let cerr = |msg: String| anyhow!("{shown}: {CONFIG_MEMBER}: {msg}");
    let Some(tok) = root.get("tokenizer").filter(|t| !t.is_null()) else {
        let vocab_key = format!("{decoder_key}.vocabulary");
        let labels = decoder
            .get("vocabulary")
            .filter(|v| v.as_sequence().is_some_and(|s| !s.is_empty()))
            .map(|v| (vocab_key.as_str(), v))
            .or_else(|| root.get("labels").map(|v| ("labels", v)))
            .ok_or_else(|| {
                cerr(format!(
                    "no `tokenizer` and no `{vocab_key}` / `labels`: no vocabulary"
                ))
            })?;
        let (key, list) = labels;
        let list = list
            .as_sequence()
            .ok_or_else(|| cerr(format!("{key}: not a list")))?;
        let labels: Vec<String> = list.iter().map(value_text).collect();
        let model = char_vocabulary(&labels).map_err(|e| cerr(format!("{key}: {e}")))?;
        let tok = ConcatTokenizer::new(vec![(MONOLINGUAL_LANG.to_string(), model)])
            .map_err(|e| cerr(format!("{key}: {}", one_line(&e))))?;
        return Ok((tok, VocabularyKind::Char));
    };
    let kind = tok.get("type").map(value_text).unwrap_or_default();
    for key in ["custom_tokenizer", "special_tokens"] {
        if tok.get(key).is_some_and(|v| !v.is_null()) {
            return Err(cerr(format!("tokenizer.{key}: not supported by mezcla")));
        }
    }
    match kind.to_ascii_lowercase().as_str() {
        "bpe" => {
            let model = sentencepiece_artifact(tok, "tokenizer", archive, shown)?;
            let t = ConcatTokenizer::new(vec![(MONOLINGUAL_LANG.to_string(), model)])
                .map_err(|e| cerr(format!("tokenizer: {}", one_line(&e))))?;
            Ok((t, VocabularyKind::SentencePiece))
        }
        "agg" => {
            let langs = tok
                .get("langs")
                .and_then(Value::as_mapping)
                .ok_or_else(|| cerr("tokenizer.langs: missing or not a mapping".into()))?;
            let mut parts = Vec::new();
            for (k, v) in langs {
                let lang = value_text(k);
                let prefix = format!("tokenizer.langs.{lang}");
                let t = v.get("type").map(value_text).unwrap_or_default();
                if !t.eq_ignore_ascii_case("bpe") {
                    return Err(cerr(format!(
                        "{prefix}.type: {t:?} is not supported (only SentencePiece, bpe)"
                    )));
                }
                parts.push((
                    lang.clone(),
                    sentencepiece_artifact(v, &prefix, archive, shown)?,
                ));
            }
            let names = parts.iter().map(|(l, _)| l.clone()).collect();
            let t = ConcatTokenizer::new(parts)
                .map_err(|e| cerr(format!("tokenizer: {}", one_line(&e))))?;
            Ok((t, VocabularyKind::Aggregate(names)))
        }
        other => Err(cerr(format!(
            "tokenizer.type: {other:?} is not supported (only bpe and agg)"
        ))),
    }
}

/// The SentencePiece model a tokenizer section names: `model_path` (a `nemo:` artifact in the archive), or
/// `<dir>/tokenizer.model` when the archive holds a file of that name.
fn sentencepiece_artifact(
    section: &Value,
    prefix: &str,
    archive: &Archive,
    shown: &str,
) -> Result<SentencePieceModel> {
    let cerr = |msg: String| anyhow!("{shown}: {CONFIG_MEMBER}: {msg}");
    let key = format!("{prefix}.model_path");
    let reference = section
        .get("model_path")
        .filter(|v| !v.is_null())
        .map(value_text)
        .ok_or_else(|| cerr(format!("{key}: missing")))?;
    let name = reference.strip_prefix("nemo:").unwrap_or(&reference);
    let name = name.strip_prefix("./").unwrap_or(name);
    let bytes = archive
        .members
        .get(name)
        .or_else(|| {
            // An absolute path from the training machine: the archive may still hold the file by its name.
            let base = Path::new(name).file_name()?.to_str()?;
            archive.members.get(base)
        })
        .ok_or_else(|| cerr(format!("{key}: {reference} is not in the archive")))?;
    SentencePieceModel::from_bytes(bytes, &format!("{shown}: {name}"))
        .map_err(|e| anyhow!("{}", one_line(&e)))
}

/// A SentencePiece model of type CHAR whose pieces are NeMo's character labels, in order, so that a char CTC
/// model runs through the same tokenizer and decoding as the others. Decoding joins the labels exactly as
/// NeMo's `CTCDecoding` does (no prefix space added or removed, the space label is `▁`). SentencePiece needs
/// an unknown piece: the last label other than the space plays that role, with itself as the unknown
/// surface, so its decoding is unchanged; encoding text maps characters outside the labels to it.
pub fn char_vocabulary(labels: &[String]) -> std::result::Result<SentencePieceModel, String> {
    if labels.is_empty() {
        return Err("empty vocabulary".into());
    }
    let pieces: Vec<String> = labels
        .iter()
        .map(|l| l.replace(' ', SPACE_SYMBOL))
        .collect();
    for (i, p) in pieces.iter().enumerate() {
        if p.is_empty() {
            return Err(format!("label {i} is empty"));
        }
        if pieces[..i].contains(p) {
            return Err(format!("label {:?} appears twice", labels[i]));
        }
    }
    let unk = pieces
        .iter()
        .rposition(|p| p != SPACE_SYMBOL)
        .ok_or("the vocabulary has only the space")?;
    let mut model = Fields::default();
    for (i, p) in pieces.iter().enumerate() {
        let mut pf = Fields::default();
        pf.push(1, PValue::Bytes(p.as_bytes().to_vec()));
        pf.push(2, PValue::Fixed32(0f32.to_bits()));
        if i == unk {
            pf.push(3, PValue::Varint(2)); // UNKNOWN
        }
        model.push(1, PValue::Bytes(pf.to_bytes()));
    }
    let mut trainer = Fields::default();
    trainer.push(3, PValue::Varint(4)); // model_type CHAR
    trainer.push(40, PValue::Varint(unk as u64)); // unk_id
    for field in [41, 42, 43] {
        trainer.push(field, int32_value(-1)); // bos_id, eos_id, pad_id: none
    }
    trainer.push(44, PValue::Bytes(labels[unk].as_bytes().to_vec())); // unk_surface
    model.push(2, PValue::Bytes(trainer.to_bytes()));
    let mut normalizer = Fields::default();
    normalizer.push(1, PValue::Bytes(b"identity".to_vec()));
    normalizer.push(3, PValue::Varint(0)); // add_dummy_prefix
    normalizer.push(4, PValue::Varint(0)); // remove_extra_whitespaces
    normalizer.push(5, PValue::Varint(1)); // escape_whitespaces
    model.push(3, PValue::Bytes(normalizer.to_bytes()));
    SentencePieceModel::from_bytes(&model.to_bytes(), "char vocabulary").map_err(|e| one_line(&e))
}

/// The encoder and head tensors of a PyTorch state dict, as f32: a CTC head as `decoder.…` (a hybrid's
/// `ctc_decoder.…` renamed), an RNN-T head as `decoder.prediction.…` and `joint.…`.
fn read_weights(path: &Path, head: HeadKind) -> Result<HashMap<String, Tensor>> {
    let pth = candle_core::pickle::PthTensors::new(path, None)
        .map_err(|e| anyhow!("not a PyTorch checkpoint: {}", one_line(&e)))?;
    let mut names: Vec<&String> = pth.tensor_infos().keys().collect();
    names.sort();
    let mut out = HashMap::new();
    for name in names {
        let key = if name.starts_with("encoder.") {
            name.clone()
        } else {
            match head {
                HeadKind::Ctc if name.starts_with("decoder.") => name.clone(),
                HeadKind::HybridCtc => match name.strip_prefix("ctc_decoder.") {
                    Some(rest) => format!("decoder.{rest}"),
                    None => continue,
                },
                HeadKind::Transducer
                    if name.starts_with("decoder.prediction.") || name.starts_with("joint.") =>
                {
                    name.clone()
                }
                _ => continue,
            }
        };
        let info = &pth.tensor_infos()[name];
        if !info.dtype.is_float() {
            continue; // num_batches_tracked and other counters
        }
        let t = pth
            .get(name)
            .map_err(|e| anyhow!("{name}: {}", one_line(&e)))?
            .ok_or_else(|| anyhow!("{name}: missing"))?
            .to_dtype(DType::F32)?;
        out.insert(key, t);
    }
    if out.is_empty() {
        bail!("no encoder.* tensors");
    }
    Ok(out)
}

/// Default output folder of `mezcla convert x.nemo`: `x` next to the file.
pub fn default_output(path: &Path) -> PathBuf {
    path.with_extension("")
}
