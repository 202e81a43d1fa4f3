//! Log-mel front-end with the semantics of NeMo's `AudioToMelSpectrogramPreprocessor`, on plain `f32` slices.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use serde::{Deserialize, Serialize};

/// Added to the standard deviation before normalising (NeMo's `CONSTANT`).
const NORM_EPS: f32 = 1e-5;

/// Errors of the front-end: a bad configuration (naming the key), bad input, or a tensor error.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// A configuration value NeMo rejects, or one this implementation does not support.
    #[error("preprocessor config `{key}`: {msg}")]
    Config {
        /// The NeMo config key.
        key: &'static str,
        /// What is wrong with it.
        msg: String,
    },
    /// The config could not be parsed (unknown key, wrong type).
    #[error("preprocessor config: {0}")]
    Parse(#[from] serde_json::Error),
    /// Audio that cannot be turned into features (empty, too short for reflect padding).
    #[error("front-end input: {0}")]
    Input(String),
    /// Building the output tensor failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn cfg_err(key: &'static str, msg: impl Into<String>) -> FrontendError {
    FrontendError::Config {
        key,
        msg: msg.into(),
    }
}

/// `log_zero_guard_value`: a number, or `"tiny"` / `"eps"` (float32 `finfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GuardValue {
    /// A literal value.
    Number(f64),
    /// `"tiny"` or `"eps"`.
    Name(String),
}

/// `pad_to`: a frame multiple (0 for none), or NeMo's `"max"` (rejected: NeMo's constructor fails on it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PadTo {
    /// Pad the time axis to a multiple of this many frames (0: no padding).
    Frames(i64),
    /// A named mode (`"max"`).
    Name(String),
}

/// `normalize`: a strategy name, or NeMo's fixed per-feature statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NormalizeSpec {
    /// `"per_feature"`, `"all_features"`, or `"none"` / `"NA"` / `""` for none.
    Name(String),
    /// `{fixed_mean: [...], fixed_std: [...]}`, one value per output feature.
    Fixed {
        /// Subtracted per feature.
        fixed_mean: Vec<f64>,
        /// Divided by per feature.
        fixed_std: Vec<f64>,
    },
}

/// `mel_norm`: librosa's `norm` argument, `"slaney"` (area) or a p-norm order; `null` for none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MelNormSpec {
    /// `"slaney"`.
    Name(String),
    /// Normalise each filter to unit p-norm.
    P(f64),
}

/// NeMo's `AudioToMelSpectrogramPreprocessor` config: field names are NeMo's keys, defaults NeMo's.
///
/// Unknown keys are an error naming the key; `_target_` (checked to name this preprocessor) and the keys NeMo
/// itself ignores (`use_torchaudio`, `stft_exact_pad`, `stft_conv`) are accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreprocessorConfig {
    /// Hydra target; must name `AudioToMelSpectrogramPreprocessor` when present.
    #[serde(rename = "_target_", skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Sample rate of the input audio (Hz).
    pub sample_rate: u32,
    /// Window length in seconds (exclusive with `n_window_size`).
    pub window_size: Option<f64>,
    /// Hop in seconds (exclusive with `n_window_stride`).
    pub window_stride: Option<f64>,
    /// Window length in samples.
    pub n_window_size: Option<usize>,
    /// Hop in samples.
    pub n_window_stride: Option<usize>,
    /// `hann`, `hamming`, `blackman`, `bartlett`, or `none` (rectangular).
    pub window: Option<String>,
    /// Feature normalisation.
    pub normalize: Option<NormalizeSpec>,
    /// FFT size; `None` for the next power of two ≥ the window length.
    pub n_fft: Option<usize>,
    /// Pre-emphasis coefficient; `None` for none.
    pub preemph: Option<f64>,
    /// Number of mel filters.
    pub features: usize,
    /// Lowest filter edge (Hz).
    pub lowfreq: f64,
    /// Highest filter edge (Hz); `None` or 0 for sample_rate / 2.
    pub highfreq: Option<f64>,
    /// Take the log of the mel energies.
    pub log: bool,
    /// `add` or `clamp`.
    pub log_zero_guard_type: String,
    /// The guard value.
    pub log_zero_guard_value: GuardValue,
    /// Dither amplitude (training only).
    pub dither: f64,
    /// Pad the time axis to a multiple of this.
    pub pad_to: PadTo,
    /// Number of stacked frames (NeMo stacks `frame_splicing` copies of the same frames).
    pub frame_splicing: usize,
    /// STFT without centring, padded by (n_fft - hop) / 2 on each side.
    pub exact_pad: bool,
    /// Value of the frames beyond the valid length.
    pub pad_value: f64,
    /// Exponent of the magnitude spectrum.
    pub mag_power: f64,
    /// Probability of narrowband augmentation per utterance (training only).
    pub nb_augmentation_prob: f64,
    /// Cut-off of narrowband augmentation (Hz).
    pub nb_max_freq: f64,
    /// Mel filter normalisation.
    pub mel_norm: Option<MelNormSpec>,
    /// Ignored, as by NeMo 3.0 (deprecated there; the same features are computed).
    pub use_torchaudio: bool,
    /// Ignored, as by NeMo (deprecated, forced to false).
    pub stft_exact_pad: bool,
    /// Ignored, as by NeMo (deprecated, forced to false).
    pub stft_conv: bool,
}

