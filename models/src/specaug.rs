//! SpecAugment as NeMo's `SpectrogramAugmentation`: frequency and time masks plus SpecCutout rectangles, seeded.

use std::ops::Range;

use candle_core::{DType, Tensor};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Errors of SpecAugment: a bad config value (naming the key), or input it cannot mask.
#[derive(Debug, thiserror::Error)]
pub enum SpecAugError {
    /// A configuration value NeMo rejects or that cannot work with the input.
    #[error("spec_augment config `{key}`: {msg}")]
    Config {
        /// The NeMo config key.
        key: &'static str,
        /// What is wrong with it.
        msg: String,
    },
    /// The config could not be parsed (unknown key, wrong type).
    #[error("spec_augment config: {0}")]
    Parse(#[from] serde_json::Error),
    /// Input of the wrong shape.
    #[error("spec_augment input: {0}")]
    Input(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn cfg_err(key: &'static str, msg: impl Into<String>) -> SpecAugError {
    SpecAugError::Config {
        key,
        msg: msg.into(),
    }
}

/// `time_width`: an integer number of frames, or a float fraction in [0, 1] of each utterance's length.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TimeWidth {
    /// At most this many frames per mask (an integer in the config).
    Frames(usize),
    /// At most this fraction of the utterance's valid length per mask (a float in the config).
    Fraction(f64),
}

/// NeMo's `SpectrogramAugmentation` config (keys and defaults are NeMo's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpecAugConfig {
    /// Hydra target; must name `SpectrogramAugmentation` when present.
    #[serde(rename = "_target_", skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Number of frequency masks per utterance.
    pub freq_masks: usize,
    /// Number of time masks per utterance.
    pub time_masks: usize,
    /// Maximum width of a frequency mask (bins).
    pub freq_width: usize,
    /// Maximum width of a time mask.
    pub time_width: TimeWidth,
    /// Number of SpecCutout rectangles per utterance.
    pub rect_masks: usize,
    /// Maximum time extent of a rectangle.
    pub rect_time: usize,
    /// Maximum frequency extent of a rectangle.
    pub rect_freq: usize,
    /// Value written into the frequency and time masks (rectangles are always 0, as in NeMo).
    pub mask_value: f64,
    /// NeMo's vectorised masks (default) or, when false, its legacy per-utterance loop.
    pub use_vectorized_spec_augment: bool,
    /// Accepted and ignored: NeMo's numba kernel is a CUDA implementation of the same masks.
    pub use_numba_spec_augment: bool,
}

impl Default for SpecAugConfig {
    fn default() -> Self {
        Self {
            target: None,
            freq_masks: 0,
            time_masks: 0,
            freq_width: 10,
            time_width: TimeWidth::Frames(10),
            rect_masks: 0,
            rect_time: 5,
            rect_freq: 20,
            mask_value: 0.0,
            use_vectorized_spec_augment: true,
            use_numba_spec_augment: false,
        }
    }
}

impl SpecAugConfig {
    /// Parses a NeMo `spec_augment:` block given as JSON text.
    pub fn from_json_str(text: &str) -> Result<Self, SpecAugError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Parses a NeMo `spec_augment:` block given as a JSON value.
    pub fn from_json_value(value: serde_json::Value) -> Result<Self, SpecAugError> {
        Ok(serde_json::from_value(value)?)
    }
}

/// The masks drawn for one utterance: rectangles (set to 0), then time and frequency bands (set to
/// `mask_value`). Ranges are clipped to the spectrogram.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Masks {
    /// SpecCutout rectangles: (frequency rows, time columns).
    pub rects: Vec<(Range<usize>, Range<usize>)>,
    /// Time bands (columns), one per time mask (possibly empty).
    pub time: Vec<Range<usize>>,
    /// Frequency bands (rows), one per frequency mask (possibly empty).
    pub freq: Vec<Range<usize>>,
}

/// A validated SpecAugment.
///
/// [`SpecAugConfig`] is NeMo's `spec_augment:` block (same keys and defaults). The masks follow NeMo's default
/// vectorised `SpecAugment` (widths `floor(u * width)`, time masks inside each utterance's valid length, a
/// fractional `time_width` scaled by that length) or, with `use_vectorized_spec_augment: false`, its legacy
/// loop (`randint` bounds, inclusive widths). The draws come from a caller-seeded RNG, so the masks are
/// NeMo's distribution, not NeMo's random numbers.
#[derive(Debug, Clone)]
pub struct SpecAugment {
    config: SpecAugConfig,
    mask_value: f32,
}

