//! Training batches: duration-bounded, length-bucketed, seeded per epoch, optionally on-the-fly code-switched
//! mixes, with features computed ahead in a background thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use mezcla_datagen::audio::read_wav_at;
use mezcla_datagen::cs::plan::{self, PlanConfig, Pool};
use mezcla_datagen::cs::synth::{self, AudioConfig};
use mezcla_models::frontend::MelFrontend;
use mezcla_tokenizer::{ConcatTokenizer, Segment};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dataset::Utterance;

/// A mixing stream derived from the run seed, so that every draw is reproducible from (seed, purpose, index).
pub fn derive_seed(seed: u64, purpose: u64, index: u64) -> u64 {
    let mut x = seed
        ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Groups utterance indices into batches of at most `max_duration` padded seconds, from `buckets` length
/// buckets shuffled with the epoch's seed; the batch order is shuffled too.
pub fn epoch_batches(
    utts: &[Utterance],
    max_duration: f64,
    buckets: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, 1, epoch));
    let mut order: Vec<usize> = (0..utts.len()).collect();
    order.sort_by(|&a, &b| {
        utts[a]
            .duration
            .total_cmp(&utts[b].duration)
            .then(a.cmp(&b))
    });
    let per_bucket = order.len().div_ceil(buckets.max(1));
    let mut batches = Vec::new();
    for bucket in order.chunks(per_bucket.max(1)) {
        let mut bucket = bucket.to_vec();
        bucket.shuffle(&mut rng);
        let mut current: Vec<usize> = Vec::new();
        let mut longest = 0f64;
        for i in bucket {
            let d = utts[i].duration;
            if !current.is_empty() && (current.len() + 1) as f64 * longest.max(d) > max_duration {
                batches.push(std::mem::take(&mut current));
                longest = 0.0;
            }
            longest = longest.max(d);
            current.push(i);
        }
        if !current.is_empty() {
            batches.push(current);
        }
    }
    batches.shuffle(&mut rng);
    batches
}

/// On-the-fly code-switched mixing (NeMo's CodeSwitchedDataset, reusing datagen's planner and synthesizer).
#[derive(Clone)]
pub struct Mixer {
    pub pools: Arc<Vec<Pool>>,
    pub plan: PlanConfig,
    pub audio: AudioConfig,
    /// Probability that a batch is made of fresh mixes instead of manifest utterances.
    pub probability: f64,
    /// Mixes per such batch.
    pub per_batch: usize,
}

/// A batch ready for the model.
pub struct Prepared {
    /// Micro-batch index since the start of training.
    pub index: u64,
    pub features: Tensor,
    pub lengths: Vec<usize>,
    /// Targets concatenated, with their lengths.
    pub targets: Tensor,
    pub target_lengths: Vec<usize>,
    pub audio_seconds: f64,
}

/// What the loader needs.
pub struct LoaderSpec {
    pub utts: Arc<Vec<Utterance>>,
    pub tokenizer: Arc<ConcatTokenizer>,
    pub frontend: Arc<MelFrontend>,
    pub spec_augment: Option<mezcla_models::specaug::SpecAugment>,
    pub mixer: Option<Mixer>,
    pub max_duration: f64,
    pub buckets: usize,
    pub seed: u64,
    pub sample_rate: u32,
    /// First micro-batch to produce (for a resumed run).
    pub start: u64,
    /// Micro-batches to produce.
    pub count: u64,
    /// The length curriculum.
    pub short_first: ShortFirst,
}

/// A length curriculum: the first `batches` micro-batches come only from the utterances of at most
/// `max_duration` seconds (at most `utterances` of them, a seeded choice, when not 0), without mixing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShortFirst {
    pub batches: u64,
    pub max_duration: f64,
    pub utterances: usize,
}

type AudioCache = Arc<Mutex<HashMap<PathBuf, Arc<Vec<f32>>>>>;

fn read_cached(cache: &AudioCache, path: &PathBuf, sr: u32, origin: &str) -> Result<Arc<Vec<f32>>> {
    if let Some(a) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(path) {
        return Ok(a.clone());
    }
    let audio = Arc::new(
        read_wav_at(path, sr)
            .with_context(|| format!("{origin}: the entry's audio"))?
            .samples,
    );
    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
    // Keep at most about 2 GB of decoded audio.
    let held: usize = c.values().map(|a| a.len()).sum();
    if held + audio.len() < 500_000_000 {
        c.insert(path.clone(), audio.clone());
    }
    Ok(audio)
}

