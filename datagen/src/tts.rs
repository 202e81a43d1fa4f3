//! Monolingual speech corpora from text with espeak-ng or flite: varied voices, speeds and pitches, seeded.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};

use crate::audio::{read_wav_at, to_i16, wav_duration, write_wav_i16};

/// The synthesizer program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// espeak-ng: voices such as `en-us`, `es`, `es-419+m3`; speed in words per minute, pitch 0–99.
    EspeakNg,
    /// flite: English voices such as `slt`, `kal`, `awb`, `rms`; speed in words per minute (175 is normal).
    Flite,
}

impl Engine {
    pub fn program(&self) -> &'static str {
        match self {
            Engine::EspeakNg => "espeak-ng",
            Engine::Flite => "flite",
        }
    }

    /// Checks that the program runs, with install instructions when it does not.
    pub fn check_installed(&self) -> Result<()> {
        let prog = self.program();
        match Command::new(prog)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{prog} is not installed; on Debian or Ubuntu install it with `apt-get install {prog}` \
                 (or see ../shared/tools/tts-packages.sh)"
            ),
            Err(e) => bail!("cannot run {prog}: {e}"),
        }
    }
}

/// A TTS corpus job.
#[derive(Debug, Clone)]
pub struct TtsJob {
    /// One sentence per line; blank lines are not sentences.
    pub text_file: PathBuf,
    pub lang: String,
    pub out_dir: PathBuf,
    pub engine: Engine,
    /// Drawn per utterance.
    pub voices: Vec<String>,
    /// espeak-ng voice variants (`m1`..`m7`, `f1`..`f5`, ...) drawn per utterance and appended as `voice+variant`;
    /// empty: voices as given.
    pub variants: Vec<String>,
    /// Words per minute, drawn per utterance.
    pub speeds: Vec<u32>,
    /// espeak-ng pitch (0–99), drawn per utterance; must be empty for flite.
    pub pitches: Vec<u32>,
    /// espeak-ng amplitude (0–200); 90 avoids clipping.
    pub amplitude: u32,
    pub sample_rate: u32,
    pub seed: u64,
    pub progress: bool,
}

/// What a TTS run did.
#[derive(Debug, Clone, Serialize)]
pub struct TtsSummary {
    pub manifest: PathBuf,
    pub utterances: usize,
    pub synthesized: usize,
    pub resumed: usize,
    pub hours: f64,
    pub seconds: f64,
}

struct Utterance {
    line: usize,
    text: String,
    name: String,
    voice: String,
    speed: u32,
    pitch: Option<u32>,
}