/// Python's `random.randint(lo, hi)`: inclusive, an error when empty.
fn randint(
    rng: &mut dyn RngCore,
    lo: i64,
    hi: i64,
    key: &'static str,
) -> Result<i64, SpecAugError> {
    if hi < lo {
        return Err(cfg_err(
            key,
            format!("leaves no room: randint({lo}, {hi}) (the spectrogram is too small)"),
        ));
    }
    Ok(rng.random_range(lo..=hi))
}

/// `[start, start + width)` clipped to `[0, n)` as Python slicing / NeMo's index comparison do
/// (`start` may be negative, from truncation toward zero).
fn clip(start: i64, width: i64, n: usize) -> Range<usize> {
    let s = start.clamp(0, n as i64) as usize;
    let e = (start + width).clamp(0, n as i64) as usize;
    s..e.max(s)
}

impl SpecAugment {
    /// Validates a config.
    pub fn new(config: &SpecAugConfig) -> Result<Self, SpecAugError> {
        if let Some(t) = &config.target {
            if !t.ends_with("SpectrogramAugmentation") {
                return Err(cfg_err(
                    "_target_",
                    format!("`{t}` is not SpectrogramAugmentation"),
                ));
            }
        }
        if let TimeWidth::Fraction(f) = config.time_width {
            if !(0.0..=1.0).contains(&f) {
                return Err(cfg_err(
                    "time_width",
                    format!("{f}: a float time_width must be in [0, 1]"),
                ));
            }
        }
        if !config.mask_value.is_finite() {
            return Err(cfg_err("mask_value", "must be finite"));
        }
        Ok(Self {
            config: config.clone(),
            mask_value: config.mask_value as f32,
        })
    }

    /// The config.
    pub fn config(&self) -> &SpecAugConfig {
        &self.config
    }

    /// True when the config masks nothing.
    pub fn is_identity(&self) -> bool {
        let c = &self.config;
        c.freq_masks == 0 && c.time_masks == 0 && c.rect_masks == 0
    }

    /// Draws the masks for one `[n_freq, n_frames]` spectrogram whose first `length` frames are valid.
    pub fn draw(
        &self,
        n_freq: usize,
        n_frames: usize,
        length: usize,
        rng: &mut dyn RngCore,
    ) -> Result<Masks, SpecAugError> {
        let c = &self.config;
        let (f, t, len) = (n_freq as i64, n_frames as i64, length.min(n_frames) as i64);
        let mut m = Masks::default();
        // SpecCutout (NeMo applies it first, over the whole padded spectrogram).
        for _ in 0..c.rect_masks {
            let x = randint(rng, 0, f - c.rect_freq as i64, "rect_freq")?;
            let y = randint(rng, 0, t - c.rect_time as i64, "rect_time")?;
            let wx = randint(rng, 0, c.rect_freq as i64, "rect_freq")?;
            let wy = randint(rng, 0, c.rect_time as i64, "rect_time")?;
            m.rects.push((clip(x, wx, n_freq), clip(y, wy, n_frames)));
        }
        if c.freq_masks + c.time_masks == 0 {
            return Ok(m);
        }
        if c.use_vectorized_spec_augment {
            // torch.rand (float32) * width, .long(); start = .long() of rand * (extent - width).
            let max_w = match c.time_width {
                TimeWidth::Frames(w) => w as f32,
                TimeWidth::Fraction(p) => ((p * len as f64) as f32).min(n_frames as f32),
            };
            for _ in 0..c.time_masks {
                let w = (rng.random::<f32>() * max_w) as i64;
                let s = (rng.random::<f32>() * (len - w) as f32) as i64;
                m.time.push(clip(s, w, n_frames));
            }
            for _ in 0..c.freq_masks {
                let w = (rng.random::<f32>() * c.freq_width as f32) as i64;
                let s = (rng.random::<f32>() * (f - w) as f32) as i64;
                m.freq.push(clip(s, w, n_freq));
            }
        } else {
            let fw = c.freq_width as i64;
            for _ in 0..c.freq_masks {
                let s = randint(rng, 0, f - fw, "freq_width")?;
                let w = randint(rng, 0, fw, "freq_width")?;
                m.freq.push(clip(s, w, n_freq));
            }
            let max_w = match c.time_width {
                TimeWidth::Frames(w) => w as i64,
                TimeWidth::Fraction(p) => 1.max((len as f64 * p) as i64),
            };
            let upper = 1.max(len - max_w);
            for _ in 0..c.time_masks {
                let s = randint(rng, 0, upper, "time_width")?;
                let w = randint(rng, 0, max_w, "time_width")?;
                m.time.push(clip(s, w, n_frames));
            }
        }
        Ok(m)
    }

