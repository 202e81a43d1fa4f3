//! `mezcla train`: CTC training of a Conformer on manifests, with validation, checkpoints, exact resume and export.

pub mod curve;
pub mod data;
pub mod interctc;
pub mod optim;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use mezcla_datagen::cs::plan::{PlanConfig, Pool};
use mezcla_datagen::cs::synth::{AudioConfig, Level};
use mezcla_kernels::{CtcOptions, Reduction};
use mezcla_models::conformer::ConformerConfig;
use mezcla_models::specaug::{SpecAugConfig, SpecAugment};
use mezcla_tokenizer::ConcatTokenizer;
use serde::{Deserialize, Serialize};

use crate::model::{save_model, AsrModel, DecodeOptions, ModelConfig};
use interctc::{ctc_losses, InterCtcConfig};
use optim::{AdamW, Schedule};

fn d_max_duration() -> f64 {
    60.0
}
fn d_buckets() -> usize {
    8
}
fn d_lr() -> f64 {
    2e-3
}
fn d_min_lr() -> f64 {
    1e-5
}
fn d_warmup() -> u64 {
    500
}
fn d_betas() -> [f64; 2] {
    [0.9, 0.98]
}
fn d_wd() -> f64 {
    1e-3
}
fn d_clip() -> f64 {
    1.0
}
fn d_one() -> usize {
    1
}
fn d_schedule() -> Schedule {
    Schedule::Noam
}
fn d_every() -> u64 {
    500
}
fn d_keep() -> usize {
    3
}
fn d_avg() -> usize {
    1
}

/// `train.toml`. Paths are relative to the config file's folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Checkpoints, metrics.jsonl, curve.svg and the exported model (`OUT/model`).
    pub out_dir: PathBuf,
    /// Tokenizer folder (or one `.model` file).
    pub tokenizer: PathBuf,
    /// Training manifests (text as segments, or string + lang).
    pub train_manifests: Vec<PathBuf>,
    /// Validation manifests.
    #[serde(default)]
    pub val_manifests: Vec<PathBuf>,
    /// Model preset (tiny, small, medium, large), unless `encoder` is given.
    #[serde(default)]
    pub model: Option<String>,
    /// An explicit NeMo ConformerEncoder config instead of a preset.
    #[serde(default)]
    pub encoder: Option<ConformerConfig>,
    /// Start from the weights of a trained model (a mezcla model folder or a `.nemo` file) instead of random
    /// ones, like NeMo's `init_from_nemo_model`. Its front-end and encoder config are used unless `model` or
    /// `encoder` is given; every weight must be there with the same shape (the tokenizer's vocabulary
    /// size must match the model's CTC head).
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    #[serde(default)]
    pub seed: u64,
    pub max_steps: u64,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    /// NeMo's spec_augment block; absent: no augmentation.
    #[serde(default)]
    pub spec_augment: Option<SpecAugConfig>,
    #[serde(default)]
    pub eval: EvalConfig,
    /// On-the-fly code-switched mixing of monolingual manifests.
    #[serde(default)]
    pub cs_mixing: Option<CsMixingConfig>,
    /// NeMo's intermediate CTC losses on chosen encoder layers; absent: the final CTC loss only.
    #[serde(default)]
    pub interctc: InterCtcConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Padded seconds of audio per batch.
    #[serde(default = "d_max_duration")]
    pub max_duration: f64,
    /// Length buckets.
    #[serde(default = "d_buckets")]
    pub buckets: usize,
    /// Batches whose gradients are summed per update.
    #[serde(default = "d_one")]
    pub accumulate: usize,
    /// A length curriculum (as SortaGrad): the first `short_first_steps` updates see only utterances of at
    /// most `short_first_max_duration` seconds, and no on-the-fly mixes; 0 turns it off.
    #[serde(default)]
    pub short_first_steps: u64,
    #[serde(default = "d_short")]
    pub short_first_max_duration: f64,
    /// The curriculum draws from at most this many of those utterances (a seeded choice; 0: all of them), to
    /// start on a small set seen many times.
    #[serde(default)]
    pub short_first_utterances: usize,
}