/// Reads the sentences, synthesizes each (in parallel), and writes `out_dir/manifest.json` with `lang`.
/// WAVs already in `out_dir/audio` from an earlier run of the same job are kept.
pub fn run(job: &TtsJob) -> Result<TtsSummary> {
    let started = std::time::Instant::now();
    if job.voices.is_empty() || job.speeds.is_empty() {
        bail!("give at least one voice and one speed");
    }
    if job.engine == Engine::Flite && !job.pitches.is_empty() {
        bail!("flite has no pitch setting: leave out --pitches");
    }
    if job.engine == Engine::Flite && !job.variants.is_empty() {
        bail!("flite has no voice variants: leave out --variants");
    }
    if job.engine == Engine::EspeakNg && job.pitches.is_empty() {
        bail!("give at least one pitch for espeak-ng");
    }
    if let Some(p) = job.pitches.iter().find(|p| **p > 99) {
        bail!("espeak-ng pitch goes from 0 to 99, got {p}");
    }
    if let Some(s) = job.speeds.iter().find(|s| **s < 80 || **s > 500) {
        bail!("speed is in words per minute between 80 and 500, got {s}");
    }
    let content = std::fs::read_to_string(&job.text_file)
        .with_context(|| format!("{}: cannot read", job.text_file.display()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(job.seed);
    let utterances: Vec<Utterance> = content
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .enumerate()
        .map(|(k, (i, l))| Utterance {
            line: i + 1,
            text: l.trim().to_string(),
            name: format!("{}_{:06}", job.lang, k + 1),
            voice: {
                let voice = &job.voices[rng.random_range(0..job.voices.len())];
                if job.variants.is_empty() {
                    voice.clone()
                } else {
                    format!(
                        "{voice}+{}",
                        job.variants[rng.random_range(0..job.variants.len())]
                    )
                }
            },
            speed: job.speeds[rng.random_range(0..job.speeds.len())],
            pitch: (!job.pitches.is_empty())
                .then(|| job.pitches[rng.random_range(0..job.pitches.len())]),
        })
        .collect();
    if utterances.is_empty() {
        bail!("{}: no sentences in the file", job.text_file.display());
    }
    job.engine.check_installed()?;
    let audio_dir = job.out_dir.join("audio");
    std::fs::create_dir_all(&audio_dir)
        .with_context(|| format!("{}: cannot create the folder", audio_dir.display()))?;

    let bar = crate::progress::items_bar(utterances.len() as u64, job.progress, "utterances");
    let results: Vec<Result<(Value, bool)>> = utterances
        .par_iter()
        .map(|u| {
            let wav = audio_dir.join(format!("{}.wav", u.name));
            let (duration, fresh) = if wav.exists() {
                (wav_duration(&wav)?, false)
            } else {
                (synthesize_one(job, u, &wav)?, true)
            };
            bar.inc(1);
            let mut line = json!({
                "audio_filepath": format!("audio/{}.wav", u.name),
                "duration": duration,
                "text": u.text,
                "lang": job.lang,
                "engine": job.engine.program(),
                "voice": u.voice,
                "speed": u.speed,
            });
            if let Some(p) = u.pitch {
                line["pitch"] = json!(p);
            }
            Ok((line, fresh))
        })
        .collect();
    bar.finish_and_clear();
    let mut summary = TtsSummary {
        manifest: job.out_dir.join("manifest.json"),
        utterances: utterances.len(),
        synthesized: 0,
        resumed: 0,
        hours: 0.0,
        seconds: 0.0,
    };
    let mut text = String::new();
    for r in results {
        let (line, fresh) = r?;
        if fresh {
            summary.synthesized += 1;
        } else {
            summary.resumed += 1;
        }
        summary.hours += line["duration"].as_f64().unwrap_or(0.0) / 3600.0;
        text.push_str(&serde_json::to_string(&line)?);
        text.push('\n');
    }
    crate::atomic::write_atomic(&summary.manifest, text.as_bytes())
        .with_context(|| format!("{}: cannot write", summary.manifest.display()))?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Runs the engine for one sentence, resamples its output and writes the WAV; returns its duration.
fn synthesize_one(job: &TtsJob, u: &Utterance, wav: &Path) -> Result<f64> {
    let raw = tempfile::Builder::new()
        .prefix(&format!(".{}.raw.", u.name))
        .suffix(".wav")
        .tempfile_in(wav.parent().unwrap_or(Path::new(".")))?;
    let raw_path = raw.path().to_path_buf();
    let mut cmd = Command::new(job.engine.program());
    match job.engine {
        Engine::EspeakNg => {
            cmd.args(["-v", &u.voice, "-s", &u.speed.to_string()])
                .args(["-p", &u.pitch.unwrap_or(50).to_string()])
                .args(["-a", &job.amplitude.to_string(), "-w"])
                .arg(&raw_path)
                .arg("--stdin");
        }
        Engine::Flite => {
            let stretch = 175.0 / u.speed as f64;
            cmd.args(["-voice", &u.voice])
                .args(["--setf", &format!("duration_stretch={stretch:.4}")])
                .args(["-o"])
                .arg(&raw_path)
                .args(["-t", &u.text]);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", job.engine.program()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    if job.engine == Engine::EspeakNg {
        stdin.write_all(u.text.as_bytes())?;
    }
    drop(stdin);
    let out = child.wait_with_output()?;
    let where_ = format!("{}:{}", job.text_file.display(), u.line);
    if !out.status.success() {
        bail!(
            "{where_}: {} failed with voice {:?}: {}",
            job.engine.program(),
            u.voice,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let audio = read_wav_at(&raw_path, job.sample_rate)
        .with_context(|| format!("{where_}: {} wrote no usable audio", job.engine.program()))?;
    if audio.samples.iter().all(|&s| s == 0.0) {
        bail!(
            "{where_}: {} produced silence with voice {:?} (is the voice installed?)",
            job.engine.program(),
            u.voice
        );
    }
    write_wav_i16(wav, &to_i16(&audio.samples), job.sample_rate)?;
    Ok(audio.duration())
}