    /// Writes `masks` into a row-major `[n_freq, n_frames]` spectrogram.
    pub fn apply_masks(&self, spec: &mut [f32], n_frames: usize, masks: &Masks) {
        for (rows, cols) in &masks.rects {
            for r in rows.clone() {
                spec[r * n_frames + cols.start..r * n_frames + cols.end].fill(0.0);
            }
        }
        for row in spec.chunks_mut(n_frames) {
            for cols in &masks.time {
                row[cols.clone()].fill(self.mask_value);
            }
        }
        for rows in &masks.freq {
            spec[rows.start * n_frames..rows.end * n_frames].fill(self.mask_value);
        }
    }

    /// Augments one row-major `[n_freq, n_frames]` spectrogram in place (valid frames: `length`).
    pub fn apply(
        &self,
        spec: &mut [f32],
        n_freq: usize,
        n_frames: usize,
        length: usize,
        rng: &mut dyn RngCore,
    ) -> Result<(), SpecAugError> {
        if spec.len() != n_freq * n_frames {
            return Err(SpecAugError::Input(format!(
                "{} values for a [{n_freq}, {n_frames}] spectrogram",
                spec.len()
            )));
        }
        if spec.is_empty() {
            return Ok(());
        }
        let masks = self.draw(n_freq, n_frames, length, rng)?;
        self.apply_masks(spec, n_frames, &masks);
        Ok(())
    }

