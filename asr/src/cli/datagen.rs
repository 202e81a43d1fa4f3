//! `mezcla datagen`: code-switched mixes (`cs`) and TTS corpora (`tts`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use mezcla_datagen::cs::{self, plan::PlanConfig, synth, CsJob, Shard, Step};
use mezcla_datagen::tts::{self, Engine, TtsJob};

#[derive(Debug, Args)]
pub struct DatagenArgs {
    #[command(subcommand)]
    pub command: DatagenCommand,
}

#[derive(Debug, Subcommand)]
pub enum DatagenCommand {
    /// Code-switched samples from monolingual manifests (NeMo's offline method: plan, then audio).
    Cs(CsArgs),
    /// A monolingual corpus from a text file, synthesized with espeak-ng or flite.
    Tts(TtsArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StepArg {
    /// Draw the samples and write the plan only (NeMo's intermediate manifest).
    Plan,
    /// Synthesize the audio of an existing plan (`--plan`, default OUT/plan.json).
    Audio,
    /// Both steps.
    All,
}

#[derive(Debug, Args)]
pub struct CsArgs {
    /// A monolingual NeMo manifest with its language, as LANG=PATH; repeat for each language.
    #[arg(long = "manifest", value_name = "LANG=PATH")]
    pub manifests: Vec<String>,
    /// Output folder: audio/<uid>.wav, manifest.json and plan.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Hours of audio to produce (summed input durations, as NeMo counts).
    #[arg(long, default_value_t = 1.0)]
    pub hours: f64,
    /// Random seed: the same seed and inputs give identical output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep adding segments until a sample is at least this long (seconds).
    #[arg(long, default_value_t = 16.0)]
    pub min_duration: f64,
    /// Never let a sample pass this length (seconds).
    #[arg(long, default_value_t = 19.0)]
    pub max_duration: f64,
    /// Languages to mix, in order (comma-separated); default: every --manifest in the order given.
    #[arg(long, value_delimiter = ',')]
    pub languages: Vec<String>,
    /// Probability of a language per segment, as LANG=P; give all or none (default: equal).
    #[arg(long = "prob", value_name = "LANG=P")]
    pub probs: Vec<String>,
    /// Probability that a sample is a single monolingual utterance (NeMo on-the-fly's min_monolingual).
    #[arg(long, default_value_t = 0.0)]
    pub min_monolingual: f64,
    /// After the first segment, draw among languages not yet used in the sample (NeMo on-the-fly's rule).
    #[arg(long)]
    pub prefer_unused: bool,
    /// Output sample rate; inputs are resampled to it.
    #[arg(long, default_value_t = 16000)]
    pub sample_rate: u32,
    /// Peak-normalise each segment to this int16 amplitude.
    #[arg(long, default_value_t = 15000.0, conflicts_with = "db_norm")]
    pub peak: f32,
    /// RMS-normalise each segment to DB dBFS instead of peak normalisation (default level: -25).
    #[arg(long, value_name = "DB", num_args = 0..=1, default_missing_value = "-25",
          allow_negative_numbers = true)]
    pub db_norm: Option<f32>,
    /// Silence at the start of a sample (ms).
    #[arg(long, default_value_t = 20)]
    pub pause_start: u32,
    /// Silence between segments (ms).
    #[arg(long, default_value_t = 100)]
    pub pause_join: u32,
    /// Silence at the end of a sample (ms).
    #[arg(long, default_value_t = 20)]
    pub pause_end: u32,
    /// Which step to run.
    #[arg(long, value_enum, default_value_t = StepArg::All)]
    pub step: StepArg,
    /// The plan file to write (step plan) or read (step audio); default OUT/plan.json.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Produce only part K of N (samples with uid % N == K-1), for splitting a job across machines.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EngineArg {
    EspeakNg,
    Flite,
}

#[derive(Debug, Args)]
pub struct TtsArgs {
    /// Text file with one sentence per line.
    #[arg(long)]
    pub text: PathBuf,
    /// Language id written to the manifest (`lang`) and used in file names.
    #[arg(long)]
    pub lang: String,
    /// Output folder: audio/<lang>_<n>.wav and manifest.json.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = EngineArg::EspeakNg)]
    pub engine: EngineArg,
    /// Voices drawn per utterance (comma-separated), e.g. en-us,en-us+m3,en+f2 or slt,kal,awb,rms for flite.
    #[arg(long, value_delimiter = ',', required = true)]
    pub voices: Vec<String>,
    /// espeak-ng variants drawn per utterance and added to the voice as VOICE+VARIANT (e.g. m1,m3,f2,f4).
    #[arg(long, value_delimiter = ',')]
    pub variants: Vec<String>,
    /// Speeds in words per minute drawn per utterance.
    #[arg(long, value_delimiter = ',', default_value = "150,175")]
    pub speeds: Vec<u32>,
    /// espeak-ng pitches (0-99) drawn per utterance (default 40,50,60; not for flite).
    #[arg(long, value_delimiter = ',')]
    pub pitches: Option<Vec<u32>>,
    /// espeak-ng amplitude; 90 avoids clipping.
    #[arg(long, default_value_t = 90)]
    pub amplitude: u32,
    #[arg(long, default_value_t = 16000)]
    pub sample_rate: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DatagenArgs) -> Result<()> {
    match args.command {
        DatagenCommand::Cs(a) => run_cs(a),
        DatagenCommand::Tts(a) => run_tts(a),
    }
}

