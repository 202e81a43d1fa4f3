//! Code-switched data from monolingual corpora: NeMo's two offline steps (plan, then audio) with resume and shards.

pub mod plan;
pub mod synth;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};

use crate::manifest::Manifest;
use plan::{PlanConfig, PlannedSample, Pool};
use synth::AudioConfig;

/// Which of the two steps to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Draw the samples and write the plan (NeMo's intermediate manifest) only.
    Plan,
    /// Synthesize the audio of an existing plan.
    Audio,
    /// Both.
    All,
}

/// One part of a job split across machines: samples whose `uid % count == index - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based.
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--shard takes K/N with 1 <= K <= N, got {s:?}");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = k.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    fn contains(&self, uid: u64) -> bool {
        uid % self.count as u64 == (self.index - 1) as u64
    }
    fn tag(&self) -> String {
        format!("{}-of-{}", self.index, self.count)
    }
}

/// Everything `mezcla datagen cs` needs.
#[derive(Debug, Clone)]
pub struct CsJob {
    /// `(language, manifest path)` in the order languages are numbered.
    pub inputs: Vec<(String, PathBuf)>,
    pub plan: PlanConfig,
    pub audio: AudioConfig,
    pub out_dir: PathBuf,
    pub step: Step,
    /// Where the plan is read or written; default `out_dir/plan.json`.
    pub plan_path: Option<PathBuf>,
    pub shard: Option<Shard>,
    /// Show a progress bar.
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct CsSummary {
    pub plan: PathBuf,
    pub manifest: Option<PathBuf>,
    pub samples: usize,
    pub synthesized: usize,
    pub resumed: usize,
    pub hours: f64,
    pub seconds: f64,
}

/// Loads each `(lang, path)` manifest as a pool of utterances.
pub fn load_pools(inputs: &[(String, PathBuf)], max_duration: f64) -> Result<Vec<Pool>> {
    let mut seen = std::collections::HashSet::new();
    inputs
        .iter()
        .map(|(lang, path)| {
            if !seen.insert(lang.as_str()) {
                bail!("language {lang:?} is given twice");
            }
            let m = Manifest::read(path)?;
            Ok(Pool::from_manifest(lang, &m, max_duration)?)
        })
        .collect()
}

/// Runs the job: plans and/or synthesizes into `out_dir`, resuming whatever an earlier run finished.
pub fn run(job: &CsJob) -> Result<CsSummary> {
    let started = Instant::now();
    std::fs::create_dir_all(&job.out_dir)
        .with_context(|| format!("{}: cannot create the output folder", job.out_dir.display()))?;
    let own_plan = job.out_dir.join("plan.json");
    let plan_path = job.plan_path.clone().unwrap_or_else(|| own_plan.clone());

    let samples = match job.step {
        Step::Plan | Step::All => {
            let pools = load_pools(&job.inputs, job.plan.max_duration)?;
            let samples = plan::plan(&pools, &job.plan).map_err(anyhow::Error::msg)?;
            keep_plan(&plan_path, &samples)?;
            if plan_path != own_plan && job.step == Step::All {
                keep_plan(&own_plan, &samples)?;
            }
            samples
        }
        Step::Audio => {
            let samples = plan::read_plan(&plan_path)?;
            if plan_path != own_plan {
                keep_plan(&own_plan, &samples)?;
            }
            samples
        }
    };
    let mut summary = CsSummary {
        plan: plan_path,
        manifest: None,
        samples: samples.len(),
        synthesized: 0,
        resumed: 0,
        hours: 0.0,
        seconds: 0.0,
    };
    if job.step != Step::Plan {
        synthesize_all(job, &samples, &mut summary)?;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Writes the plan, or checks that the one already there is the same (a resumed run must not mix two plans).
fn keep_plan(path: &Path, samples: &[PlannedSample]) -> Result<()> {
    let text = plan::to_jsonl(samples);
    if path.exists() {
        let existing = plan::read_plan(path)?;
        if plan::to_jsonl(&existing) != text {
            bail!(
                "{}: this folder holds a run made with other inputs or settings; use a new output folder or \
                 delete it",
                path.display()
            );
        }
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    }
    crate::atomic::write_atomic(path, text.as_bytes())
        .with_context(|| format!("{}: cannot write the plan", path.display()))
}

fn synthesize_all(job: &CsJob, samples: &[PlannedSample], summary: &mut CsSummary) -> Result<()> {
    let out = &job.out_dir;
    let audio_dir = out.join("audio");
    let progress_dir = out.join(".progress");
    for d in [&audio_dir, &progress_dir] {
        std::fs::create_dir_all(d)
            .with_context(|| format!("{}: cannot create the folder", d.display()))?;
    }
    let mine: Vec<&PlannedSample> = samples
        .iter()
        .filter(|s| job.shard.is_none_or(|sh| sh.contains(s.uid)))
        .collect();
    let wav_path = |uid: u64| audio_dir.join(format!("{uid}.wav"));
    remove_stale_temporaries(&audio_dir, &mine)?;

    // Lines finished by earlier runs (of any shard), kept only where their WAV is still there.
    let mut done: BTreeMap<u64, Value> = read_progress(&progress_dir)?
        .into_iter()
        .filter(|(uid, _)| wav_path(*uid).exists())
        .collect();
    let todo: Vec<&PlannedSample> = mine
        .iter()
        .copied()
        .filter(|s| !done.contains_key(&s.uid))
        .collect();
    summary.resumed = mine.len() - todo.len();

    let tag = job.shard.map_or_else(|| "all".to_string(), |s| s.tag());
    let log_path = progress_dir.join(format!("{tag}.jsonl"));
    let log = Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("{}: cannot open", log_path.display()))?,
    );
    let total_ms: u64 = todo
        .iter()
        .map(|s| (s.total_duration * 1000.0) as u64)
        .sum();
    let bar = crate::progress::hours_bar(total_ms, job.progress);
    let results: Vec<Result<(u64, Value)>> = todo
        .par_iter()
        .map(|s| {
            let made = synth::synthesize(s, &job.audio)?;
            let path = wav_path(s.uid);
            crate::audio::write_wav_i16(&path, &made.samples, job.audio.sample_rate)?;
            let line = manifest_line(s, &made, job.audio.sample_rate);
            append_line(&log, &log_path, s.uid, &line)?;
            bar.inc((s.total_duration * 1000.0) as u64);
            Ok((s.uid, line))
        })
        .collect();
    bar.finish_and_clear();
    for r in results {
        let (uid, line) = r?;
        done.insert(uid, line);
        summary.synthesized += 1;
    }

    let mut entries = Vec::with_capacity(mine.len());
    for s in &mine {
        let line = done
            .get(&s.uid)
            .with_context(|| format!("sample {} was not produced", s.uid))?;
        summary.hours += line["duration"].as_f64().unwrap_or(0.0) / 3600.0;
        entries.push(serde_json::to_string(line)?);
    }
    let name = match job.shard {
        None => "manifest.json".to_string(),
        Some(s) => format!("manifest-{}.json", s.tag()),
    };
    let manifest = out.join(name);
    let mut text = entries.join("\n");
    text.push('\n');
    crate::atomic::write_atomic(&manifest, text.as_bytes())
        .with_context(|| format!("{}: cannot write the manifest", manifest.display()))?;
    summary.manifest = Some(manifest);
    Ok(())
}

/// The final manifest line of a sample: NeMo's keys in NeMo's order, then `segment_times`.
fn manifest_line(s: &PlannedSample, made: &synth::Synthesized, sample_rate: u32) -> Value {
    let text: Vec<Value> = s
        .texts
        .iter()
        .zip(&s.lang_ids)
        .map(|(t, l)| json!({"str": t, "lang": l}))
        .collect();
    json!({
        "audio_filepath": format!("audio/{}.wav", s.uid),
        "duration": made.samples.len() as f64 / sample_rate as f64,
        "text": text,
        "language_ids": s.lang_ids,
        "original_texts": s.texts,
        "original_paths": s.paths,
        "original_durations": s.durations,
        "segment_times": made.segment_times,
    })
}

/// Appends one finished sample to the progress log in a single write.
fn append_line(log: &Mutex<File>, path: &Path, uid: u64, line: &Value) -> Result<()> {
    let mut text = serde_json::to_string(&json!({"uid": uid, "entry": line}))?;
    text.push('\n');
    let mut f = log.lock().unwrap_or_else(|p| p.into_inner());
    f.write_all(text.as_bytes())
        .with_context(|| format!("{}: cannot write", path.display()))
}

/// Reads every progress log in the folder; a last line cut short by a killed run is ignored.
fn read_progress(dir: &Path) -> Result<BTreeMap<u64, Value>> {
    let mut done = BTreeMap::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    names.sort();
    for path in names {
        let content = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let complete = match content.rfind('\n') {
            Some(end) => &content[..end],
            None => "",
        };
        for (i, line) in complete.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: corrupt progress line", path.display(), i + 1))?;
            match (v["uid"].as_u64(), v.get("entry")) {
                (Some(uid), Some(entry)) => {
                    done.insert(uid, entry.clone());
                }
                _ => bail!("{}:{}: corrupt progress line", path.display(), i + 1),
            }
        }
    }
    Ok(done)
}

/// Deletes temporary WAVs that a killed run of this shard left behind.
fn remove_stale_temporaries(audio_dir: &Path, mine: &[&PlannedSample]) -> Result<()> {
    let uids: std::collections::HashSet<String> =
        mine.iter().map(|s| format!(".{}.wav.", s.uid)).collect();
    for entry in std::fs::read_dir(audio_dir)
        .with_context(|| format!("{}: cannot list", audio_dir.display()))?
    {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".tmp") {
            if let Some(prefix) = name.find(".wav.").map(|i| &name[..i + 5]) {
                if uids.contains(prefix) {
                    std::fs::remove_file(&path)
                        .with_context(|| format!("{}: cannot remove", path.display()))?;
                }
            }
        }
    }
    Ok(())
}