impl Default for PreprocessorConfig {
    fn default() -> Self {
        Self {
            target: None,
            sample_rate: 16000,
            window_size: Some(0.02),
            window_stride: Some(0.01),
            n_window_size: None,
            n_window_stride: None,
            window: Some("hann".into()),
            normalize: Some(NormalizeSpec::Name("per_feature".into())),
            n_fft: None,
            preemph: Some(0.97),
            features: 64,
            lowfreq: 0.0,
            highfreq: None,
            log: true,
            log_zero_guard_type: "add".into(),
            log_zero_guard_value: GuardValue::Number(2f64.powi(-24)),
            dither: 1e-5,
            pad_to: PadTo::Frames(16),
            frame_splicing: 1,
            exact_pad: false,
            pad_value: 0.0,
            mag_power: 2.0,
            nb_augmentation_prob: 0.0,
            nb_max_freq: 4000.0,
            mel_norm: Some(MelNormSpec::Name("slaney".into())),
            use_torchaudio: false,
            stft_exact_pad: false,
            stft_conv: false,
        }
    }
}

impl PreprocessorConfig {
    /// Parses a NeMo `preprocessor:` block given as JSON text.
    pub fn from_json_str(text: &str) -> Result<Self, FrontendError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Parses a NeMo `preprocessor:` block given as a JSON value (e.g. converted from a checkpoint's YAML).
    pub fn from_json_value(value: serde_json::Value) -> Result<Self, FrontendError> {
        Ok(serde_json::from_value(value)?)
    }
}

/// Mel scale of the filterbank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MelScale {
    /// librosa's default (Slaney's Auditory Toolbox), the only one NeMo uses.
    #[default]
    Slaney,
    /// HTK's `2595 log10(1 + f/700)` (librosa `htk=True`); not reachable from a NeMo config.
    Htk,
}

/// Options outside NeMo's config keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrontendOptions {
    /// NeMo's behaviour before 2025-07 (`0fd4de534b`): `floor(L/hop) + 1` frames, reflect padding of the
    /// centred STFT and of `exact_pad`, and no zeroing of the pre-emphasised samples beyond the valid length.
    pub legacy: bool,
    /// Mel scale (NeMo: always Slaney).
    pub mel_scale: MelScale,
}

#[derive(Debug, Clone, PartialEq)]
enum Normalize {
    PerFeature,
    AllFeatures,
    Fixed { mean: Vec<f32>, std: Vec<f32> },
    None,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Guard {
    Add(f32),
    Clamp(f32),
}

#[derive(Debug, Clone)]
struct Filter {
    start: usize,
    weights: Vec<f32>,
}

/// Features of one utterance: `data` is `[n_features, n_frames]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Row-major `[n_features, n_frames]`.
    pub data: Vec<f32>,
    /// Rows: `features * frame_splicing`.
    pub n_features: usize,
    /// Columns, including the frames beyond `length` (filled with `pad_value`) and the `pad_to` padding.
    pub n_frames: usize,
    /// Valid frames (NeMo's `processed_length`).
    pub length: usize,
}

impl Features {
    /// The features as a `[1, n_features, n_frames]` f32 tensor (a batch of one).
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor, FrontendError> {
        Ok(Tensor::from_slice(
            &self.data,
            (1, self.n_features, self.n_frames),
            device,
        )?)
    }
}

/// Features of a batch: `features` is `[B, n_features, T]` (f32), `lengths` the valid frames of each.
#[derive(Debug, Clone)]
pub struct FeatureBatch {
    /// `[B, n_features, T]`.
    pub features: Tensor,
    /// Valid frames per utterance.
    pub lengths: Vec<usize>,
}

impl FeatureBatch {
    /// The lengths as a u32 tensor of shape `[B]`.
    pub fn lengths_tensor(&self, device: &Device) -> Result<Tensor, FrontendError> {
        let l: Vec<u32> = self.lengths.iter().map(|&v| v as u32).collect();
        Ok(Tensor::from_vec(l, self.lengths.len(), device)?)
    }
}

