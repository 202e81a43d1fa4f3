//! Step 2 of code-switched synthesis: one sample's audio from its planned segments, with pauses and level norm.

use std::path::Path;

use crate::audio::{read_wav_at, AudioError};
use crate::cs::plan::PlannedSample;

/// How each segment's level is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Level {
    /// Peak-normalise to this amplitude on the int16 scale (NeMo's offline script: 15000).
    Peak(f32),
    /// RMS-normalise to this level in dBFS (NeMo's on-the-fly dataset: -25).
    RmsDb(f32),
}

/// Audio settings of the synthesis step. Defaults are those of NeMo's offline script.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioConfig {
    pub sample_rate: u32,
    pub level: Level,
    pub pause_start_ms: u32,
    pub pause_join_ms: u32,
    pub pause_end_ms: u32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            sample_rate: 16000,
            level: Level::Peak(15000.0),
            pause_start_ms: 20,
            pause_join_ms: 100,
            pause_end_ms: 20,
        }
    }
}

impl AudioConfig {
    fn pause(&self, ms: u32) -> usize {
        (ms as u64 * self.sample_rate as u64 / 1000) as usize
    }
}

/// A synthesized sample: 16-bit samples and each segment's start and end (seconds) inside them.
#[derive(Debug, Clone, PartialEq)]
pub struct Synthesized {
    pub samples: Vec<i16>,
    pub segment_times: Vec<[f64; 2]>,
}

/// Builds one sample: start pause, then each segment resampled, trimmed of exact zeros at both ends and
/// normalised, with a join pause between segments, then the end pause.
pub fn synthesize(sample: &PlannedSample, cfg: &AudioConfig) -> Result<Synthesized, AudioError> {
    let fs = cfg.sample_rate;
    let mut out: Vec<i16> = vec![0; cfg.pause(cfg.pause_start_ms)];
    let mut times = Vec::with_capacity(sample.paths.len());
    for (i, path) in sample.paths.iter().enumerate() {
        let path = Path::new(path);
        let audio = read_wav_at(path, fs)?;
        let x = trim_zeros(&audio.samples);
        if x.is_empty() {
            return Err(AudioError {
                path: path.display().to_string(),
                message: "the audio is silent (every sample is zero)".into(),
            });
        }
        let start = out.len();
        match cfg.level {
            Level::Peak(peak) => {
                let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                // NeMo's order of operations, then numpy's astype(int16): truncation toward zero.
                out.extend(x.iter().map(|v| (v / max * peak) as i16));
            }
            Level::RmsDb(db) => {
                let rms =
                    (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
                let gain = (10f64.powf(db as f64 / 20.0) / rms.max(0.01)) as f32;
                out.extend(
                    x.iter()
                        .map(|v| (v * gain * 32767.0).round().clamp(-32768.0, 32767.0) as i16),
                );
            }
        }
        times.push([start as f64 / fs as f64, out.len() as f64 / fs as f64]);
        if i + 1 < sample.paths.len() {
            out.resize(out.len() + cfg.pause(cfg.pause_join_ms), 0);
        }
    }
    out.resize(out.len() + cfg.pause(cfg.pause_end_ms), 0);
    Ok(Synthesized {
        samples: out,
        segment_times: times,
    })
}

/// Removes samples that are exactly 0.0 from both ends (numpy's `trim_zeros`).
pub fn trim_zeros(x: &[f32]) -> &[f32] {
    let Some(first) = x.iter().position(|&v| v != 0.0) else {
        return &[];
    };
    let last = x.iter().rposition(|&v| v != 0.0).unwrap_or(first);
    &x[first..=last]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::write_wav_i16;

    fn sample_from(paths: &[&Path]) -> PlannedSample {
        PlannedSample {
            lang_ids: paths.iter().map(|_| "en".to_string()).collect(),
            texts: paths.iter().map(|_| "x".to_string()).collect(),
            paths: paths.iter().map(|p| p.display().to_string()).collect(),
            durations: paths.iter().map(|_| 0.1).collect(),
            total_duration: 0.1 * paths.len() as f64,
            uid: 0,
        }
    }

    #[test]
    fn pauses_trimming_peaks_and_times() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.wav");
        let b = dir.path().join("b.wav");
        // a: 10 zeros, 100 samples of a ramp peaking at 1000, 5 zeros. b: 50 samples of -300.
        let mut sa = vec![0i16; 10];
        sa.extend((1..=100).map(|i| (i * 10) as i16));
        sa.extend([0; 5]);
        write_wav_i16(&a, &sa, 16000).unwrap();
        write_wav_i16(&b, &[-3000; 50], 16000).unwrap();
        let cfg = AudioConfig::default();
        let s = synthesize(&sample_from(&[&a, &b]), &cfg).unwrap();
        assert_eq!(s.samples.len(), 320 + 100 + 1600 + 50 + 320);
        assert!(s.samples[..320].iter().all(|&v| v == 0));
        assert!((s.samples[320] - 150).abs() <= 1); // 10/1000 * 15000
        assert_eq!(s.samples[419], 15000);
        assert!(s.samples[420..2020].iter().all(|&v| v == 0));
        assert!(s.samples[2020..2070].iter().all(|&v| v == -15000));
        let want = [[320.0, 420.0], [2020.0, 2070.0]];
        assert_eq!(s.segment_times.len(), 2);
        for (got, want) in s.segment_times.iter().zip(want) {
            assert!(
                (got[0] - want[0] / 16000.0).abs() < 1e-12
                    && (got[1] - want[1] / 16000.0).abs() < 1e-12
            );
        }

        let rms = AudioConfig {
            level: Level::RmsDb(-20.0),
            pause_start_ms: 0,
            pause_join_ms: 0,
            pause_end_ms: 0,
            ..cfg
        };
        let s = synthesize(&sample_from(&[&b]), &rms).unwrap();
        assert_eq!(s.samples.len(), 50);
        // -20 dBFS RMS of a constant signal is 0.1 of full scale.
        assert!(
            s.samples.iter().all(|&v| v == -3277),
            "{:?}",
            &s.samples[..3]
        );
    }

    #[test]
    fn silent_input_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let z = dir.path().join("zeros.wav");
        write_wav_i16(&z, &[0; 100], 16000).unwrap();
        let err = synthesize(&sample_from(&[&z]), &AudioConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("zeros.wav") && err.contains("silent"), "{err}");
    }

    #[test]
    fn inputs_are_resampled_to_the_output_rate() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.wav");
        let tone: Vec<i16> = (0..22050)
            .map(|i| (8000.0 * (i as f64 * 0.1).sin()) as i16 + 1)
            .collect();
        write_wav_i16(&a, &tone, 22050).unwrap();
        let cfg = AudioConfig {
            pause_start_ms: 0,
            pause_end_ms: 0,
            ..AudioConfig::default()
        };
        let s = synthesize(&sample_from(&[&a]), &cfg).unwrap();
        assert!(
            (s.samples.len() as i64 - 16000).abs() <= 1,
            "{}",
            s.samples.len()
        );
    }
}