/// The endless sequence of micro-batches of a run: (utterance indices, whether on-the-fly mixing may replace
/// it). With a curriculum, its micro-batches come first (epochs of its utterances alone, no mixing); then
/// epochs of all utterances from epoch 0. Every micro-batch is determined by its position, so a resumed run
/// skips to exactly where it stopped.
pub fn batch_plan<'a>(
    utts: &'a [Utterance],
    max_duration: f64,
    buckets: usize,
    seed: u64,
    short_first: ShortFirst,
) -> impl Iterator<Item = (Vec<usize>, bool)> + 'a {
    let count = short_first.batches;
    let mut short: Vec<usize> = (0..utts.len())
        .filter(|&i| utts[i].duration <= short_first.max_duration)
        .collect();
    if short_first.utterances > 0 && short.len() > short_first.utterances {
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, 8, 0));
        short.shuffle(&mut rng);
        short.truncate(short_first.utterances);
        short.sort();
    }
    let curriculum: Box<dyn Iterator<Item = (Vec<usize>, bool)>> = if count == 0 || short.is_empty()
    {
        Box::new(std::iter::empty())
    } else {
        let pool: Vec<Utterance> = short.iter().map(|&i| utts[i].clone()).collect();
        Box::new(
            (0u64..)
                .flat_map(move |epoch| {
                    let batches = epoch_batches(&pool, max_duration, buckets, seed, epoch);
                    let ids = short.clone();
                    batches
                        .into_iter()
                        .map(move |b| (b.into_iter().map(|i| ids[i]).collect(), false))
                })
                .take(count as usize),
        )
    };
    let full = (0u64..).flat_map(move |epoch| {
        epoch_batches(utts, max_duration, buckets, seed, epoch)
            .into_iter()
            .map(|b| (b, true))
    });
    curriculum.chain(full)
}

