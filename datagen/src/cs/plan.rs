//! Step 1 of code-switched synthesis: drawing which utterances make up each sample (NeMo's intermediate manifest).

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::manifest::{Manifest, ManifestError};

/// The utterances of one language that samples are drawn from.
#[derive(Debug, Clone)]
pub struct Pool {
    pub lang: String,
    pub texts: Vec<String>,
    pub paths: Vec<PathBuf>,
    pub durations: Vec<f64>,
    shortest: f64,
}

impl Pool {
    /// Takes every entry of a monolingual manifest; each needs `duration` and `text`, and must fit in `max_duration`.
    pub fn from_manifest(
        lang: &str,
        manifest: &Manifest,
        max_duration: f64,
    ) -> Result<Self, ManifestError> {
        if manifest.entries.is_empty() {
            return Err(ManifestError::new(
                &manifest.path,
                None,
                format!("the {lang} manifest has no entries"),
            ));
        }
        let mut pool = Pool {
            lang: lang.to_string(),
            texts: Vec::with_capacity(manifest.entries.len()),
            paths: Vec::with_capacity(manifest.entries.len()),
            durations: Vec::with_capacity(manifest.entries.len()),
            shortest: f64::INFINITY,
        };
        for (i, e) in manifest.entries.iter().enumerate() {
            let duration = e
                .duration
                .ok_or_else(|| manifest.error_at(i, "missing field `duration`"))?;
            let text = e
                .text
                .as_ref()
                .ok_or_else(|| manifest.error_at(i, "missing field `text`"))?;
            if duration > max_duration {
                return Err(manifest.error_at(
                    i,
                    format!(
                        "utterance of {duration} s is longer than the maximum sample duration of \
                         {max_duration} s; remove it or raise --max-duration"
                    ),
                ));
            }
            if duration <= 0.0 {
                return Err(manifest.error_at(i, "utterance has a duration of 0 s"));
            }
            let path = std::path::absolute(manifest.audio_path(i)).map_err(|e| {
                manifest.error_at(i, format!("cannot make the audio path absolute: {e}"))
            })?;
            pool.shortest = pool.shortest.min(duration);
            pool.texts.push(text.to_plain());
            pool.paths.push(path);
            pool.durations.push(duration);
        }
        Ok(pool)
    }

    pub fn len(&self) -> usize {
        self.durations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.durations.is_empty()
    }
}

/// How samples are drawn. Defaults are those of NeMo's offline script.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanConfig {
    /// Keep adding segments until a sample is at least this long (seconds).
    pub min_duration: f64,
    /// Reject a segment that would make the sample longer than this (seconds).
    pub max_duration: f64,
    /// Stop once the samples add up to this many hours (of input utterance durations, as NeMo counts).
    pub hours: f64,
    /// Probability of each language per segment, in pool order; they sum to 1.
    pub probs: Vec<f64>,
    /// Probability that a sample is one plain monolingual utterance (NeMo's on-the-fly `min_monolingual`).
    pub min_monolingual: f64,
    /// After the first segment, draw only among languages this sample has not used yet, until all have been
    /// used (NeMo's on-the-fly default); off, every segment draws from all languages (the offline script).
    pub prefer_unused: bool,
    pub seed: u64,
}

impl PlanConfig {
    /// NeMo's offline defaults for `n` languages with equal probabilities.
    pub fn nemo_offline(n: usize) -> Self {
        Self {
            min_duration: 16.0,
            max_duration: 19.0,
            hours: 1.0,
            probs: vec![1.0 / n as f64; n],
            min_monolingual: 0.0,
            prefer_unused: false,
            seed: 0,
        }
    }

    /// Checks the settings against the pools, so that planning cannot run forever.
    pub fn validate(&self, pools: &[Pool]) -> Result<(), String> {
        if pools.is_empty() {
            return Err("no input manifests: give at least one --manifest LANG=PATH".into());
        }
        if !(self.min_duration.is_finite() && self.min_duration > 0.0) {
            return Err(format!(
                "--min-duration must be positive, got {}",
                self.min_duration
            ));
        }
        if !(self.max_duration.is_finite() && self.min_duration < self.max_duration) {
            return Err(format!(
                "--min-duration ({} s) must be smaller than --max-duration ({} s)",
                self.min_duration, self.max_duration
            ));
        }
        if !(self.hours.is_finite() && self.hours > 0.0) {
            return Err(format!("--hours must be positive, got {}", self.hours));
        }
        if !(0.0..=1.0).contains(&self.min_monolingual) {
            return Err(format!(
                "--min-monolingual is a probability between 0 and 1, got {}",
                self.min_monolingual
            ));
        }
        if self.probs.len() != pools.len() {
            return Err(format!(
                "{} language probabilities for {} languages",
                self.probs.len(),
                pools.len()
            ));
        }
        if self.probs.iter().any(|p| !(p.is_finite() && *p >= 0.0)) {
            return Err("language probabilities must be non-negative numbers".into());
        }
        let sum: f64 = self.probs.iter().sum();
        if (sum - 1.0).abs() > 1e-6 {
            return Err(format!(
                "language probabilities must sum to 1, they sum to {sum}"
            ));
        }
        Ok(())
    }
}

