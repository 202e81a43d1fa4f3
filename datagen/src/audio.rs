//! WAV input in any PCM or float format (mixed down to mono), sinc resampling, and 16-bit mono WAV output.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use rubato::{FftFixedIn, Resampler};

use crate::atomic::AtomicFile;

/// Mono audio as f32 samples in [-1, 1] with their sample rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
}

impl Audio {
    /// Duration in seconds.
    pub fn duration(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// An audio file that could not be read or written, with the file named in the message.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct AudioError {
    pub path: String,
    pub message: String,
}

impl AudioError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.display().to_string(),
            message: message.into(),
        }
    }
}

/// Reads a WAV file: PCM 8/16/24/32-bit or 32-bit float, any channel count (averaged to mono), any rate.
pub fn read_wav(path: &Path) -> Result<Audio, AudioError> {
    let mut reader = open_wav(path)?;
    let frames = reader.duration() as usize;
    let sample_rate = reader.spec().sample_rate;
    let samples = decode_frames(path, &mut reader, 0, frames)?;
    Ok(Audio {
        samples,
        sample_rate,
    })
}

/// The header facts of a WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavInfo {
    pub sample_rate: u32,
    pub channels: u16,
    /// Samples per channel.
    pub frames: u64,
}

impl WavInfo {
    pub fn duration(&self) -> f64 {
        self.frames as f64 / self.sample_rate as f64
    }
}

/// Reads only the header of a WAV file.
pub fn wav_info(path: &Path) -> Result<WavInfo, AudioError> {
    let reader = open_wav(path)?;
    let spec = reader.spec();
    Ok(WavInfo {
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        frames: reader.duration() as u64,
    })
}

/// Reads `count` frames from frame `start` (mixed to mono), without reading the rest of the file; past the
/// end, fewer frames come back.
pub fn read_wav_frames(path: &Path, start: u64, count: usize) -> Result<Audio, AudioError> {
    let mut reader = open_wav(path)?;
    let total = reader.duration() as u64;
    let start = start.min(total);
    reader
        .seek(start as u32)
        .map_err(|e| AudioError::new(path, format!("cannot seek: {e}")))?;
    let count = count.min((total - start) as usize);
    let sample_rate = reader.spec().sample_rate;
    let samples = decode_frames(path, &mut reader, start as usize, count)?;
    Ok(Audio {
        samples,
        sample_rate,
    })
}

fn open_wav(path: &Path) -> Result<hound::WavReader<BufReader<File>>, AudioError> {
    let file = File::open(path).map_err(|e| AudioError::new(path, format!("cannot open: {e}")))?;
    let reader = hound::WavReader::new(BufReader::new(file))
        .map_err(|e| AudioError::new(path, format!("not a readable WAV file: {e}")))?;
    let spec = reader.spec();
    if spec.channels == 0 {
        return Err(AudioError::new(path, "WAV header declares 0 channels"));
    }
    if spec.sample_rate == 0 {
        return Err(AudioError::new(
            path,
            "WAV header declares a sample rate of 0",
        ));
    }
    Ok(reader)
}

/// Decodes the next `frames` frames to mono f32; `first` is the index of the first frame (for messages).
fn decode_frames(
    path: &Path,
    reader: &mut hound::WavReader<BufReader<File>>,
    first: usize,
    frames: usize,
) -> Result<Vec<f32>, AudioError> {
    let spec = reader.spec();
    let channels = spec.channels as usize;
    let n = frames * channels;
    let bad = |e: hound::Error| AudioError::new(path, format!("corrupt WAV data: {e}"));
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader
            .samples::<f32>()
            .take(n)
            .collect::<Result<_, _>>()
            .map_err(bad)?,
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            reader
                .samples::<i32>()
                .take(n)
                .map(|s| s.map(|v| (v as f64 * scale) as f32))
                .collect::<Result<_, _>>()
                .map_err(bad)?
        }
        (format, bits) => {
            return Err(AudioError::new(
                path,
                format!("unsupported WAV sample format: {bits}-bit {format:?}"),
            ))
        }
    };
    if let Some(i) = interleaved.iter().position(|s| !s.is_finite()) {
        return Err(AudioError::new(
            path,
            format!("sample {} is not a finite number", first + i / channels),
        ));
    }
    Ok(if channels == 1 {
        interleaved
    } else {
        let inv = 1.0 / channels as f32;
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() * inv)
            .collect()
    })
}