fn d_short() -> f64 {
    3.0
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_duration: d_max_duration(),
            buckets: d_buckets(),
            accumulate: 1,
            short_first_steps: 0,
            short_first_max_duration: d_short(),
            short_first_utterances: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate.
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_min_lr")]
    pub min_lr: f64,
    #[serde(default = "d_schedule")]
    pub schedule: Schedule,
    #[serde(default = "d_warmup")]
    pub warmup_steps: u64,
    #[serde(default = "d_betas")]
    pub betas: [f64; 2],
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: none).
    #[serde(default = "d_clip")]
    pub grad_clip: f64,
    /// Encoder dropout (all of NeMo's dropouts), overriding the preset's.
    #[serde(default)]
    pub dropout: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: d_lr(),
            min_lr: d_min_lr(),
            schedule: d_schedule(),
            warmup_steps: d_warmup(),
            betas: d_betas(),
            weight_decay: d_wd(),
            grad_clip: d_clip(),
            dropout: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Validate and checkpoint every this many steps (and at the end).
    #[serde(default = "d_every")]
    pub every: u64,
    /// Keep the best k checkpoints by validation WER (plus the latest).
    #[serde(default = "d_keep")]
    pub keep_best: usize,
    /// Average the weights of the last N checkpoints into the exported model.
    #[serde(default = "d_avg")]
    pub average_last: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            every: d_every(),
            keep_best: d_keep(),
            average_last: d_avg(),
        }
    }
}

fn d_cs_prob() -> f64 {
    0.5
}
fn d_cs_min() -> f64 {
    4.0
}
fn d_cs_max() -> f64 {
    20.0
}
fn d_cs_mono() -> f64 {
    0.3
}
fn d_cs_db() -> f32 {
    -25.0
}

/// NeMo's `code_switched` block, plus how often a batch is made of mixes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsMixingConfig {
    /// Monolingual manifests by language.
    pub manifests: std::collections::BTreeMap<String, PathBuf>,
    /// Probability that a batch is made of fresh mixes.
    #[serde(default = "d_cs_prob")]
    pub batch_probability: f64,
    #[serde(default = "d_cs_min")]
    pub min_duration: f64,
    #[serde(default = "d_cs_max")]
    pub max_duration: f64,
    #[serde(default = "d_cs_mono")]
    pub min_monolingual: f64,
    /// Per-language probabilities in the order of `manifests` (default: equal).
    #[serde(default)]
    pub probs: Option<Vec<f64>>,
    #[serde(default = "d_cs_db")]
    pub db_norm: f32,
    #[serde(default)]
    pub pause_start: u32,
    #[serde(default)]
    pub pause_join: u32,
    #[serde(default)]
    pub pause_end: u32,
    /// After the first segment, draw among unused languages (NeMo's default, `pure_random: false`).
    #[serde(default = "yes")]
    pub prefer_unused: bool,
}

fn yes() -> bool {
    true
}

impl TrainConfig {
    /// Reads a TOML config; relative paths resolve against its folder.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let mut cfg: TrainConfig = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let place = line.map_or(String::new(), |l| format!(":{l}"));
            anyhow::anyhow!("{}{place}: {}", path.display(), e.message().trim())
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut cfg.out_dir);
        fix(&mut cfg.tokenizer);
        cfg.train_manifests.iter_mut().for_each(fix);
        cfg.val_manifests.iter_mut().for_each(fix);
        if let Some(cs) = &mut cfg.cs_mixing {
            cs.manifests.values_mut().for_each(fix);
        }
        if cfg.max_steps == 0 {
            bail!("{}: max_steps must be positive", path.display());
        }
        if cfg.train_manifests.is_empty() {
            bail!("{}: give at least one of train_manifests", path.display());
        }
        if let Some(p) = &mut cfg.init_from {
            fix(p);
        }
        if cfg.model.is_some() && cfg.encoder.is_some() {
            bail!(
                "{}: give either `model` (a preset) or an `[encoder]` table, not both",
                path.display()
            );
        }
        cfg.interctc
            .validate(usize::MAX)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if cfg.model.is_none() && cfg.encoder.is_none() && cfg.init_from.is_none() {
            bail!(
                "{}: give `model` (a preset), an `[encoder]` table or `init_from` (a trained model)",
                path.display()
            );
        }
        Ok(cfg)
    }
}

/// The state saved with each checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    step: u64,
    val_wer: Option<f64>,
    loss: f64,
}