/// One planned sample: NeMo's intermediate manifest line (same keys, same order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedSample {
    pub lang_ids: Vec<String>,
    pub texts: Vec<String>,
    pub paths: Vec<String>,
    pub durations: Vec<f64>,
    pub total_duration: f64,
    pub uid: u64,
}

/// Draws samples until `hours` is reached.
///
/// Per segment a language is drawn from `probs` (restricted to unused languages with `prefer_unused`), then one
/// of its utterances uniformly with replacement; a draw that would pass `max_duration` is rejected and both are
/// drawn again; segments are added until `min_duration` is reached. Deterministic for a given seed. If a sample
/// reaches a length from which no utterance can complete it, planning stops with an error instead of looping.
pub fn plan(pools: &[Pool], cfg: &PlanConfig) -> Result<Vec<PlannedSample>, String> {
    cfg.validate(pools)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let target = cfg.hours * 3600.0;
    let active: Vec<bool> = cfg.probs.iter().map(|&p| p > 0.0).collect();
    let mut samples = Vec::new();
    let mut total = 0.0;
    while total < target {
        let uid = samples.len() as u64;
        let mut s = PlannedSample {
            lang_ids: Vec::new(),
            texts: Vec::new(),
            paths: Vec::new(),
            durations: Vec::new(),
            total_duration: 0.0,
            uid,
        };
        if cfg.min_monolingual > 0.0 && rng.random::<f64>() < cfg.min_monolingual {
            let lang = draw(&mut rng, &cfg.probs, |_| true);
            let utt = rng.random_range(0..pools[lang].len());
            push(&mut s, &pools[lang], utt);
        } else {
            let mut used = vec![false; pools.len()];
            while s.total_duration < cfg.min_duration {
                let room = cfg.max_duration - s.total_duration;
                let fits = |l: usize| active[l] && pools[l].shortest <= room;
                if !(0..pools.len()).any(fits) {
                    return Err(format!(
                        "sample {uid} reached {:.3} s and no utterance of at most {room:.3} s exists to \
                         bring it to --min-duration {} s without passing --max-duration {} s; widen the \
                         gap between them or add shorter utterances",
                        s.total_duration, cfg.min_duration, cfg.max_duration
                    ));
                }
                let restrict = cfg.prefer_unused
                    && !s.lang_ids.is_empty()
                    && (0..pools.len()).any(|l| !used[l] && fits(l));
                let lang = if restrict {
                    draw(&mut rng, &cfg.probs, |l| !used[l] && fits(l))
                } else {
                    draw(&mut rng, &cfg.probs, |_| true)
                };
                let utt = rng.random_range(0..pools[lang].len());
                if pools[lang].durations[utt] > room {
                    continue;
                }
                push(&mut s, &pools[lang], utt);
                used[lang] = true;
            }
        }
        total += s.total_duration;
        samples.push(s);
    }
    Ok(samples)
}

fn push(s: &mut PlannedSample, pool: &Pool, utt: usize) {
    s.lang_ids.push(pool.lang.clone());
    s.texts.push(pool.texts[utt].clone());
    s.paths.push(pool.paths[utt].display().to_string());
    s.durations.push(pool.durations[utt]);
    s.total_duration += pool.durations[utt];
}

/// Draws an index with probability proportional to `probs`, among the indices `allowed` accepts.
fn draw(rng: &mut ChaCha8Rng, probs: &[f64], allowed: impl Fn(usize) -> bool) -> usize {
    let total: f64 = (0..probs.len())
        .filter(|&l| allowed(l))
        .map(|l| probs[l])
        .sum();
    let mut u = rng.random::<f64>() * total;
    let mut last = 0;
    for (l, &p) in probs.iter().enumerate() {
        if !allowed(l) || p <= 0.0 {
            continue;
        }
        last = l;
        if u < p {
            return l;
        }
        u -= p;
    }
    last
}