/// Reads a WAV file and resamples it to `sample_rate`.
pub fn read_wav_at(path: &Path, sample_rate: u32) -> Result<Audio, AudioError> {
    let audio = read_wav(path)?;
    let samples = resample(&audio.samples, audio.sample_rate, sample_rate)
        .map_err(|e| AudioError::new(path, e))?;
    Ok(Audio {
        samples,
        sample_rate,
    })
}

/// Reads only the header of a WAV file and returns its duration in seconds.
pub fn wav_duration(path: &Path) -> Result<f64, AudioError> {
    Ok(wav_info(path)?.duration())
}

/// Number of output samples for `n` input samples converted from `from` Hz to `to` Hz (rounded up, as librosa).
pub fn resampled_len(n: usize, from: u32, to: u32) -> usize {
    ((n as u64 * to as u64).div_ceil(from as u64)) as usize
}

/// Resamples mono audio with rubato's synchronous resampler: a windowed-sinc anti-aliasing filter applied
/// by FFT, aligned so that output sample 0 is input time 0 (the filter delay is removed).
pub fn resample(input: &[f32], from: u32, to: u32) -> Result<Vec<f32>, String> {
    if from == 0 || to == 0 {
        return Err(format!("cannot resample from {from} Hz to {to} Hz"));
    }
    if from == to || input.is_empty() {
        return Ok(input.to_vec());
    }
    const CHUNK: usize = 1024;
    let mut resampler = FftFixedIn::<f32>::new(from as usize, to as usize, CHUNK, 2, 1)
        .map_err(|e| format!("cannot build a resampler from {from} Hz to {to} Hz: {e}"))?;
    let delay = resampler.output_delay();
    let wanted = resampled_len(input.len(), from, to);
    let mut out = Vec::with_capacity(wanted + delay + CHUNK * 2);
    let mut buf = resampler.output_buffer_allocate(true);
    let mut pos = 0;
    let err = |e: rubato::ResampleError| format!("resampling failed: {e}");
    while out.len() < wanted + delay {
        let need = resampler.input_frames_next();
        let (_, produced) = if pos + need <= input.len() {
            let r = resampler
                .process_into_buffer(&[&input[pos..pos + need]], &mut buf, None)
                .map_err(err)?;
            pos += need;
            r
        } else if pos < input.len() {
            let r = resampler
                .process_partial_into_buffer(Some(&[&input[pos..]]), &mut buf, None)
                .map_err(err)?;
            pos = input.len();
            r
        } else {
            resampler
                .process_partial_into_buffer(None::<&[&[f32]]>, &mut buf, None)
                .map_err(err)?
        };
        out.extend_from_slice(&buf[0][..produced]);
    }
    out.drain(..delay);
    out.truncate(wanted);
    Ok(out)
}

/// Writes 16-bit PCM mono WAV atomically: to a temporary name in the same folder, then renamed.
pub fn write_wav_i16(path: &Path, samples: &[i16], sample_rate: u32) -> Result<(), AudioError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let io = |e: std::io::Error| AudioError::new(path, format!("cannot write: {e}"));
    let mut file = AtomicFile::create(path).map_err(io)?;
    {
        let mut writer = hound::WavWriter::new(std::io::BufWriter::new(file.as_file_mut()), spec)
            .map_err(|e| AudioError::new(path, format!("cannot write: {e}")))?;
        let mut w = writer.get_i16_writer(samples.len() as u32);
        for &s in samples {
            w.write_sample(s);
        }
        w.flush()
            .map_err(|e| AudioError::new(path, format!("cannot write: {e}")))?;
        writer
            .finalize()
            .map_err(|e| AudioError::new(path, format!("cannot write: {e}")))?;
    }
    file.commit().map_err(io)
}