/// A planned front-end: FFT plan, window and filterbank for one config. Cheap to share across threads.
///
/// A [`PreprocessorConfig`] is NeMo's `preprocessor:` block (same keys, same defaults); [`MelFrontend`] plans
/// the real FFT, the window and the mel filterbank once and then computes features for one utterance
/// ([`MelFrontend::compute`]) or a zero-padded batch in parallel ([`MelFrontend::batch`]), with the output
/// shapes, lengths and padding NeMo produces. Training variants add dither and narrowband augmentation from a
/// caller-seeded RNG; the plain variants are NeMo's eval mode.
///
/// Two behaviours: NeMo ≥ 2025-07 (NVIDIA/NeMo `0fd4de534b`, the default: `floor(L/hop)` frames, zero padding,
/// pre-emphasised signal zeroed beyond the valid length) and the earlier one ([`FrontendOptions::legacy`]:
/// one more frame, reflect padding of the centred STFT and of `exact_pad`, no zeroing), which checkpoints
/// trained before that change expect.
pub struct MelFrontend {
    config: PreprocessorConfig,
    options: FrontendOptions,
    sample_rate: u32,
    win_length: usize,
    hop: usize,
    n_fft: usize,
    /// Window zero-padded (centred) to `n_fft`, as torch.stft does.
    window: Vec<f32>,
    filters: Vec<Filter>,
    n_mels: usize,
    splicing: usize,
    preemph: Option<f32>,
    guard: Option<Guard>,
    normalize: Normalize,
    pad_to: usize,
    pad_value: f32,
    mag_power: f32,
    dither: f32,
    nb_prob: f64,
    nb_bin: usize,
    /// Samples of padding on each side before the first frame: n_fft/2 (centred) or (n_fft-hop)/2.
    offset: usize,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for MelFrontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelFrontend")
            .field("config", &self.config)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Frames per task when an utterance's frames are spread over rayon's threads.
const FRAMES_PER_TASK: usize = 64;

struct Scratch {
    signal: Vec<f32>,
    frame: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    fft_scratch: Vec<Complex<f32>>,
    power: Vec<f32>,
}

fn torch_window(kind: &str, n: usize) -> Option<Vec<f32>> {
    // torch.*_window(n, periodic=False), computed in f64 and rounded.
    if n == 1 {
        return Some(vec![1.0]);
    }
    let d = (n - 1) as f64;
    let pi = std::f64::consts::PI;
    let w: Vec<f64> = match kind {
        "hann" => (0..n)
            .map(|i| 0.5 - 0.5 * (2.0 * pi * i as f64 / d).cos())
            .collect(),
        "hamming" => (0..n)
            .map(|i| 0.54 - 0.46 * (2.0 * pi * i as f64 / d).cos())
            .collect(),
        "blackman" => (0..n)
            .map(|i| {
                let a = pi * i as f64 / d;
                0.42 - 0.5 * (2.0 * a).cos() + 0.08 * (4.0 * a).cos()
            })
            .collect(),
        "bartlett" => (0..n)
            .map(|i| 1.0 - (2.0 * i as f64 / d - 1.0).abs())
            .collect(),
        "none" | "null" => vec![1.0; n],
        _ => return None,
    };
    Some(w.into_iter().map(|v| v as f32).collect())
}

fn hz_to_mel(f: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 2595.0 * (1.0 + f / 700.0).log10(),
        MelScale::Slaney => {
            let f_sp = 200.0 / 3.0;
            let min_log_hz = 1000.0;
            let min_log_mel = min_log_hz / f_sp;
            let logstep = 6.4f64.ln() / 27.0;
            if f >= min_log_hz {
                min_log_mel + (f / min_log_hz).ln() / logstep
            } else {
                f / f_sp
            }
        }
    }
}

fn mel_to_hz(m: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 700.0 * (10f64.powf(m / 2595.0) - 1.0),
        MelScale::Slaney => {
            let f_sp = 200.0 / 3.0;
            let min_log_hz = 1000.0;
            let min_log_mel = min_log_hz / f_sp;
            let logstep = 6.4f64.ln() / 27.0;
            if m >= min_log_mel {
                min_log_hz * (logstep * (m - min_log_mel)).exp()
            } else {
                f_sp * m
            }
        }
    }
}

/// librosa.filters.mel (float32 output), as a dense `[n_mels][n_fft/2+1]` matrix.
fn librosa_mel(
    sr: f64,
    n_fft: usize,
    n_mels: usize,
    fmin: f64,
    fmax: f64,
    scale: MelScale,
    norm: &Option<MelNormSpec>,
) -> Vec<Vec<f32>> {
    let n_bins = n_fft / 2 + 1;
    let val = 1.0 / (n_fft as f64 * (1.0 / sr));
    let fftfreqs: Vec<f64> = (0..n_bins).map(|k| k as f64 * val).collect();
    let (min_mel, max_mel) = (hz_to_mel(fmin, scale), hz_to_mel(fmax, scale));
    let num = n_mels + 2;
    let step = (max_mel - min_mel) / (num - 1) as f64;
    let mel_f: Vec<f64> = (0..num)
        .map(|i| {
            let m = if i == num - 1 {
                max_mel
            } else {
                i as f64 * step + min_mel
            };
            mel_to_hz(m, scale)
        })
        .collect();
    let mut weights = vec![vec![0f32; n_bins]; n_mels];
    for (i, row) in weights.iter_mut().enumerate() {
        let fd0 = mel_f[i + 1] - mel_f[i];
        let fd1 = mel_f[i + 2] - mel_f[i + 1];
        for (k, w) in row.iter_mut().enumerate() {
            let lower = -(mel_f[i] - fftfreqs[k]) / fd0;
            let upper = (mel_f[i + 2] - fftfreqs[k]) / fd1;
            *w = 0f64.max(lower.min(upper)) as f32;
        }
        match norm {
            Some(MelNormSpec::Name(_)) => {
                let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
                for w in row.iter_mut() {
                    *w = (*w as f64 * enorm) as f32;
                }
            }
            Some(MelNormSpec::P(p)) => {
                let len: f64 = row
                    .iter()
                    .map(|&w| (w.abs() as f64).powf(*p))
                    .sum::<f64>()
                    .powf(1.0 / p);
                let len = if len < f32::MIN_POSITIVE as f64 {
                    1.0
                } else {
                    len
                };
                for w in row.iter_mut() {
                    *w = (*w as f64 / len) as f32;
                }
            }
            None => {}
        }
    }
    weights
}