    /// Augments a `[B, F, T]` batch; utterance `i` draws from ChaCha8 seeded with `seed`, stream `i`.
    pub fn apply_batch(
        &self,
        x: &Tensor,
        lengths: &[usize],
        seed: u64,
    ) -> Result<Tensor, SpecAugError> {
        let (b, f, t) = x.dims3()?;
        if lengths.len() != b {
            return Err(SpecAugError::Input(format!(
                "{} lengths for a batch of {b}",
                lengths.len()
            )));
        }
        if self.is_identity() || b * f * t == 0 {
            return Ok(x.clone());
        }
        let dtype = x.dtype();
        let mut data = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        data.par_chunks_mut(f * t)
            .zip(lengths.par_iter())
            .enumerate()
            .try_for_each(|(i, (spec, &len))| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(i as u64);
                self.apply(spec, f, t, len, &mut rng)
            })?;
        Ok(Tensor::from_vec(data, (b, f, t), x.device())?.to_dtype(dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn aug(json: &str) -> SpecAugment {
        SpecAugment::new(&SpecAugConfig::from_json_str(json).unwrap()).unwrap()
    }

    #[test]
    fn config_keys_and_time_width_types() {
        let c = SpecAugConfig::from_json_str(
            r#"{"_target_": "nemo.collections.asr.modules.SpectrogramAugmentation",
                "freq_masks": 2, "time_masks": 10, "freq_width": 27, "time_width": 0.05}"#,
        )
        .unwrap();
        assert_eq!(c.time_width, TimeWidth::Fraction(0.05));
        SpecAugment::new(&c).unwrap();
        let c = SpecAugConfig::from_json_str(r#"{"time_width": 10}"#).unwrap();
        assert_eq!(c.time_width, TimeWidth::Frames(10));
        let c = SpecAugConfig::from_json_str(r#"{"time_width": 1.0}"#).unwrap();
        assert_eq!(c.time_width, TimeWidth::Fraction(1.0));
        let e = SpecAugConfig::from_json_str(r#"{"freq_mask": 2}"#).unwrap_err();
        assert!(e.to_string().contains("freq_mask"), "{e}");
        let c = SpecAugConfig::from_json_str(r#"{"time_width": 1.5}"#).unwrap();
        let e = SpecAugment::new(&c).unwrap_err().to_string();
        assert!(e.contains("`time_width`"), "{e}");
    }

    #[test]
    fn vectorised_masks_respect_counts_widths_and_length() {
        let a = aug(r#"{"freq_masks": 2, "time_masks": 10, "freq_width": 27, "time_width": 0.05}"#);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (mut max_tw, mut max_fw) = (0, 0);
        for len in [1usize, 7, 120, 400] {
            for _ in 0..500 {
                let m = a.draw(80, 400, len, &mut rng).unwrap();
                assert_eq!((m.freq.len(), m.time.len(), m.rects.len()), (2, 10, 0));
                let limit = (0.05 * len as f64) as usize;
                for r in &m.time {
                    // floor(u * W) < W, inside the valid frames
                    assert!(
                        r.len() <= limit.saturating_sub(1) && r.end <= len,
                        "{r:?} {len}"
                    );
                    max_tw = max_tw.max(r.len());
                }
                for r in &m.freq {
                    assert!(r.len() < 27 && r.end <= 80, "{r:?}");
                    max_fw = max_fw.max(r.len());
                }
            }
        }
        assert_eq!((max_tw, max_fw), (19, 26));
    }

    #[test]
    fn legacy_masks_use_inclusive_randint() {
        let a = aug(
            r#"{"freq_masks": 1, "time_masks": 1, "freq_width": 5, "time_width": 4,
                "use_vectorized_spec_augment": false}"#,
        );
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (mut fw, mut tw) = (0, 0);
        for _ in 0..2000 {
            let m = a.draw(20, 50, 30, &mut rng).unwrap();
            assert!(m.freq[0].start <= 15 && m.freq[0].len() <= 5);
            assert!(m.time[0].start <= 26 && m.time[0].len() <= 4);
            fw = fw.max(m.freq[0].len());
            tw = tw.max(m.time[0].len());
        }
        assert_eq!((fw, tw), (5, 4));
        // randint(0, F - freq_width) with freq_width > F: NeMo's ValueError, here an error naming the key.
        let e = aug(r#"{"freq_masks": 1, "freq_width": 30, "use_vectorized_spec_augment": false}"#)
            .draw(20, 50, 30, &mut rng)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`freq_width`"), "{e}");
    }

    #[test]
    fn apply_writes_exactly_the_drawn_masks() {
        let a = aug(
            r#"{"freq_masks": 2, "time_masks": 3, "freq_width": 6, "time_width": 8,
                "rect_masks": 2, "rect_freq": 4, "rect_time": 5, "mask_value": -7.0}"#,
        );
        let (f, t, len) = (16, 40, 33);
        let masks = a
            .draw(f, t, len, &mut ChaCha8Rng::seed_from_u64(3))
            .unwrap();
        assert_eq!(masks.rects.len(), 2);
        let mut spec: Vec<f32> = (0..f * t).map(|i| i as f32 + 1.0).collect();
        a.apply(&mut spec, f, t, len, &mut ChaCha8Rng::seed_from_u64(3))
            .unwrap();
        for r in 0..f {
            for c in 0..t {
                let banded = masks.freq.iter().any(|x| x.contains(&r))
                    || masks.time.iter().any(|x| x.contains(&c));
                let rect = masks
                    .rects
                    .iter()
                    .any(|(x, y)| x.contains(&r) && y.contains(&c));
                let want = if banded {
                    -7.0
                } else if rect {
                    0.0
                } else {
                    (r * t + c) as f32 + 1.0
                };
                assert_eq!(spec[r * t + c], want, "({r}, {c})");
            }
        }
    }

    #[test]
    fn batch_is_seeded_and_leaves_padding_alone() {
        let a = aug(r#"{"freq_masks": 2, "time_masks": 4, "freq_width": 10, "time_width": 0.2}"#);
        let (b, f, t) = (3, 12, 30);
        let x = Tensor::ones((b, f, t), DType::F32, &Device::Cpu).unwrap();
        let lengths = [30, 17, 5];
        let y1 = a.apply_batch(&x, &lengths, 11).unwrap();
        let y2 = a.apply_batch(&x, &lengths, 11).unwrap();
        let (v1, v2) = (
            y1.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            y2.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(v1, v2);
        assert!(v1.contains(&0.0));
        // Time masks stay inside the valid frames: a column beyond the length is masked only in the rows a
        // frequency mask covers, i.e. the same rows for every such column.
        for (i, &len) in lengths.iter().enumerate() {
            let utt = &v1[i * f * t..(i + 1) * f * t];
            for c in len..t {
                for r in 0..f {
                    assert_eq!(utt[r * t + c], utt[r * t + t - 1], "utt {i} ({r}, {c})");
                }
            }
        }
        assert!(a.apply_batch(&x, &[1, 2], 0).is_err());
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        a.apply(&mut [], 12, 0, 0, &mut rng).unwrap();
        assert!(a.apply(&mut [0.0; 5], 12, 30, 5, &mut rng).is_err());
        let id = aug("{}");
        assert!(id.is_identity());
        let y = id.apply_batch(&x, &lengths, 0).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0; b * f * t]
        );
    }
}