fn set_threads(jobs: Option<usize>) -> Result<()> {
    if let Some(n) = jobs {
        if n == 0 {
            bail!("--jobs must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot start the worker threads")?;
    }
    Ok(())
}

fn split_pair(s: &str, what: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
            Ok((k.trim().to_string(), v.trim().to_string()))
        }
        _ => bail!("{what} takes LANG=VALUE, got {s:?}"),
    }
}

fn run_cs(a: CsArgs) -> Result<()> {
    set_threads(a.jobs)?;
    let step = match a.step {
        StepArg::Plan => Step::Plan,
        StepArg::Audio => Step::Audio,
        StepArg::All => Step::All,
    };
    let mut given = Vec::new();
    for m in &a.manifests {
        let (lang, path) = split_pair(m, "--manifest")?;
        given.push((lang, PathBuf::from(path)));
    }
    let inputs: Vec<(String, PathBuf)> = if a.languages.is_empty() {
        given
    } else {
        a.languages
            .iter()
            .map(|l| {
                given
                    .iter()
                    .find(|(g, _)| g == l)
                    .cloned()
                    .with_context(|| {
                        format!("--languages names {l:?} but no --manifest {l}=PATH is given")
                    })
            })
            .collect::<Result<_>>()?
    };
    if step != Step::Audio && inputs.is_empty() {
        bail!("give the monolingual manifests as --manifest LANG=PATH (at least one)");
    }
    let mut plan = PlanConfig::nemo_offline(inputs.len().max(1));
    plan.hours = a.hours;
    plan.seed = a.seed;
    plan.min_duration = a.min_duration;
    plan.max_duration = a.max_duration;
    plan.min_monolingual = a.min_monolingual;
    plan.prefer_unused = a.prefer_unused;
    if !a.probs.is_empty() {
        let mut probs = vec![None; inputs.len()];
        for p in &a.probs {
            let (lang, v) = split_pair(p, "--prob")?;
            let i = inputs
                .iter()
                .position(|(l, _)| *l == lang)
                .with_context(|| {
                    format!("--prob names {lang:?}, which is not one of the languages")
                })?;
            probs[i] = Some(
                v.parse::<f64>()
                    .with_context(|| format!("--prob {lang}: {v:?} is not a number"))?,
            );
        }
        plan.probs = probs
            .iter()
            .zip(&inputs)
            .map(|(p, (l, _))| p.with_context(|| format!("--prob is missing for {l}")))
            .collect::<Result<_>>()?;
    }
    let audio = synth::AudioConfig {
        sample_rate: a.sample_rate,
        level: match a.db_norm {
            Some(db) => synth::Level::RmsDb(db),
            None => synth::Level::Peak(a.peak),
        },
        pause_start_ms: a.pause_start,
        pause_join_ms: a.pause_join,
        pause_end_ms: a.pause_end,
    };
    if a.sample_rate < 1000 {
        bail!(
            "--sample-rate must be at least 1000 Hz, got {}",
            a.sample_rate
        );
    }
    if !(a.peak > 0.0 && a.peak <= 32767.0) {
        bail!(
            "--peak is an int16 amplitude between 1 and 32767, got {}",
            a.peak
        );
    }
    let job = CsJob {
        inputs,
        plan,
        audio,
        out_dir: a.out,
        step,
        plan_path: a.plan,
        shard: a.shard,
        progress: !a.json,
    };
    let summary = cs::run(&job)?;
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else if let Some(m) = &summary.manifest {
        println!(
            "{} samples, {:.3} h of audio ({} made, {} kept from an earlier run) in {:.1} s: {}",
            summary.synthesized + summary.resumed,
            summary.hours,
            summary.synthesized,
            summary.resumed,
            summary.seconds,
            m.display()
        );
    } else {
        println!(
            "planned {} samples in {:.1} s: {}",
            summary.samples,
            summary.seconds,
            summary.plan.display()
        );
    }
    Ok(())
}

fn run_tts(a: TtsArgs) -> Result<()> {
    set_threads(a.jobs)?;
    let engine = match a.engine {
        EngineArg::EspeakNg => Engine::EspeakNg,
        EngineArg::Flite => Engine::Flite,
    };
    let pitches = match (engine, a.pitches) {
        (_, Some(p)) => p,
        (Engine::EspeakNg, None) => vec![40, 50, 60],
        (Engine::Flite, None) => vec![],
    };
    let job = TtsJob {
        text_file: a.text,
        lang: a.lang,
        out_dir: a.out,
        engine,
        voices: a.voices,
        variants: a.variants,
        speeds: a.speeds,
        pitches,
        amplitude: a.amplitude,
        sample_rate: a.sample_rate,
        seed: a.seed,
        progress: !a.json,
    };
    let summary = tts::run(&job)?;
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{} utterances, {:.3} h of audio ({} made, {} kept from an earlier run) in {:.1} s: {}",
            summary.utterances,
            summary.hours,
            summary.synthesized,
            summary.resumed,
            summary.seconds,
            summary.manifest.display()
        );
    }
    Ok(())
}