/// Converts f32 samples in [-1, 1] to 16-bit integers, rounding and clamping.
pub fn to_i16(samples: &[f32]) -> Vec<i16> {
    samples
        .iter()
        .map(|&s| (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_with(path: &Path, spec: hound::WavSpec, frames: &[Vec<f64>]) {
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for frame in frames {
            for &x in frame {
                match (spec.sample_format, spec.bits_per_sample) {
                    (hound::SampleFormat::Float, _) => w.write_sample(x as f32).unwrap(),
                    (_, bits) => {
                        let max = (1i64 << (bits - 1)) as f64;
                        w.write_sample((x * max).round().clamp(-max, max - 1.0) as i32)
                            .unwrap()
                    }
                }
            }
        }
        w.finalize().unwrap();
    }

    #[test]
    fn reads_every_supported_format_and_mixes_to_mono() {
        let dir = tempfile::tempdir().unwrap();
        let formats = [
            (hound::SampleFormat::Int, 8u16),
            (hound::SampleFormat::Int, 16),
            (hound::SampleFormat::Int, 24),
            (hound::SampleFormat::Int, 32),
            (hound::SampleFormat::Float, 32),
        ];
        for (format, bits) in formats {
            for channels in [1u16, 2, 3] {
                let spec = hound::WavSpec {
                    channels,
                    sample_rate: 8000 + channels as u32,
                    bits_per_sample: bits,
                    sample_format: format,
                };
                // Channel c carries (c+1)/4 of a ramp: the mono mix is the ramp times the mean factor.
                let frames: Vec<Vec<f64>> = (0..100)
                    .map(|i| {
                        let base = (i as f64 / 100.0) - 0.5;
                        (0..channels)
                            .map(|c| base * (c as f64 + 1.0) / 4.0)
                            .collect()
                    })
                    .collect();
                let path = dir.path().join(format!("{bits}-{format:?}-{channels}.wav"));
                write_with(&path, spec, &frames);
                let audio = read_wav(&path).unwrap();
                assert_eq!(audio.sample_rate, spec.sample_rate);
                assert_eq!(audio.samples.len(), 100);
                let tol = if bits == 8 { 1.0 / 64.0 } else { 1e-4 };
                for (i, frame) in frames.iter().enumerate() {
                    let want = frame.iter().sum::<f64>() / channels as f64;
                    let got = audio.samples[i] as f64;
                    assert!(
                        (got - want).abs() <= tol,
                        "{bits}-bit {format:?} x{channels}: sample {i} is {got}, want {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn frame_ranges_read_like_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stereo.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let frames: Vec<Vec<f64>> = (0..1000)
            .map(|i| vec![(i as f64 / 1000.0) - 0.5, 0.25])
            .collect();
        write_with(&path, spec, &frames);
        let whole = read_wav(&path).unwrap();
        let info = wav_info(&path).unwrap();
        assert_eq!(
            (info.frames, info.channels, info.sample_rate),
            (1000, 2, 8000)
        );
        let part = read_wav_frames(&path, 300, 200).unwrap();
        assert_eq!(part.samples, whole.samples[300..500]);
        let tail = read_wav_frames(&path, 900, 500).unwrap();
        assert_eq!(tail.samples, whole.samples[900..]);
        assert!(read_wav_frames(&path, 2000, 10).unwrap().samples.is_empty());
    }

    #[test]
    fn unreadable_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.wav");
        std::fs::write(&path, b"RIFF0000WAVEjunk").unwrap();
        let err = read_wav(&path).unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        let missing = dir.path().join("missing.wav");
        let err = read_wav(&missing).unwrap_err().to_string();
        assert!(
            err.contains("missing.wav") && err.contains("cannot open"),
            "{err}"
        );
    }

    #[test]
    fn non_finite_float_samples_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        write_with(&path, spec, &[vec![0.1], vec![f64::NAN], vec![0.2]]);
        let err = read_wav(&path).unwrap_err().to_string();
        assert!(err.contains("sample 1 is not a finite number"), "{err}");
    }

    /// Amplitude and phase of the frequency `freq` in `x` (a single-bin DFT).
    fn tone(x: &[f32], rate: u32, freq: f64) -> (f64, f64) {
        let (mut re, mut im) = (0.0f64, 0.0f64);
        for (n, &s) in x.iter().enumerate() {
            let w = 2.0 * std::f64::consts::PI * freq * n as f64 / rate as f64;
            re += s as f64 * w.cos();
            im -= s as f64 * w.sin();
        }
        let amp = 2.0 * (re * re + im * im).sqrt() / x.len() as f64;
        (amp, im.atan2(re))
    }

    #[test]
    fn resampling_keeps_frequency_level_and_timing() {
        for (from, to) in [
            (22050u32, 16000u32),
            (44100, 16000),
            (8000, 16000),
            (48000, 16000),
        ] {
            let freq = 1000.0;
            let n = from as usize * 2;
            let input: Vec<f32> = (0..n)
                .map(|i| {
                    (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / from as f64).sin())
                        as f32
                })
                .collect();
            let out = resample(&input, from, to).unwrap();
            assert_eq!(out.len(), resampled_len(n, from, to));
            // Look at the middle second, away from the edges.
            let mid = &out[to as usize / 2..to as usize / 2 + to as usize];
            let (amp, _) = tone(mid, to, freq);
            assert!((amp - 0.5).abs() < 0.005, "{from}->{to}: amplitude {amp}");
            let (off, _) = tone(mid, to, freq * 1.05);
            assert!(off < 0.01, "{from}->{to}: energy off the tone: {off}");
            // No delay: the resampled sine is in phase with the ideal one sampled at the new rate.
            let ideal: Vec<f32> = (0..out.len())
                .map(|i| {
                    (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / to as f64).sin()) as f32
                })
                .collect();
            let err = mid
                .iter()
                .zip(&ideal[to as usize / 2..])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            // Aligned to within one input sample (an offset of one input sample moves a 1 kHz sine by
            // at most 2*pi*f*A/from).
            let allowed = 0.01 + 2.0 * std::f64::consts::PI * freq * 0.5 / from as f64;
            assert!(
                (err as f64) < allowed,
                "{from}->{to}: max deviation from the ideal sine {err}"
            );
        }
    }

    #[test]
    fn resampling_removes_content_above_the_new_nyquist() {
        let (from, to) = (48000u32, 16000u32);
        let input: Vec<f32> = (0..from as usize)
            .map(|i| {
                (0.5 * (2.0 * std::f64::consts::PI * 12000.0 * i as f64 / from as f64).sin()) as f32
            })
            .collect();
        let out = resample(&input, from, to).unwrap();
        let rms = (out[2000..14000].iter().map(|x| x * x).sum::<f32>() / 12000.0).sqrt();
        assert!(
            rms < 0.001,
            "a 12 kHz tone should vanish at 16 kHz, rms {rms}"
        );
    }

    #[test]
    fn written_wav_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.wav");
        let samples: Vec<i16> = (0..1000).map(|i| (i * 31 % 2000 - 1000) as i16).collect();
        write_wav_i16(&path, &samples, 16000).unwrap();
        let audio = read_wav(&path).unwrap();
        assert_eq!(audio.sample_rate, 16000);
        let back: Vec<i16> = audio.samples.iter().map(|s| (s * 32768.0) as i16).collect();
        assert_eq!(back, samples);
        assert!((wav_duration(&path).unwrap() - 1000.0 / 16000.0).abs() < 1e-12);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
    }
}