/// Starts the background thread; batches arrive in order on the returned channel (an error ends the stream).
pub fn start(spec: LoaderSpec) -> Receiver<Result<Prepared>> {
    let (tx, rx) = sync_channel(3);
    std::thread::spawn(move || {
        let cache: AudioCache = Arc::new(Mutex::new(HashMap::new()));
        let end = spec.start + spec.count;
        let plan = batch_plan(
            &spec.utts,
            spec.max_duration,
            spec.buckets,
            spec.seed,
            spec.short_first,
        );
        for (index, (batch, mix)) in (0..end).zip(plan) {
            if index < spec.start {
                continue;
            }
            let prepared = prepare(&spec, &cache, &batch, index, mix);
            let failed = prepared.is_err();
            if tx.send(prepared).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// Reads (or mixes, when `mix` allows and the draw says so) the audio of a micro-batch and computes its features.
fn prepare(
    spec: &LoaderSpec,
    cache: &AudioCache,
    batch: &[usize],
    index: u64,
    mix: bool,
) -> Result<Prepared> {
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(spec.seed, 2, index));
    let mut audios: Vec<Arc<Vec<f32>>> = Vec::new();
    let mut targets: Vec<Vec<u32>> = Vec::new();
    let mixing = spec
        .mixer
        .as_ref()
        .filter(|m| mix && m.probability > 0.0 && rng.random::<f64>() < m.probability);
    if let Some(mixer) = mixing {
        for k in 0..mixer.per_batch.max(1) {
            let cfg = PlanConfig {
                hours: 1e-9,
                seed: derive_seed(spec.seed, 3, index * 1000 + k as u64),
                ..mixer.plan.clone()
            };
            let sample = plan::plan(&mixer.pools, &cfg)
                .map_err(anyhow::Error::msg)?
                .remove(0);
            let made = synth::synthesize(&sample, &mixer.audio)?;
            audios.push(Arc::new(
                made.samples.iter().map(|&s| s as f32 / 32768.0).collect(),
            ));
            let segs: Vec<Segment> = sample
                .texts
                .iter()
                .zip(&sample.lang_ids)
                .map(|(t, l)| Segment {
                    text: t.clone(),
                    lang: l.clone(),
                })
                .collect();
            targets.push(spec.tokenizer.encode_segments(&segs)?);
        }
    } else {
        for &i in batch {
            let u = &spec.utts[i];
            audios.push(read_cached(cache, &u.audio, spec.sample_rate, &u.origin)?);
            targets.push(u.ids.clone());
        }
    }
    let refs: Vec<&[f32]> = audios.iter().map(|a| a.as_slice()).collect();
    let fb = spec
        .frontend
        .batch_train(&refs, derive_seed(spec.seed, 4, index), &Device::Cpu)?;
    let features = match &spec.spec_augment {
        Some(sa) => sa.apply_batch(&fb.features, &fb.lengths, derive_seed(spec.seed, 5, index))?,
        None => fb.features,
    };
    let target_lengths: Vec<usize> = targets.iter().map(|t| t.len()).collect();
    let flat: Vec<u32> = targets.into_iter().flatten().collect();
    let n = flat.len();
    Ok(Prepared {
        index,
        features,
        lengths: fb.lengths,
        targets: Tensor::from_vec(flat, n, &Device::Cpu)?,
        target_lengths,
        audio_seconds: refs.iter().map(|a| a.len() as f64).sum::<f64>() / spec.sample_rate as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utts(durations: &[f64]) -> Vec<Utterance> {
        durations
            .iter()
            .enumerate()
            .map(|(i, &d)| Utterance {
                audio: PathBuf::from(format!("{i}.wav")),
                duration: d,
                segments: vec![],
                ids: vec![],
                origin: String::new(),
            })
            .collect()
    }

    fn curriculum(batches: u64, max_duration: f64, utterances: usize) -> ShortFirst {
        ShortFirst {
            batches,
            max_duration,
            utterances,
        }
    }

    #[test]
    fn a_curriculum_subset_is_a_fixed_seeded_choice() {
        let durations: Vec<f64> = (0..120)
            .map(|i| 0.5 + (i * 53 % 100) as f64 / 10.0)
            .collect();
        let u = utts(&durations);
        let plan: Vec<(Vec<usize>, bool)> = batch_plan(&u, 20.0, 4, 3, curriculum(30, 3.0, 5))
            .take(30)
            .collect();
        let mut seen: Vec<usize> = plan.iter().flat_map(|(b, _)| b.clone()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 5, "{seen:?}");
        assert!(seen.iter().all(|&i| durations[i] <= 3.0));
    }

    #[test]
    fn the_length_curriculum_comes_first_then_whole_epochs() {
        let durations: Vec<f64> = (0..120)
            .map(|i| 0.5 + (i * 53 % 100) as f64 / 10.0)
            .collect();
        let u = utts(&durations);
        let plan: Vec<(Vec<usize>, bool)> = batch_plan(&u, 20.0, 4, 3, curriculum(7, 3.0, 0))
            .take(60)
            .collect();
        for (b, mix) in &plan[..7] {
            assert!(!mix, "no mixing in the curriculum");
            assert!(b.iter().all(|&i| durations[i] <= 3.0), "{b:?}");
        }
        // More curriculum batches than one epoch of the short utterances: the short ones come round again.
        let short_epoch = epoch_batches(
            &utts(
                &durations
                    .iter()
                    .cloned()
                    .filter(|&d| d <= 3.0)
                    .collect::<Vec<_>>(),
            ),
            20.0,
            4,
            3,
            0,
        )
        .len();
        assert!(short_epoch < 7, "{short_epoch}");
        // Then epoch 0 of all utterances, exactly as without a curriculum.
        let full = epoch_batches(&u, 20.0, 4, 3, 0);
        let after: Vec<Vec<usize>> = plan[7..7 + full.len()]
            .iter()
            .map(|(b, _)| b.clone())
            .collect();
        assert_eq!(after, full);
        assert!(plan[7..].iter().all(|(_, mix)| *mix));
        let plain: Vec<(Vec<usize>, bool)> = batch_plan(&u, 20.0, 4, 3, curriculum(0, 3.0, 0))
            .take(full.len())
            .collect();
        assert_eq!(plain.into_iter().map(|(b, _)| b).collect::<Vec<_>>(), full);
        // Seeded: a resumed run that skips k micro-batches sees the same ones.
        let again: Vec<(Vec<usize>, bool)> = batch_plan(&u, 20.0, 4, 3, curriculum(7, 3.0, 0))
            .skip(5)
            .take(55)
            .collect();
        assert_eq!(again, plan[5..]);
    }

    #[test]
    fn batches_cover_every_utterance_once_within_the_budget() {
        let durations: Vec<f64> = (0..200)
            .map(|i| 1.0 + (i * 37 % 100) as f64 / 10.0)
            .collect();
        let u = utts(&durations);
        let batches = epoch_batches(&u, 40.0, 4, 7, 0);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        for b in &batches {
            let longest = b.iter().map(|&i| durations[i]).fold(0.0, f64::max);
            assert!(b.len() == 1 || b.len() as f64 * longest <= 40.0);
        }
        assert_eq!(batches, epoch_batches(&u, 40.0, 4, 7, 0), "seeded");
        assert_ne!(
            batches,
            epoch_batches(&u, 40.0, 4, 7, 1),
            "each epoch reshuffles"
        );
        // Bucketing: batches hold utterances of similar length.
        let spread: f64 = batches
            .iter()
            .map(|b| {
                let d: Vec<f64> = b.iter().map(|&i| durations[i]).collect();
                d.iter().cloned().fold(0.0, f64::max)
                    - d.iter().cloned().fold(f64::INFINITY, f64::min)
            })
            .fold(0.0, f64::max);
        assert!(spread <= 2.6, "{spread}");
    }
}