/// One line of metrics.jsonl.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsLine {
    pub step: u64,
    /// The optimised loss: CTC (summed over each utterance's tokens, averaged over the batch, as NeMo's
    /// `mean_batch`), with `interctc`: the weighted sum of the final and intermediate CTC losses.
    pub loss: f64,
    /// The final CTC loss per target token: comparable across batches of different lengths.
    #[serde(default)]
    pub loss_per_token: f64,
    /// With `interctc`: the final CTC loss, unweighted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_loss: Option<f64>,
    /// With `interctc`: each captured layer's CTC loss, unweighted, by `l<layer>` (NeMo's `inter_ctc_loss_l<layer>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inter_ctc_loss: Option<BTreeMap<String, f64>>,
    pub lr: f64,
    pub grad_norm: f64,
    pub steps_per_second: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_wer: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_cer: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_token_lid: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_utterance_lid: Option<f64>,
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub steps: u64,
    pub parameters: usize,
    pub final_loss: f64,
    pub best_val_wer: Option<f64>,
    pub model: PathBuf,
    pub seconds: f64,
}

fn checkpoint_dir(out: &Path, step: u64) -> PathBuf {
    out.join("checkpoints").join(format!("step-{step:08}"))
}

fn list_checkpoints(out: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let dir = out.join("checkpoints");
    let mut found = Vec::new();
    if dir.is_dir() {
        for e in
            std::fs::read_dir(&dir).with_context(|| format!("{}: cannot list", dir.display()))?
        {
            let p = e?.path();
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(step) = name
                .strip_prefix("step-")
                .and_then(|s| s.parse::<u64>().ok())
            {
                if p.join("state.json").is_file() {
                    found.push((step, p));
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

fn named_tensors(vars: &[(String, Var)], extra: &VarMap) -> HashMap<String, Tensor> {
    let mut out: HashMap<String, Tensor> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    for (n, v) in extra
        .data()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        out.entry(n.clone())
            .or_insert_with(|| v.as_tensor().clone());
    }
    out
}

/// Writes a checkpoint folder atomically (a temporary folder renamed into place).
fn save_checkpoint(
    out: &Path,
    step: u64,
    weights: &HashMap<String, Tensor>,
    opt: &AdamW,
    state: &CheckpointState,
) -> Result<()> {
    let final_dir = checkpoint_dir(out, step);
    let tmp = out.join("checkpoints").join(format!(".step-{step:08}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    candle_core::safetensors::save(weights, tmp.join("model.safetensors"))?;
    candle_core::safetensors::save(&opt.state(), tmp.join("optimizer.safetensors"))?;
    std::fs::write(tmp.join("state.json"), serde_json::to_string_pretty(state)?)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)?;
    }
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("{}: cannot write", final_dir.display()))?;
    Ok(())
}

/// Removes checkpoints beyond the best `keep_best` by validation WER, the latest, and the last `average` ones.
fn prune(out: &Path, keep_best: usize, average: usize) -> Result<()> {
    let all = list_checkpoints(out)?;
    let mut scored: Vec<(f64, u64)> = Vec::new();
    for (step, dir) in &all {
        let st: CheckpointState =
            serde_json::from_str(&std::fs::read_to_string(dir.join("state.json"))?)?;
        scored.push((st.val_wer.unwrap_or(f64::INFINITY), *step));
    }
    scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut keep: std::collections::HashSet<u64> =
        scored.iter().take(keep_best).map(|s| s.1).collect();
    keep.extend(all.iter().rev().take(average.max(1)).map(|s| s.0));
    for (step, dir) in all {
        if !keep.contains(&step) {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("{}: cannot remove", dir.display()))?;
        }
    }
    Ok(())
}

/// Builds the model config of a run: the preset or explicit encoder, else the config of the `init_from` model
/// (`init`), else the `tiny` preset.
fn model_config(
    cfg: &TrainConfig,
    vocab: usize,
    init: Option<&ModelConfig>,
) -> Result<ModelConfig> {
    let mut mc = match (init, cfg.model.as_deref(), &cfg.encoder) {
        (Some(init), _, _) if init.transducer.is_some() => {
            bail!("init_from: an RNN-T model; mezcla trains CTC models only")
        }
        (Some(init), None, None) => {
            let mut mc = init.clone();
            mc.vocab_size = vocab;
            mc
        }
        (_, preset, _) => ModelConfig::new(preset.unwrap_or("tiny"), vocab)?,
    };
    if let Some(enc) = &cfg.encoder {
        mc.encoder = enc.clone();
        mc.preprocessor.features = enc.feat_in;
    }
    if let Some(p) = cfg.optim.dropout {
        mc.encoder.dropout = p;
        mc.encoder.dropout_pre_encoder = p;
        mc.encoder.dropout_emb = p;
        mc.encoder.dropout_att = p;
    }
    mc.encoder.validate().map_err(anyhow::Error::msg)?;
    Ok(mc)
}

fn load_mixer(cfg: &CsMixingConfig, sample_rate: u32, max_batch: f64) -> Result<data::Mixer> {
    let inputs: Vec<(String, PathBuf)> = cfg
        .manifests
        .iter()
        .map(|(l, p)| (l.clone(), p.clone()))
        .collect();
    let pools: Vec<Pool> = mezcla_datagen::cs::load_pools(&inputs, cfg.max_duration)?;
    let n = pools.len();
    let plan = PlanConfig {
        min_duration: cfg.min_duration,
        max_duration: cfg.max_duration,
        hours: 1e-9,
        probs: cfg.probs.clone().unwrap_or_else(|| vec![1.0 / n as f64; n]),
        min_monolingual: cfg.min_monolingual,
        prefer_unused: cfg.prefer_unused,
        seed: 0,
    };
    plan.validate(&pools)
        .map_err(|e| anyhow::anyhow!("cs_mixing: {e}"))?;
    Ok(data::Mixer {
        pools: Arc::new(pools),
        plan,
        audio: AudioConfig {
            sample_rate,
            level: Level::RmsDb(cfg.db_norm),
            pause_start_ms: cfg.pause_start,
            pause_join_ms: cfg.pause_join,
            pause_end_ms: cfg.pause_end,
        },
        probability: cfg.batch_probability,
        per_batch: ((max_batch / cfg.max_duration).floor() as usize).max(1),
    })
}

/// Trains (or, with `resume`, continues from the latest checkpoint) and exports `OUT/model`.
pub fn run(cfg: &TrainConfig, resume: bool, progress: bool) -> Result<TrainSummary> {
    let started = Instant::now();
    let device = Device::Cpu;
    let tokenizer = ConcatTokenizer::load(&cfg.tokenizer)
        .with_context(|| format!("{}: cannot load the tokenizer", cfg.tokenizer.display()))?;
    let init = match &cfg.init_from {
        Some(path) => Some(
            crate::nemo::model_tensors(path)
                .with_context(|| format!("init_from {}", path.display()))?,
        ),
        None => None,
    };
    let mc = model_config(cfg, tokenizer.vocab_size(), init.as_ref().map(|i| &i.0))?;
    let out = &cfg.out_dir;
    let existing = list_checkpoints(out)?;
    if !resume && !existing.is_empty() {
        bail!(
            "{}: holds checkpoints of an earlier run; continue it with --resume or use a new out_dir",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;

    let mut train: Vec<crate::dataset::Utterance> = Vec::new();
    for m in &cfg.train_manifests {
        train.extend(crate::dataset::load(m, &tokenizer)?);
    }
    let mut val = Vec::new();
    for m in &cfg.val_manifests {
        val.extend(crate::dataset::load(m, &tokenizer)?);
    }

    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &device);
    let model = AsrModel::build(mc.clone(), tokenizer.clone(), vb, &device)?;
    // The layer range needs the model's depth, known only now (a preset, `[encoder]` or `init_from`).
    if let Err(e) = cfg.interctc.validate(mc.encoder.n_layers) {
        bail!("the train config's {e}");
    }
    // Seeded initial weights: candle's initialisers draw from an unseeded generator, so every variable is
    // re-drawn here from the run's seed with the same distribution family (uniform ±1/sqrt(fan_in)).
    init_weights(&vars, cfg.seed)?;
    if let (Some((_, tensors)), Some(path)) = (&init, &cfg.init_from) {
        set_weights(&vars, tensors).with_context(|| format!("init_from {}", path.display()))?;
    }
    let trainable: Vec<(String, Var)> = {
        let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
        data.iter()
            .filter(|(n, _)| !n.contains("running_"))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    };
    let parameters: usize = trainable.iter().map(|(_, v)| v.elem_count()).sum();
    let mut opt = AdamW::new(
        trainable,
        cfg.optim.betas[0],
        cfg.optim.betas[1],
        cfg.optim.weight_decay,
    )?;

    let mut start_step = 0u64;
    let mut history: Vec<MetricsLine> = Vec::new();
    let metrics_path = out.join("metrics.jsonl");
    if resume {
        if let Some((step, dir)) = existing.last() {
            let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &device)?;
            for (name, var) in vars.data().lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let t = weights
                    .get(name)
                    .with_context(|| format!("{}: the checkpoint lacks {name}", dir.display()))?;
                var.set(t)?;
            }
            let state = candle_core::safetensors::load(dir.join("optimizer.safetensors"), &device)?;
            opt.load_state(&state, *step)?;
            start_step = *step;
            if metrics_path.is_file() {
                for line in std::fs::read_to_string(&metrics_path)?.lines() {
                    let m: MetricsLine = serde_json::from_str(line)
                        .with_context(|| format!("{}: corrupt line", metrics_path.display()))?;
                    if m.step <= start_step {
                        history.push(m);
                    }
                }
            }
        }
    }
    if start_step >= cfg.max_steps {
        bail!(
            "{}: already trained for {} steps (max_steps {})",
            out.display(),
            start_step,
            cfg.max_steps
        );
    }
    // metrics.jsonl holds exactly the steps behind the latest checkpoint, then grows a line per step.
    write_metrics(&metrics_path, &history)?;
    let mut metrics_file = std::fs::OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("{}: cannot open", metrics_path.display()))?;
    // Without a terminal (a background run), progress goes to stderr as plain lines.
    let plain_log = progress && !std::io::IsTerminal::is_terminal(&std::io::stderr());

    let accumulate = cfg.batch.accumulate.max(1) as u64;
    let spec_augment = match &cfg.spec_augment {
        Some(c) => Some(SpecAugment::new(c)?),
        None => None,
    };
    let mixer = match &cfg.cs_mixing {
        Some(c) => Some(load_mixer(c, model.sample_rate(), cfg.batch.max_duration)?),
        None => None,
    };
    if cfg.batch.short_first_steps > 0
        && !train
            .iter()
            .any(|u| u.duration <= cfg.batch.short_first_max_duration)
    {
        bail!(
            "batch.short_first_steps: no training utterance is {} s or shorter (batch.short_first_max_duration)",
            cfg.batch.short_first_max_duration
        );
    }
    let rx = data::start(data::LoaderSpec {
        utts: Arc::new(train),
        tokenizer: Arc::new(tokenizer.clone()),
        frontend: Arc::new(mezcla_models::frontend::MelFrontend::with_options(
            &mc.preprocessor,
            mezcla_models::frontend::FrontendOptions {
                legacy: mc.legacy_frontend,
                ..Default::default()
            },
        )?),
        spec_augment,
        mixer,
        max_duration: cfg.batch.max_duration,
        buckets: cfg.batch.buckets,
        seed: cfg.seed,
        sample_rate: model.sample_rate(),
        start: start_step * accumulate,
        count: (cfg.max_steps - start_step) * accumulate,
        short_first: data::ShortFirst {
            batches: cfg.batch.short_first_steps * accumulate,
            max_duration: cfg.batch.short_first_max_duration,
            utterances: cfg.batch.short_first_utterances,
        },
    });

    let bar = indicatif::ProgressBar::with_draw_target(
        Some(cfg.max_steps),
        if progress {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} step {pos}/{len} {msg} ETA {eta}",
        )
        .expect("valid template"),
    );
    bar.set_position(start_step);
    let ctc = CtcOptions {
        reduction: Reduction::MeanBatch,
        zero_infinity: true,
        ..Default::default()
    };
    let mut last_loss = f64::NAN;
    let mut window_start = Instant::now();
    let mut window_steps = 0u64;
    for step in start_step + 1..=cfg.max_steps {
        let mut grads: HashMap<String, Tensor> = HashMap::new();
        let mut loss_sum = 0f64;
        let mut loss_per_token = 0f64;
        let mut final_sum: Option<f64> = None;
        let mut inter_sums: Option<BTreeMap<String, f64>> = None;
        for _ in 0..accumulate {
            let batch = rx.recv().context("the data loader stopped")??;
            mezcla_models::layers::seed_dropout(data::derive_seed(cfg.seed, 6, batch.index));
            let losses = ctc_losses(
                &model.encoder,
                model.head.as_ref().context("the model has no CTC head")?,
                &batch.features,
                &batch.lengths,
                &batch.targets,
                &batch.target_lengths,
                &cfg.interctc,
                &ctc,
                true,
            )?;
            let loss = (losses.total / accumulate as f64)?;
            let value = loss.to_scalar::<f32>()? as f64;
            loss_sum += value;
            let final_value = losses.final_loss.to_scalar::<f32>()? as f64 / accumulate as f64;
            let tokens = batch.target_lengths.iter().sum::<usize>().max(1) as f64;
            loss_per_token += final_value * batch.target_lengths.len() as f64 / tokens;
            if cfg.interctc.enabled() {
                *final_sum.get_or_insert(0.0) += final_value;
                let inter = inter_sums.get_or_insert_with(BTreeMap::new);
                for (layer, l) in &losses.intermediate {
                    *inter.entry(format!("l{layer}")).or_insert(0.0) +=
                        l.to_scalar::<f32>()? as f64 / accumulate as f64;
                }
            }
            let g = loss.backward()?;
            for (name, var) in opt.vars() {
                if let Some(t) = g.get(var.as_tensor()) {
                    // Detached: a gradient built by candle's backward may keep the step's graph alive.
                    let t = t.detach();
                    match grads.get_mut(name) {
                        Some(acc) => *acc = (&*acc + t)?,
                        None => {
                            grads.insert(name.clone(), t);
                        }
                    }
                }
            }
        }
        if !loss_sum.is_finite() {
            bail!("the loss became {loss_sum} at step {step}; lower optim.lr or check the data");
        }
        let grad_norm = optim::clip_grad_norm(&mut grads, cfg.optim.grad_clip)?;
        let lr = optim::learning_rate(
            cfg.optim.schedule,
            cfg.optim.lr,
            cfg.optim.min_lr,
            cfg.optim.warmup_steps,
            cfg.max_steps,
            step,
        );
        opt.update(&grads, lr)?;
        last_loss = loss_sum;
        window_steps += 1;
        let sps = window_steps as f64 / window_start.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(step);
        bar.set_message(format!("loss {loss_sum:.3} lr {lr:.2e} {sps:.2} steps/s"));

        let mut line = MetricsLine {
            step,
            loss: loss_sum,
            loss_per_token,
            final_loss: final_sum,
            inter_ctc_loss: inter_sums,
            lr,
            grad_norm,
            steps_per_second: sps,
            val_wer: None,
            val_cer: None,
            val_token_lid: None,
            val_utterance_lid: None,
        };
        let boundary = step % cfg.eval.every == 0 || step == cfg.max_steps;
        if boundary {
            if !val.is_empty() {
                let (s, _) = bar.suspend(|| {
                    crate::evaluate::evaluate(&model, &val, &DecodeOptions::default(), false)
                })?;
                line.val_wer = Some(s.wer);
                line.val_cer = Some(s.cer);
                line.val_token_lid = s.token_lid_accuracy;
                line.val_utterance_lid = s.utterance_lid_accuracy;
            }
            let weights = named_tensors(opt.vars(), &vars);
            save_checkpoint(
                out,
                step,
                &weights,
                &opt,
                &CheckpointState {
                    step,
                    val_wer: line.val_wer,
                    loss: loss_sum,
                },
            )?;
            prune(out, cfg.eval.keep_best, cfg.eval.average_last)?;
            window_start = Instant::now();
            window_steps = 0;
        }
        {
            use std::io::Write as _;
            let mut text = serde_json::to_string(&line)?;
            text.push('\n');
            metrics_file
                .write_all(text.as_bytes())
                .with_context(|| format!("{}: cannot write", metrics_path.display()))?;
        }
        if plain_log && (step % 10 == 0 || boundary) {
            let val = line
                .val_wer
                .map(|w| format!(", validation WER {:.2}%", w * 100.0))
                .unwrap_or_default();
            eprintln!(
                "step {step}/{}: loss {:.4}, lr {:.2e}, {:.2} steps/s{val}",
                cfg.max_steps, line.loss, line.lr, line.steps_per_second
            );
        }
        history.push(line);
        if boundary {
            curve::write_svg(&out.join("curve.svg"), &history)?;
        }
    }
    bar.finish_and_clear();

    // Export: the average of the last N checkpoints.
    let all = list_checkpoints(out)?;
    let chosen: Vec<&PathBuf> = all
        .iter()
        .rev()
        .take(cfg.eval.average_last.max(1))
        .map(|(_, p)| p)
        .collect();
    let mut sum: HashMap<String, Tensor> = HashMap::new();
    for dir in &chosen {
        for (name, t) in candle_core::safetensors::load(dir.join("model.safetensors"), &device)? {
            match sum.get_mut(&name) {
                Some(acc) => *acc = (&*acc + t)?,
                None => {
                    sum.insert(name, t);
                }
            }
        }
    }
    let n = chosen.len() as f64;
    let averaged: HashMap<String, Tensor> = sum
        .into_iter()
        .map(|(k, v)| Ok((k, (v / n)?)))
        .collect::<Result<_>>()?;
    let model_dir = out.join("model");
    save_model(&model_dir, &mc, &averaged, &tokenizer)?;
    let best = history
        .iter()
        .filter_map(|m| m.val_wer)
        .fold(None, |b: Option<f64>, w| Some(b.map_or(w, |b| b.min(w))));
    Ok(TrainSummary {
        steps: cfg.max_steps,
        parameters,
        final_loss: last_loss,
        best_val_wer: best,
        model: model_dir,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Sets every variable from `tensors` (same name and shape); a missing or mis-shaped tensor is an error.
fn set_weights(vars: &VarMap, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let t = tensors
            .get(name)
            .with_context(|| format!("the model has no weight {name}"))?;
        if t.dims() != var.dims() {
            bail!(
                "weight {name} has shape {:?}, the model being trained needs {:?}",
                t.dims(),
                var.dims()
            );
        }
        var.set(&t.to_dtype(DType::F32)?)?;
    }
    Ok(())
}

fn write_metrics(path: &Path, history: &[MetricsLine]) -> Result<()> {
    let mut text = String::new();
    for m in history {
        text.push_str(&serde_json::to_string(m)?);
        text.push('\n');
    }
    mezcla_datagen::atomic::write_atomic(path, text.as_bytes())
        .with_context(|| format!("{}: cannot write", path.display()))
}

/// Re-draws every variable from the seed with the initialisation NeMo's Conformer-CTC gets from PyTorch: Linear
/// and Conv weights and their biases uniform in ±1/sqrt(fan_in) of the weight, the CTC head's weight
/// Xavier-uniform (NeMo's `init_weights(mode="xavier_uniform")` of ConvASRDecoder), LayerNorm/BatchNorm scales 1
/// and shifts 0, running statistics at their identity, pos_bias_u/v 0.
pub fn init_weights(vars: &VarMap, seed: u64) -> Result<()> {
    use rand::{Rng, SeedableRng};
    let data = vars.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let fan_in = |dims: &[usize]| -> usize {
        if dims.len() >= 2 {
            dims[1..].iter().product::<usize>()
        } else {
            dims[0]
        }
    };
    for (k, name) in names.into_iter().enumerate() {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n = var.elem_count();
        let (module, leaf) = name.rsplit_once('.').unwrap_or(("", name));
        let is_norm = name.contains("norm") && !name.contains("pointwise");
        let bound = if leaf == "running_var" || (is_norm && leaf == "weight") {
            None
        } else if leaf == "running_mean" || is_norm || leaf.starts_with("pos_bias") {
            Some(0.0)
        } else if leaf == "bias" {
            // PyTorch bounds a bias by its weight's fan-in.
            let weight = data
                .get(&format!("{module}.weight"))
                .with_context(|| format!("bias {name} has no {module}.weight"))?;
            Some(1.0 / (fan_in(weight.dims()).max(1) as f32).sqrt())
        } else if module.starts_with("decoder.") && dims.len() >= 2 {
            let receptive: usize = dims[2..].iter().product();
            let fans = (dims[0] + dims[1]) * receptive;
            Some((6.0 / fans.max(1) as f32).sqrt())
        } else {
            Some(1.0 / (fan_in(&dims).max(1) as f32).sqrt())
        };
        let values: Vec<f32> = match bound {
            None => vec![1.0; n],
            Some(0.0) => vec![0.0; n],
            Some(b) => {
                let mut rng =
                    rand_chacha::ChaCha8Rng::seed_from_u64(data::derive_seed(seed, 7, k as u64));
                (0..n).map(|_| rng.random_range(-b..b)).collect()
            }
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    Ok(())
}