/// Serialises a plan as JSON lines.
pub fn to_jsonl(plan: &[PlannedSample]) -> String {
    let mut out = String::new();
    for s in plan {
        out.push_str(&serde_json::to_string(s).expect("a plan line always serialises"));
        out.push('\n');
    }
    out
}

/// Reads a plan (mezcla's or NeMo's intermediate manifest); relative audio paths resolve against its folder.
pub fn read_plan(path: &Path) -> Result<Vec<PlannedSample>, ManifestError> {
    let content = std::fs::read_to_string(path)
        .map_err(|e| ManifestError::new(path, None, format!("cannot read plan: {e}")))?;
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut plan = Vec::new();
    for (i, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |m: String| ManifestError::new(path, Some(i + 1), m);
        let mut s: PlannedSample =
            serde_json::from_str(line).map_err(|e| err(format!("invalid plan line: {e}")))?;
        let n = s.lang_ids.len();
        if n == 0 || s.texts.len() != n || s.paths.len() != n || s.durations.len() != n {
            return Err(err(
                "`lang_ids`, `texts`, `paths` and `durations` must be non-empty lists of one length"
                    .into(),
            ));
        }
        for p in &mut s.paths {
            let resolved = crate::manifest::resolve(&base, p);
            *p = std::path::absolute(&resolved)
                .unwrap_or(resolved)
                .display()
                .to_string();
        }
        plan.push(s);
    }
    if plan.is_empty() {
        return Err(ManifestError::new(path, None, "the plan has no samples"));
    }
    let mut uids: Vec<u64> = plan.iter().map(|s| s.uid).collect();
    uids.sort_unstable();
    if let Some(w) = uids.windows(2).find(|w| w[0] == w[1]) {
        return Err(ManifestError::new(
            path,
            None,
            format!("uid {} appears more than once", w[0]),
        ));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(lang: &str, durations: &[f64]) -> Pool {
        Pool {
            lang: lang.into(),
            texts: durations.iter().map(|d| format!("{lang} {d}")).collect(),
            paths: durations
                .iter()
                .enumerate()
                .map(|(i, _)| PathBuf::from(format!("/{lang}/{i}.wav")))
                .collect(),
            durations: durations.to_vec(),
            shortest: durations.iter().cloned().fold(f64::INFINITY, f64::min),
        }
    }

    fn pools() -> Vec<Pool> {
        vec![
            pool("en", &[1.0, 2.5, 3.0, 4.2, 6.0]),
            pool("es", &[1.5, 2.0, 3.7, 5.1]),
        ]
    }

    #[test]
    fn samples_respect_the_duration_window_and_the_target() {
        let mut cfg = PlanConfig::nemo_offline(2);
        cfg.hours = 0.5;
        let plan = plan(&pools(), &cfg).unwrap();
        let total: f64 = plan.iter().map(|s| s.total_duration).sum();
        assert!((1800.0..1800.0 + 19.0).contains(&total), "{total}");
        for (i, s) in plan.iter().enumerate() {
            assert_eq!(s.uid, i as u64);
            assert!(
                s.total_duration >= 16.0 && s.total_duration <= 19.0,
                "{s:?}"
            );
            let sum: f64 = s.durations.iter().sum();
            assert!((sum - s.total_duration).abs() < 1e-9);
            // Without the last segment the sample was still short of the minimum.
            assert!(sum - s.durations.last().unwrap() < 16.0);
        }
    }

    #[test]
    fn languages_and_utterances_are_drawn_with_the_given_probabilities() {
        let mut cfg = PlanConfig::nemo_offline(2);
        cfg.hours = 20.0;
        cfg.probs = vec![0.8, 0.2];
        cfg.min_duration = 1.0;
        cfg.max_duration = 20.0;
        let plan = plan(&pools(), &cfg).unwrap();
        let langs: Vec<&String> = plan.iter().flat_map(|s| &s.lang_ids).collect();
        let en = langs.iter().filter(|l| l.as_str() == "en").count() as f64 / langs.len() as f64;
        assert!((en - 0.8).abs() < 0.02, "share of en {en}");
        let mut counts = [0usize; 5];
        for s in &plan {
            for (l, p) in s.lang_ids.iter().zip(&s.paths) {
                if l == "en" {
                    counts[p[4..5].parse::<usize>().unwrap()] += 1;
                }
            }
        }
        let n: usize = counts.iter().sum();
        for c in counts {
            let share = c as f64 / n as f64;
            assert!(
                (share - 0.2).abs() < 0.03,
                "utterances are uniform: {counts:?}"
            );
        }
    }

    #[test]
    fn prefer_unused_alternates_languages_and_min_monolingual_gives_single_utterances() {
        let mut cfg = PlanConfig::nemo_offline(2);
        cfg.hours = 2.0;
        cfg.prefer_unused = true;
        cfg.min_monolingual = 0.3;
        let plan = plan(&pools(), &cfg).unwrap();
        let mono = plan.iter().filter(|s| s.lang_ids.len() == 1).count() as f64;
        assert!((mono / plan.len() as f64 - 0.3).abs() < 0.05, "{mono}");
        for s in plan.iter().filter(|s| s.lang_ids.len() > 1) {
            assert_ne!(
                s.lang_ids[0], s.lang_ids[1],
                "the second segment uses the other language"
            );
        }
        let mut off = cfg.clone();
        off.prefer_unused = false;
        off.min_monolingual = 0.0;
        let plan = super::plan(&pools(), &off).unwrap();
        let same = plan
            .iter()
            .filter(|s| s.lang_ids[0] == s.lang_ids[1])
            .count();
        assert!(
            same > plan.len() / 4,
            "without it, languages repeat as often as chance says"
        );
    }

    #[test]
    fn more_than_two_languages_all_take_part() {
        let mut p = pools();
        p.push(pool("hi", &[2.0, 3.0]));
        let mut cfg = PlanConfig::nemo_offline(3);
        cfg.hours = 1.0;
        let plan = plan(&p, &cfg).unwrap();
        for lang in ["en", "es", "hi"] {
            let n = plan
                .iter()
                .flat_map(|s| &s.lang_ids)
                .filter(|l| *l == lang)
                .count();
            assert!(n > 100, "{lang}: {n}");
        }
    }

    #[test]
    fn the_seed_decides_everything() {
        let mut cfg = PlanConfig::nemo_offline(2);
        cfg.hours = 0.2;
        let a = plan(&pools(), &cfg).unwrap();
        let b = plan(&pools(), &cfg).unwrap();
        assert_eq!(to_jsonl(&a), to_jsonl(&b));
        cfg.seed = 1;
        let c = plan(&pools(), &cfg).unwrap();
        assert_ne!(to_jsonl(&a), to_jsonl(&c));
    }

    #[test]
    fn invalid_settings_are_errors_not_endless_loops() {
        let base = PlanConfig::nemo_offline(2);
        let mut c = base.clone();
        c.min_duration = 19.0;
        assert!(plan(&pools(), &c)
            .unwrap_err()
            .contains("must be smaller than --max-duration"));
        let mut c = base.clone();
        c.probs = vec![0.5, 0.6];
        assert!(plan(&pools(), &c).unwrap_err().contains("sum to 1"));
        let mut c = base.clone();
        c.hours = 0.0;
        assert!(plan(&pools(), &c).unwrap_err().contains("--hours"));
        // Only 4-second utterances, room for at most 3 more once a sample passes 16 s: 4+4+4+4 = 16 works.
        let fours = vec![pool("en", &[4.0]), pool("es", &[4.0])];
        let c = PlanConfig {
            hours: 0.05,
            ..base.clone()
        };
        assert!(plan(&fours, &c).is_ok());
        // 5-second utterances: 15 s is too short, 20 s too long; NeMo loops forever here.
        let fives = vec![pool("en", &[5.0]), pool("es", &[5.0])];
        let err = plan(&fives, &c).unwrap_err();
        assert!(err.contains("no utterance of at most 4.000 s"), "{err}");
    }

    #[test]
    fn plans_round_trip_through_nemo_intermediate_format() {
        let mut cfg = PlanConfig::nemo_offline(2);
        cfg.hours = 0.05;
        let p = plan(&pools(), &cfg).unwrap();
        let text = to_jsonl(&p);
        let first = text.lines().next().unwrap();
        let keys: Vec<String> =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(first)
                .unwrap()
                .keys()
                .cloned()
                .collect();
        assert_eq!(
            keys,
            [
                "lang_ids",
                "texts",
                "paths",
                "durations",
                "total_duration",
                "uid"
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read_plan(&path).unwrap(), p);
        std::fs::write(&path, format!("{text}{{\"uid\": 3}}\n")).unwrap();
        let err = read_plan(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("plan.json:{}:", p.len() + 1)),
            "{err}"
        );
    }
}