fn standard_normal(rng: &mut dyn RngCore) -> f32 {
    // Box–Muller; u1 in (0, 1].
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

impl MelFrontend {
    /// Plans the front-end for a NeMo config with NeMo's current behaviour.
    pub fn new(config: &PreprocessorConfig) -> Result<Self, FrontendError> {
        Self::with_options(config, FrontendOptions::default())
    }

    /// Plans the front-end with options outside NeMo's config (legacy behaviour, mel scale).
    pub fn with_options(
        config: &PreprocessorConfig,
        options: FrontendOptions,
    ) -> Result<Self, FrontendError> {
        let c = config;
        if let Some(t) = &c.target {
            if !t.ends_with("AudioToMelSpectrogramPreprocessor") {
                return Err(cfg_err(
                    "_target_",
                    format!("`{t}` is not AudioToMelSpectrogramPreprocessor"),
                ));
            }
        }
        if c.sample_rate == 0 {
            return Err(cfg_err("sample_rate", "must be positive"));
        }
        let sr = c.sample_rate;
        // NeMo: `if window_size:` (0 and None are falsy), then int(window_size * sample_rate).
        let ws = c.window_size.filter(|&v| v != 0.0);
        let wst = c.window_stride.filter(|&v| v != 0.0);
        if ws.is_some() && c.n_window_size.is_some_and(|v| v != 0) {
            return Err(cfg_err(
                "n_window_size",
                "both window_size and n_window_size given; set window_size: null",
            ));
        }
        if wst.is_some() && c.n_window_stride.is_some_and(|v| v != 0) {
            return Err(cfg_err(
                "n_window_stride",
                "both window_stride and n_window_stride given; set window_stride: null",
            ));
        }
        let win_length = match ws {
            Some(v) if v > 0.0 => (v * sr as f64) as usize,
            Some(v) => return Err(cfg_err("window_size", format!("{v} is not positive"))),
            None => c.n_window_size.unwrap_or(0),
        };
        let hop = match wst {
            Some(v) if v > 0.0 => (v * sr as f64) as usize,
            Some(v) => return Err(cfg_err("window_stride", format!("{v} is not positive"))),
            None => c.n_window_stride.unwrap_or(0),
        };
        if win_length == 0 {
            return Err(cfg_err(
                "window_size",
                "the window is 0 samples (give window_size or n_window_size)",
            ));
        }
        if hop == 0 {
            return Err(cfg_err(
                "window_stride",
                "the hop is 0 samples (give window_stride or n_window_stride)",
            ));
        }
        if c.exact_pad && hop % 2 == 1 {
            return Err(cfg_err(
                "exact_pad",
                format!("needs an even hop, got {hop} samples (as NeMo)"),
            ));
        }
        let n_fft = c.n_fft.unwrap_or_else(|| win_length.next_power_of_two());
        if n_fft < win_length {
            return Err(cfg_err(
                "n_fft",
                format!("{n_fft} is smaller than the window ({win_length} samples)"),
            ));
        }
        let kind = c.window.as_deref().unwrap_or("none");
        let win = torch_window(kind, win_length).ok_or_else(|| {
            cfg_err(
                "window",
                format!("`{kind}` is not one of hann, hamming, blackman, bartlett, none"),
            )
        })?;
        let left = (n_fft - win_length) / 2;
        let mut window = vec![0f32; n_fft];
        window[left..left + win_length].copy_from_slice(&win);

        if c.features == 0 {
            return Err(cfg_err("features", "must be positive"));
        }
        let nyquist = sr as f64 / 2.0;
        let fmax = match c.highfreq {
            Some(h) if h != 0.0 => h,
            _ => nyquist,
        };
        if !(c.lowfreq >= 0.0 && c.lowfreq < fmax) {
            return Err(cfg_err(
                "lowfreq",
                format!("{} must be in [0, highfreq = {fmax})", c.lowfreq),
            ));
        }
        match &c.mel_norm {
            Some(MelNormSpec::Name(n)) if n != "slaney" => {
                return Err(cfg_err(
                    "mel_norm",
                    format!("`{n}`: expected \"slaney\", a positive number or null"),
                ))
            }
            Some(MelNormSpec::P(p)) if !(p.is_finite() && *p > 0.0) => {
                return Err(cfg_err(
                    "mel_norm",
                    format!("p-norm order {p} is not positive"),
                ))
            }
            _ => {}
        }
        let dense = librosa_mel(
            sr as f64,
            n_fft,
            c.features,
            c.lowfreq,
            fmax,
            options.mel_scale,
            &c.mel_norm,
        );
        let filters = dense
            .into_iter()
            .map(|row| match row.iter().position(|&w| w != 0.0) {
                Some(s) => {
                    let e = row.iter().rposition(|&w| w != 0.0).unwrap_or(s) + 1;
                    Filter {
                        start: s,
                        weights: row[s..e].to_vec(),
                    }
                }
                None => Filter {
                    start: 0,
                    weights: Vec::new(),
                },
            })
            .collect();

        let guard_value = match &c.log_zero_guard_value {
            GuardValue::Number(v) => *v as f32,
            GuardValue::Name(n) if n == "tiny" => f32::MIN_POSITIVE,
            GuardValue::Name(n) if n == "eps" => f32::EPSILON,
            GuardValue::Name(n) => {
                return Err(cfg_err(
                    "log_zero_guard_value",
                    format!("`{n}`: expected a number, \"tiny\" or \"eps\""),
                ))
            }
        };
        let guard = match c.log_zero_guard_type.as_str() {
            "add" => Guard::Add(guard_value),
            "clamp" => Guard::Clamp(guard_value),
            other => {
                return Err(cfg_err(
                    "log_zero_guard_type",
                    format!("`{other}`: expected \"add\" or \"clamp\""),
                ))
            }
        };
        if c.frame_splicing == 0 {
            return Err(cfg_err("frame_splicing", "must be at least 1"));
        }
        let n_features = c.features * c.frame_splicing;
        let normalize = match &c.normalize {
            None => Normalize::None,
            Some(NormalizeSpec::Name(n)) => match n.as_str() {
                "per_feature" => Normalize::PerFeature,
                "all_features" => Normalize::AllFeatures,
                "" | "none" | "None" | "NA" => Normalize::None,
                other => {
                    return Err(cfg_err(
                        "normalize",
                        format!(
                            "`{other}`: expected per_feature, all_features, none/NA or \
                             {{fixed_mean, fixed_std}}"
                        ),
                    ))
                }
            },
            Some(NormalizeSpec::Fixed {
                fixed_mean,
                fixed_std,
            }) => {
                if fixed_mean.len() != n_features || fixed_std.len() != n_features {
                    return Err(cfg_err(
                        "normalize",
                        format!(
                            "fixed_mean and fixed_std need {n_features} values each, got {} and {}",
                            fixed_mean.len(),
                            fixed_std.len()
                        ),
                    ));
                }
                Normalize::Fixed {
                    mean: fixed_mean.iter().map(|&v| v as f32).collect(),
                    std: fixed_std.iter().map(|&v| v as f32).collect(),
                }
            }
        };
        let pad_to = match &c.pad_to {
            PadTo::Frames(n) if *n >= 0 => *n as usize,
            PadTo::Frames(n) => return Err(cfg_err("pad_to", format!("{n} is negative"))),
            PadTo::Name(n) => {
                return Err(cfg_err(
                    "pad_to",
                    format!(
                    "`{n}` is not supported (NeMo's FilterbankFeatures fails on pad_to: \"max\" \
                         in its constructor); give a frame multiple or 0"
                ),
                ))
            }
        };
        if !(c.dither >= 0.0 && c.dither.is_finite()) {
            return Err(cfg_err(
                "dither",
                format!("{} is not a finite value ≥ 0", c.dither),
            ));
        }
        if !c.mag_power.is_finite() || c.mag_power <= 0.0 {
            return Err(cfg_err(
                "mag_power",
                format!("{} is not positive", c.mag_power),
            ));
        }
        if !(0.0..=1.0).contains(&c.nb_augmentation_prob) {
            return Err(cfg_err(
                "nb_augmentation_prob",
                format!("{} is not a probability", c.nb_augmentation_prob),
            ));
        }
        // NeMo: narrowband augmentation is off when the cut-off is at or above Nyquist.
        let (nb_prob, nb_bin) = if c.nb_augmentation_prob > 0.0 && c.nb_max_freq < nyquist {
            (
                c.nb_augmentation_prob,
                ((c.nb_max_freq / sr as f64) * n_fft as f64) as usize,
            )
        } else {
            (0.0, 0)
        };
        let offset = if c.exact_pad {
            (n_fft - hop) / 2
        } else {
            n_fft / 2
        };
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n_fft);
        Ok(Self {
            config: c.clone(),
            options,
            sample_rate: sr,
            win_length,
            hop,
            n_fft,
            window,
            filters,
            n_mels: c.features,
            splicing: c.frame_splicing,
            preemph: c.preemph.map(|v| v as f32),
            guard: c.log.then_some(guard),
            normalize,
            pad_to,
            pad_value: c.pad_value as f32,
            mag_power: c.mag_power as f32,
            dither: c.dither as f32,
            nb_prob,
            nb_bin,
            offset,
            fft,
        })
    }

    /// The config this front-end was planned from.
    pub fn config(&self) -> &PreprocessorConfig {
        &self.config
    }

    /// The options outside NeMo's config.
    pub fn options(&self) -> FrontendOptions {
        self.options
    }

    /// Sample rate the audio must have.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Window length in samples.
    pub fn win_length(&self) -> usize {
        self.win_length
    }

    /// Hop in samples.
    pub fn hop_length(&self) -> usize {
        self.hop
    }

    /// FFT size.
    pub fn n_fft(&self) -> usize {
        self.n_fft
    }

    /// Output feature rows: `features * frame_splicing`.
    pub fn n_features(&self) -> usize {
        self.n_mels * self.splicing
    }

    /// The mel filterbank as a dense row-major `[features, n_fft/2 + 1]` matrix (NeMo's `filter_banks`).
    pub fn filterbank(&self) -> Vec<f32> {
        let n_bins = self.n_fft / 2 + 1;
        let mut fb = vec![0f32; self.n_mels * n_bins];
        for (m, f) in self.filters.iter().enumerate() {
            fb[m * n_bins + f.start..m * n_bins + f.start + f.weights.len()]
                .copy_from_slice(&f.weights);
        }
        fb
    }

    /// Valid frames for `n_samples` of audio (NeMo's `get_seq_len`, 0 for empty audio, never negative).
    pub fn valid_frames(&self, n_samples: usize) -> usize {
        if n_samples == 0 {
            return 0;
        }
        let v = (n_samples as i64 + 2 * self.offset as i64 - self.n_fft as i64)
            .div_euclid(self.hop as i64)
            + i64::from(self.options.legacy);
        v.max(0) as usize
    }

    /// Frames NeMo's output has for a (padded) input of `padded_len` samples: the STFT frame count, padded to
    /// a multiple of `pad_to`.
    pub fn output_frames(&self, padded_len: usize) -> Result<usize, FrontendError> {
        let total = padded_len + 2 * self.offset;
        if padded_len == 0 || total < self.n_fft {
            return Err(FrontendError::Input(format!(
                "{padded_len} samples give no STFT frame (n_fft {}, padding {} per side)",
                self.n_fft, self.offset
            )));
        }
        if self.options.legacy && self.offset >= padded_len {
            return Err(FrontendError::Input(format!(
                "{padded_len} samples are too short for reflect padding of {} (legacy behaviour)",
                self.offset
            )));
        }
        let t = 1 + (total - self.n_fft) / self.hop;
        Ok(match self.pad_to {
            0 => t,
            p => t.div_ceil(p) * p,
        })
    }

    fn scratch(&self) -> Scratch {
        Scratch {
            signal: Vec::new(),
            frame: self.fft.make_input_vec(),
            spectrum: self.fft.make_output_vec(),
            fft_scratch: self.fft.make_scratch_vec(),
            power: vec![0f32; self.n_fft / 2 + 1],
        }
    }

    /// Features of one utterance in eval mode (no dither): NeMo's output for a batch of one.
    pub fn compute(&self, audio: &[f32]) -> Result<Features, FrontendError> {
        self.compute_single(audio, None)
    }

    /// Features of one utterance in training mode: dither and narrowband augmentation drawn from `rng`.
    pub fn compute_train(
        &self,
        audio: &[f32],
        rng: &mut dyn RngCore,
    ) -> Result<Features, FrontendError> {
        self.compute_single(audio, Some(rng))
    }

    fn compute_single(
        &self,
        audio: &[f32],
        rng: Option<&mut dyn RngCore>,
    ) -> Result<Features, FrontendError> {
        let t = self.output_frames(audio.len())?;
        let nf = self.n_features();
        let mut data = vec![0f32; nf * t];
        let length = self.compute_into(audio, audio.len(), &mut data, t, rng, &mut self.scratch());
        Ok(Features {
            data,
            n_features: nf,
            n_frames: t,
            length,
        })
    }

    /// Features of a batch in eval mode: `[B, n_features, T]` as NeMo computes it for the zero-padded batch,
    /// utterances in parallel.
    pub fn batch(&self, audios: &[&[f32]], device: &Device) -> Result<FeatureBatch, FrontendError> {
        self.batch_impl(audios, None, device)
    }

    /// Features of a batch in training mode; utterance `i` draws its dither and narrowband augmentation from
    /// ChaCha8 seeded with `seed`, stream `i` (deterministic whatever the thread count).
    pub fn batch_train(
        &self,
        audios: &[&[f32]],
        seed: u64,
        device: &Device,
    ) -> Result<FeatureBatch, FrontendError> {
        self.batch_impl(audios, Some(seed), device)
    }

    fn batch_impl(
        &self,
        audios: &[&[f32]],
        seed: Option<u64>,
        device: &Device,
    ) -> Result<FeatureBatch, FrontendError> {
        if audios.is_empty() {
            return Err(FrontendError::Input("empty batch".into()));
        }
        let padded = audios.iter().map(|a| a.len()).max().unwrap_or(0);
        let t = self.output_frames(padded)?;
        let nf = self.n_features();
        let mut data = vec![0f32; audios.len() * nf * t];
        let lengths: Vec<usize> = data
            .par_chunks_mut(nf * t)
            .zip(audios.par_iter())
            .enumerate()
            .map_init(
                || self.scratch(),
                |scratch, (i, (out, audio))| match seed {
                    Some(s) => {
                        let mut rng = ChaCha8Rng::seed_from_u64(s);
                        rng.set_stream(i as u64);
                        self.compute_into(audio, padded, out, t, Some(&mut rng), scratch)
                    }
                    None => self.compute_into(audio, padded, out, t, None, scratch),
                },
            )
            .collect();
        let features = Tensor::from_vec(data, (audios.len(), nf, t), device)?;
        Ok(FeatureBatch { features, lengths })
    }

    /// Computes one utterance as row `audio` of a zero-padded batch of `padded_len` samples into `out`
    /// (`[n_features, t_out]`); returns the valid length. `padded_len` and `t_out` come from
    /// [`Self::output_frames`], which has checked them.
    fn compute_into(
        &self,
        audio: &[f32],
        padded_len: usize,
        out: &mut [f32],
        t_out: usize,
        mut rng: Option<&mut dyn RngCore>,
        s: &mut Scratch,
    ) -> usize {
        let l = audio.len();
        let n_valid = self.valid_frames(l);
        let legacy = self.options.legacy;
        let off = self.offset;
        let exact = self.config.exact_pad;

        // The row as NeMo's STFT sees it: [pad | audio, zeros up to padded_len | pad].
        let sig = &mut s.signal;
        sig.clear();
        sig.resize(padded_len + 2 * off, 0.0);
        sig[off..off + l].copy_from_slice(audio);
        let reflect = |sig: &mut [f32]| {
            for k in 1..=off {
                sig[off - k] = sig[off + k];
                sig[off + padded_len - 1 + k] = sig[off + padded_len - 1 - k];
            }
        };
        // exact_pad pads before dither and pre-emphasis; the centred STFT pads after them.
        let region = if exact {
            if legacy {
                reflect(sig);
            }
            0..sig.len()
        } else {
            off..off + padded_len
        };
        if let Some(r) = rng.as_deref_mut() {
            if self.dither > 0.0 {
                for v in &mut sig[region.clone()] {
                    *v += self.dither * standard_normal(r);
                }
            }
        }
        if let Some(a) = self.preemph {
            let x = &mut sig[region.clone()];
            for i in (1..x.len()).rev() {
                x[i] -= a * x[i - 1];
            }
            if !legacy {
                // NeMo ≥ 2025-07 zeroes positions ≥ the valid length of the row it pre-emphasises (with
                // exact_pad that row already holds the left padding, so the last `off` samples go too).
                let n = x.len();
                x[l.min(n)..].fill(0.0);
            }
        }
        if !exact && legacy {
            reflect(sig);
        }

        let nb_cut = match rng {
            Some(r) if self.nb_prob > 0.0 => r.random::<f64>() < self.nb_prob,
            _ => false,
        };
        // Frames are independent: blocks of them run on rayon's threads (each with its own FFT buffers),
        // giving (guarded, logged) mel energies time-major, which are then written out feature-major.
        let n_bins = self.n_fft / 2 + 1;
        let n_mels = self.n_mels;
        let sig: &[f32] = sig;
        let mut mels = vec![0f32; n_valid * n_mels];
        mels.par_chunks_mut(FRAMES_PER_TASK * n_mels)
            .enumerate()
            .for_each_init(
                || self.scratch(),
                |w, (block, dst)| {
                    for (i, row) in dst.chunks_mut(n_mels).enumerate() {
                        let t = block * FRAMES_PER_TASK + i;
                        let src = &sig[t * self.hop..t * self.hop + self.n_fft];
                        for ((f, &x), &win) in w.frame.iter_mut().zip(src).zip(&self.window) {
                            *f = x * win;
                        }
                        self.fft
                            .process_with_scratch(&mut w.frame, &mut w.spectrum, &mut w.fft_scratch)
                            .expect("buffers are sized by the plan");
                        let p = self.mag_power;
                        for (pw, c) in w.power.iter_mut().zip(&w.spectrum) {
                            let m2 = c.re * c.re + c.im * c.im;
                            *pw = if p == 2.0 {
                                m2
                            } else if p == 1.0 {
                                m2.sqrt()
                            } else {
                                m2.sqrt().powf(p)
                            };
                        }
                        if nb_cut {
                            w.power[self.nb_bin.min(n_bins)..].fill(0.0);
                        }
                        for (v, f) in row.iter_mut().zip(&self.filters) {
                            let e: f32 = f
                                .weights
                                .iter()
                                .zip(&w.power[f.start..])
                                .map(|(w, p)| w * p)
                                .sum();
                            *v = match self.guard {
                                None => e,
                                Some(Guard::Add(g)) => (e + g).ln(),
                                Some(Guard::Clamp(g)) => e.max(g).ln(),
                            };
                        }
                    }
                },
            );
        for (t, row) in mels.chunks(n_mels).enumerate() {
            for (m, &v) in row.iter().enumerate() {
                out[m * t_out + t] = v;
            }
        }
        // NeMo's splice_frames concatenates x[:, :, :n] and x[:, :, n:], i.e. x itself: identical copies.
        let block = self.n_mels * t_out;
        for k in 1..self.splicing {
            out.copy_within(0..block, k * block);
        }
        let nf = self.n_features();
        if n_valid > 0 {
            self.normalize(out, nf, t_out, n_valid);
        }
        let pad = self.pad_value;
        for row in out.chunks_mut(t_out) {
            row[n_valid..].fill(pad);
        }
        n_valid
    }

    fn normalize(&self, out: &mut [f32], nf: usize, t_out: usize, n: usize) {
        match &self.normalize {
            Normalize::None => {}
            Normalize::PerFeature => {
                for row in out.chunks_mut(t_out).take(nf) {
                    let x = &mut row[..n];
                    let mean = (x.iter().map(|&v| v as f64).sum::<f64>() / n as f64) as f32;
                    let ss: f64 = x.iter().map(|&v| ((v - mean) as f64).powi(2)).sum();
                    let mut std = (ss / (n as f64 - 1.0)).sqrt() as f32;
                    if std.is_nan() {
                        std = 0.0; // one frame: NeMo ≥ 2025-07 sets the std to 0
                    }
                    let std = std + NORM_EPS;
                    for v in x {
                        *v = (*v - mean) / std;
                    }
                }
            }
            Normalize::AllFeatures => {
                let count = (nf * n) as f64;
                let sum: f64 = out
                    .chunks(t_out)
                    .flat_map(|r| &r[..n])
                    .map(|&v| v as f64)
                    .sum();
                let mean = (sum / count) as f32;
                let ss: f64 = out
                    .chunks(t_out)
                    .flat_map(|r| &r[..n])
                    .map(|&v| ((v - mean) as f64).powi(2))
                    .sum();
                let std = (ss / (count - 1.0)).sqrt() as f32 + NORM_EPS;
                for row in out.chunks_mut(t_out) {
                    for v in &mut row[..n] {
                        *v = (*v - mean) / std;
                    }
                }
            }
            Normalize::Fixed { mean, std } => {
                for ((row, &m), &s) in out.chunks_mut(t_out).zip(mean).zip(std) {
                    for v in &mut row[..n] {
                        *v = (*v - m) / s;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> Result<MelFrontend, FrontendError> {
        MelFrontend::new(&PreprocessorConfig::from_json_str(json)?)
    }

    #[test]
    fn defaults_are_nemos() {
        let c = PreprocessorConfig::from_json_str("{}").unwrap();
        assert_eq!(c, PreprocessorConfig::default());
        let f = MelFrontend::new(&c).unwrap();
        assert_eq!(
            (f.win_length(), f.hop_length(), f.n_fft(), f.n_features()),
            (320, 160, 512, 64)
        );
        let f = cfg(r#"{"window_size": 0.025, "features": 80}"#).unwrap();
        assert_eq!((f.win_length(), f.n_fft(), f.n_features()), (400, 512, 80));
    }

    #[test]
    fn unknown_and_bad_keys_are_named() {
        let e = cfg(r#"{"feautres": 80}"#).unwrap_err().to_string();
        assert!(e.contains("feautres"), "{e}");
        for (json, key) in [
            (r#"{"window": "kaiser"}"#, "window"),
            (r#"{"normalize": "per_featur"}"#, "normalize"),
            (r#"{"log_zero_guard_type": "max"}"#, "log_zero_guard_type"),
            (
                r#"{"log_zero_guard_value": "huge"}"#,
                "log_zero_guard_value",
            ),
            (r#"{"pad_to": "max"}"#, "pad_to"),
            (r#"{"n_window_size": 400}"#, "n_window_size"),
            (r#"{"n_fft": 256, "window_size": 0.025}"#, "n_fft"),
            (
                r#"{"exact_pad": true, "n_window_stride": 161, "window_stride": null}"#,
                "exact_pad",
            ),
            (r#"{"mel_norm": "area"}"#, "mel_norm"),
            (r#"{"frame_splicing": 0}"#, "frame_splicing"),
            (
                r#"{"_target_": "nemo.collections.asr.modules.AudioToMFCCPreprocessor"}"#,
                "_target_",
            ),
            (
                r#"{"normalize": {"fixed_mean": [0.0], "fixed_std": [1.0]}}"#,
                "normalize",
            ),
        ] {
            let e = cfg(json).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{json}: {e}");
        }
        cfg(
            r#"{"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                "use_torchaudio": true, "stft_conv": false, "stft_exact_pad": false}"#,
        )
        .unwrap();
    }

    #[test]
    fn lengths_follow_nemo() {
        let f = cfg(r#"{"window_size": 0.025, "n_fft": 512, "pad_to": 0}"#).unwrap();
        assert_eq!(f.valid_frames(16000), 100);
        assert_eq!(f.valid_frames(159), 0);
        assert_eq!(f.output_frames(16000).unwrap(), 101);
        let g = MelFrontend::with_options(
            f.config(),
            FrontendOptions {
                legacy: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(g.valid_frames(16000), 101);
        assert_eq!(g.valid_frames(0), 0);
        let p = cfg(r#"{"pad_to": 16}"#).unwrap();
        assert_eq!(p.output_frames(16000).unwrap(), 112);
        assert!(f.output_frames(0).is_err());
        assert!(g.output_frames(200).is_err()); // reflect needs more than n_fft/2 samples
    }

    #[test]
    fn slaney_filterbank_matches_librosa_values() {
        // librosa.filters.mel(sr=16000, n_fft=512, n_mels=80)[0, :3] and [79].sum()
        let f = cfg(r#"{"window_size": 0.025, "n_fft": 512, "features": 80}"#).unwrap();
        let fb = f.filterbank();
        let expect = [0.0f32, 0.022_534_56, 0.008_637_71];
        for (a, b) in fb[..3].iter().zip(expect) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // Every filter has weight somewhere and the filters are in frequency order.
        let starts: Vec<usize> = f.filters.iter().map(|f| f.start).collect();
        assert!(f.filters.iter().all(|f| !f.weights.is_empty()));
        assert!(starts.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn training_mode_is_seeded_and_eval_is_not_dithered() {
        let f = cfg(r#"{"dither": 0.01, "nb_augmentation_prob": 1.0}"#).unwrap();
        let audio: Vec<f32> = (0..4000).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        let eval1 = f.compute(&audio).unwrap();
        let eval2 = f.compute(&audio).unwrap();
        assert_eq!(eval1, eval2);
        let mut r1 = ChaCha8Rng::seed_from_u64(7);
        let mut r2 = ChaCha8Rng::seed_from_u64(7);
        let a = f.compute_train(&audio, &mut r1).unwrap();
        let b = f.compute_train(&audio, &mut r2).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, eval1);
        let dev = Device::Cpu;
        let x = f.batch_train(&[&audio, &audio[..3000]], 3, &dev).unwrap();
        let y = f.batch_train(&[&audio, &audio[..3000]], 3, &dev).unwrap();
        let (xv, yv) = (
            x.features.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            y.features.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(xv, yv);
    }

    #[test]
    fn narrowband_cut_removes_high_mels() {
        // With the cut at 1 kHz and no normalisation, mels entirely above 1 kHz see zero energy.
        let f = cfg(
            r#"{"nb_augmentation_prob": 1.0, "nb_max_freq": 1000, "normalize": "NA",
                        "dither": 0.0, "pad_to": 0}"#,
        )
        .unwrap();
        let audio: Vec<f32> = (0..4000)
            .map(|i| ((i * 7919) % 101) as f32 / 101.0 - 0.5)
            .collect();
        let a = f
            .compute_train(&audio, &mut ChaCha8Rng::seed_from_u64(1))
            .unwrap();
        let guard = (2f32.powi(-24)).ln();
        let last = &a.data[63 * a.n_frames..63 * a.n_frames + a.length];
        assert!(last.iter().all(|&v| v == guard), "{last:?}");
        let e = f.compute(&audio).unwrap();
        assert!(e.data[63 * e.n_frames] > guard + 1.0);
    }
}
