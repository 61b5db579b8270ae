//! The training loop: ε-prediction MSE (action MSE or cross-entropy for the
//! baselines), Adam
//! with warm-up and cosine decay, an EMA of the weights, observation dropout
//! for classifier-free guidance, checkpoints and exact resume.
//!
//! Determinism: the randomness of step `s` comes from a ChaCha stream seeded
//! with `(seed, s)`, so a resumed run takes exactly the batches, time steps
//! and noise of an uninterrupted one.

use crate::checkpoint::{self, CheckpointMeta, files};
use crate::config::TrainConfig;
use crate::data::Dataset;
use crate::error::TrainError;
use crate::model::{Policy, PolicySpec};
use burn::grad_clipping::GradientClippingConfig;
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use diffbc_runtime::{NoiseSchedule, Normalizer};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::path::Path;
use std::time::Instant;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrainOutcome {
    /// Steps taken in total.
    pub steps: usize,
    /// Trainable parameters of the network.
    pub parameters: usize,
    /// Loss of the first step this run took (NaN if it took none).
    pub first_loss: f64,
    /// Smoothed training loss at the end.
    pub train_loss: f64,
    /// Loss of the EMA weights on the held-out split (same objective).
    pub test_loss: f64,
    /// Loss on the held-out split before training (same noise), for comparison.
    pub initial_test_loss: f64,
    /// Steps per second of this run (excluding checkpoints).
    pub steps_per_second: f64,
    /// Steps per second after the first [`WARM_UP_STEPS`] of this run
    /// (a GPU backend compiles and tunes its kernels on the first steps);
    /// NaN for a run that took no more steps than that.
    pub steady_steps_per_second: f64,
}

/// Steps of a run left out of [`TrainOutcome::steady_steps_per_second`].
pub const WARM_UP_STEPS: usize = 20;

/// Options that do not change the result.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Continue from the checkpoint in the output folder.
    pub resume: bool,
    /// Draw a progress bar.
    pub progress: bool,
    /// Stop (and checkpoint) after this step even if `optim.steps` is larger;
    /// a later `resume` continues exactly where this run stopped.
    pub stop_at: Option<usize>,
    /// Replace a checkpoint already in the output folder (never anything
    /// else: see [`checkpoint::claim`]).
    pub force: bool,
}

/// A data set in normalised units, ready for batching.
struct Prepared {
    frame_len: usize,
    frames: Vec<f32>,
    frame_index: Vec<u32>,
    actions: Vec<f32>,
    history: usize,
    action_dim: usize,
}

impl Prepared {
    fn new(
        data: &Dataset,
        obs_norm: &Normalizer,
        act_norm: &Normalizer,
    ) -> Result<Self, TrainError> {
        let mut frames = data.frames.clone();
        obs_norm
            .normalize("observation frames", &mut frames)
            .map_err(|e| TrainError::Data(e.to_string()))?;
        let mut actions = data.actions.clone();
        act_norm
            .normalize("actions", &mut actions)
            .map_err(|e| TrainError::Data(e.to_string()))?;
        Ok(Self {
            frame_len: data.obs.len(),
            frames,
            frame_index: data.frame_index.clone(),
            actions,
            history: data.history,
            action_dim: data.action_dim,
        })
    }

    fn len(&self) -> usize {
        self.actions.len() / self.action_dim
    }
}

/// One batch, as host vectors.
struct Batch {
    /// Distinct frames used, `[u, frame_len]`.
    frames: Vec<f32>,
    distinct: usize,
    /// For each sample and frame slot, the row in `frames`, `[b · (k+1)]`.
    slot: Vec<i32>,
    /// 1 keeps the observation, 0 drops it (guidance training).
    keep: Vec<f32>,
    /// Clean actions `[b, A]`.
    clean: Vec<f32>,
    /// Noisy actions `[b, A]` (diffusion).
    noisy: Vec<f32>,
    /// Noise `[b, A]`.
    noise: Vec<f32>,
    /// τ/T `[b, 1]`.
    t: Vec<f32>,
    rows: usize,
}

/// What training does to the `mode[k]` channels of a batch's samples.
#[derive(Debug, Clone, Copy)]
struct ModeNoise<'a> {
    /// Where the channels sit in a frame.
    channels: &'a std::ops::Range<usize>,
    /// Probability of dropping a sample's mode (all channels 0).
    drop: f64,
    /// Probability of widening a kept mode to a random set holding it.
    widen: f64,
}

fn make_batch(
    p: &Prepared,
    rows: &[usize],
    schedule: &NoiseSchedule,
    dropout: f64,
    modes: Option<ModeNoise<'_>>,
    rng: &mut ChaCha8Rng,
) -> Batch {
    let (a, h) = (p.action_dim, p.history + 1);
    let mut ids: Vec<u32> = rows
        .iter()
        .flat_map(|&r| p.frame_index[r * h..(r + 1) * h].iter().copied())
        .collect();
    let slot_ids = ids.clone();
    ids.sort_unstable();
    ids.dedup();
    let slot: Vec<i32> = slot_ids
        .iter()
        .map(|f| ids.binary_search(f).map(|i| i as i32).unwrap_or(0))
        .collect();
    let mut frames = Vec::with_capacity(ids.len() * p.frame_len);
    for &f in &ids {
        let f = f as usize;
        frames.extend_from_slice(&p.frames[f * p.frame_len..(f + 1) * p.frame_len]);
    }
    let n = rows.len();
    let mut clean = Vec::with_capacity(n * a);
    for &r in rows {
        clean.extend_from_slice(&p.actions[r * a..(r + 1) * a]);
    }
    let keep = (0..n)
        .map(|_| {
            if dropout > 0.0 && rng.random::<f64>() < dropout {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    let mut noise = vec![0.0f32; n * a];
    let mut noisy = vec![0.0f32; n * a];
    let mut t = vec![0.0f32; n];
    for i in 0..n {
        let tau = rng.random_range(1..=schedule.steps());
        t[i] = schedule.time_input(tau);
        for v in &mut noise[i * a..(i + 1) * a] {
            *v = rng.sample(StandardNormal);
        }
        schedule.add_noise(
            tau,
            &clean[i * a..(i + 1) * a],
            &noise[i * a..(i + 1) * a],
            &mut noisy[i * a..(i + 1) * a],
        );
    }
    let mut distinct = ids.len();
    let mut slot = slot;
    if let Some(m) = modes
        && (m.drop > 0.0 || m.widen > 0.0)
    {
        let channels = m.channels.clone();
        let k = channels.len();
        let mut set = vec![false; k];
        // A sample whose mode is dropped or widened gets its own copies of
        // its frames with the new mode input (frames are shared between
        // samples). Dropped: every channel 0. Widened: a hard set — its own
        // mode (the largest channel of its latest frame, the codes being
        // soft) and every other mode with probability 1/2, the same set in
        // each of its frames; never all of them, since "any mode" is the
        // no-mode input dropout teaches (so with two modes nothing widens).
        for i in 0..n {
            let widen = if m.drop > 0.0 && rng.random::<f64>() < m.drop {
                false
            } else if m.widen > 0.0 && k > 2 && rng.random::<f64>() < m.widen {
                let at = slot[i * h + h - 1] as usize * p.frame_len;
                let own = frames[at + channels.start..at + channels.end]
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(j, _)| j);
                for (j, s) in set.iter_mut().enumerate() {
                    *s = j == own || rng.random::<bool>();
                }
                if !set.contains(&false) {
                    // Every other mode joined: one of them leaves.
                    let leave = (own + 1 + rng.random_range(0..k - 1)) % k;
                    set[leave] = false;
                }
                true
            } else {
                continue;
            };
            for s in &mut slot[i * h..(i + 1) * h] {
                let from = *s as usize * p.frame_len;
                frames.extend_from_within(from..from + p.frame_len);
                let at = distinct * p.frame_len;
                let mode = &mut frames[at + channels.start..at + channels.end];
                if widen {
                    for (v, &member) in mode.iter_mut().zip(&set) {
                        *v = f32::from(u8::from(member));
                    }
                } else {
                    mode.fill(0.0);
                }
                *s = distinct as i32;
                distinct += 1;
            }
        }
    }
    // Pad the distinct frames to a bucket (copies of the first, which no
    // slot gathers): the encoder's batch then takes a few shapes over a run
    // instead of a new one every step, which a GPU backend would compile and
    // autotune anew (on an H200, burn-CUDA spent its whole 100-s budget
    // tuning matrix products of ever-new sizes). Rows are independent, so
    // the loss and gradients are those of the unpadded batch.
    let padded = frame_bucket(distinct);
    for _ in distinct..padded {
        frames.extend_from_within(0..p.frame_len);
    }
    let distinct = padded;
    Batch {
        distinct,
        frames,
        slot,
        keep,
        clean,
        noisy,
        noise,
        t,
        rows: n,
    }
}

/// The smallest of 1, 2, 3, 4, 6, 8, 12, 16, 24, … (2^k and 3·2^k) that holds
/// `n` rows: less than half again `n`, two sizes per octave.
fn frame_bucket(n: usize) -> usize {
    let pow = n.max(1).next_power_of_two();
    let three_quarters = pow / 4 * 3;
    if pow >= 4 && three_quarters >= n {
        three_quarters
    } else {
        pow
    }
}

/// The per-step random stream.
fn step_rng(seed: u64, step: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(step as u64 + 1);
    rng
}

/// Loss of `model` on `batch` (ε-MSE for diffusion, action MSE for regression).
fn batch_loss<B: Backend>(
    model: &Policy<B>,
    batch: &Batch,
    spec: &PolicySpec,
    device: &B::Device,
) -> Tensor<B, 1> {
    let (a, h, n) = (spec.action_dim, spec.frames(), batch.rows);
    let frames = Tensor::<B, 2>::from_data(
        TensorData::new(batch.frames.clone(), [batch.distinct, spec.obs.len()]),
        device,
    );
    let slot = Tensor::<B, 1, Int>::from_data(TensorData::new(batch.slot.clone(), [n * h]), device);
    let per_frame = model.encode_frames(frames).select(0, slot);
    let emb = per_frame.reshape([n, h * spec.frame_embedding()]);
    let keep = Tensor::<B, 2>::from_data(TensorData::new(batch.keep.clone(), [n, 1]), device);
    let emb = emb * keep;
    let tensor = |v: &Vec<f32>, cols: usize| {
        Tensor::<B, 2>::from_data(TensorData::new(v.clone(), [n, cols]), device)
    };
    // The head decides the objective (the method chose the head).
    if let Some(loss) = model.classifier_loss(emb.clone(), tensor(&batch.clean, a)) {
        return loss;
    }
    let (pred, target) = if model.is_denoiser() {
        (
            model.head_forward(emb, tensor(&batch.noisy, a), tensor(&batch.t, 1)),
            tensor(&batch.noise, a),
        )
    } else {
        (
            model.head_forward(emb, tensor(&batch.clean, a), tensor(&batch.t, 1)),
            tensor(&batch.clean, a),
        )
    };
    (pred - target).powf_scalar(2.0).mean()
}

/// Learning rate at `step`: linear warm-up, then cosine decay to `lr_min`.
pub fn learning_rate(config: &TrainConfig, step: usize) -> f64 {
    let o = &config.optim;
    if step < o.warmup_steps {
        return o.lr * (step + 1) as f64 / o.warmup_steps as f64;
    }
    let span = o.steps.saturating_sub(o.warmup_steps).max(1) as f64;
    let progress = ((step - o.warmup_steps) as f64 / span).min(1.0);
    o.lr_min + 0.5 * (o.lr - o.lr_min) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Flattened copies of every float parameter, in visiting order.
fn flat_params<B: Backend, M: Module<B>>(module: &M) -> Vec<Tensor<B, 1>> {
    struct Flat<B: Backend>(Vec<Tensor<B, 1>>);
    impl<B: Backend> ModuleVisitor<B> for Flat<B> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            let t = p.val();
            let n = t.shape().num_elements();
            self.0.push(t.reshape([n]));
        }
    }
    let mut v = Flat(Vec::new());
    module.visit(&mut v);
    v.0
}

/// Replace every float parameter by the matching flat tensor.
fn assign_params<B: Backend, M: Module<B>>(module: M, values: &[Tensor<B, 1>]) -> M {
    struct Assign<'a, B: Backend>(&'a [Tensor<B, 1>], usize);
    impl<B: Backend> ModuleMapper<B> for Assign<'_, B> {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, value, mapper) = p.consume();
            let shape = value.shape();
            let v = self.0[self.1].clone().reshape(shape);
            self.1 += 1;
            Param::from_mapped_value(id, v, mapper)
        }
    }
    module.map(&mut Assign(values, 0))
}

/// Mean loss over a whole split with fixed noise (seeded), in batches.
fn split_loss<B: Backend>(
    model: &Policy<B>,
    data: &Prepared,
    spec: &PolicySpec,
    schedule: &NoiseSchedule,
    seed: u64,
    device: &B::Device,
) -> f64 {
    let n = data.len();
    if n == 0 {
        return f64::NAN;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7e57);
    let (mut total, mut count) = (0.0, 0usize);
    let rows: Vec<usize> = (0..n).collect();
    for chunk in rows.chunks(512) {
        let b = make_batch(data, chunk, schedule, 0.0, None, &mut rng);
        let l: f64 = batch_loss(model, &b, spec, device).into_scalar().elem();
        total += l * chunk.len() as f64;
        count += chunk.len();
    }
    total / count as f64
}

/// Train a policy on `data` into the checkpoint folder `out`.
pub fn train<B: AutodiffBackend>(
    config: &TrainConfig,
    data: &Dataset,
    out: &Path,
    device: &B::Device,
    options: RunOptions,
) -> Result<TrainOutcome, TrainError> {
    config.validate()?;
    data.validate()?;
    if data.history != config.history {
        return Err(TrainError::config(
            "history",
            format!(
                "is {} but the data set was built with {}",
                config.history, data.history
            ),
        ));
    }
    if data.horizon != config.chunk.horizon {
        return Err(TrainError::config(
            "chunk.horizon",
            format!(
                "is {} but the data set was built with {}-action chunks",
                config.chunk.horizon, data.horizon
            ),
        ));
    }
    let schedule = NoiseSchedule::new(&config.diffusion)
        .map_err(|e| TrainError::config("diffusion", e.to_string()))?;
    let mode_channels = data.mode_channels()?;
    if mode_channels.is_some() && data.obs.norm_group() != 1 {
        return Err(TrainError::Data(
            "mode[k] channels need a vector observation (an image's channels are normalised as groups)".into(),
        ));
    }
    for (field, p) in [
        ("mode_dropout", config.mode_dropout),
        ("mode_sets", config.mode_sets),
    ] {
        if p > 0.0 && mode_channels.is_none() {
            return Err(TrainError::config(
                field,
                "is set but the data has no mode[k] observation channels (see `diffbc modes`)",
            ));
        }
    }
    let (train_set, test_set) = data.split(config.data.test_fraction, config.seed);
    if train_set.is_empty() || test_set.is_empty() {
        return Err(TrainError::Data(format!(
            "{} samples are too few: with data.test_fraction {} the {} split is empty (the held-out loss would be NaN); record more demonstrations",
            data.len(),
            config.data.test_fraction,
            if train_set.is_empty() {
                "training"
            } else {
                "held-out"
            }
        )));
    }
    if data.len() < 100 {
        tracing::warn!(
            samples = data.len(),
            "very few training samples: the policy will mostly memorise them"
        );
    }
    if !options.resume {
        // Before any work: an output that is not ours is never replaced.
        checkpoint::claim(out, options.force)?;
    }
    let spec = PolicySpec {
        config: config.clone(),
        obs: data.obs,
        action_dim: data.action_dim,
    };
    spec.validate()?;

    let mut model: Policy<B> = spec.init_seeded(device, config.seed);
    let mut optim = AdamConfig::new()
        .with_grad_clipping(config.optim.grad_clip.map(GradientClippingConfig::Norm))
        .init::<B, Policy<B>>();

    let (mut start, obs_norm, act_norm, mut ema, mut smoothed) = if options.resume {
        let (saved, meta) = checkpoint::read_meta(out)?;
        if &saved != config {
            return Err(TrainError::Checkpoint {
                path: out.join(files::CONFIG),
                message: "cannot resume: the checkpoint was trained with a different config".into(),
            });
        }
        model = checkpoint::load_module(model, out, files::RAW, device)?;
        let record = burn::record::Recorder::<B>::load(
            &checkpoint::Recorder::new(),
            out.join(files::OPTIM),
            device,
        )
        .map_err(|e| TrainError::Checkpoint {
            path: out.join("optim.mpk"),
            message: e.to_string(),
        })?;
        optim = optim.load_record(record);
        let ema_model: Policy<B::InnerBackend> =
            checkpoint::load_module(spec.init(device), out, files::MODEL, device)?;
        (
            meta.step,
            meta.obs_normalizer,
            meta.action_normalizer,
            flat_params(&ema_model),
            meta.train_loss,
        )
    } else {
        let mut obs_norm = train_set.fit_obs_normalizer()?;
        // Mode channels stay in their own units (soft codes in [0, 1]), so
        // that 0 — no mode — is 0 to the network too (mode dropout).
        if let Some(c) = &mode_channels {
            obs_norm.mean[c.clone()].fill(0.0);
            obs_norm.std[c.clone()].fill(1.0);
        }
        let act_norm = train_set.fit_action_normalizer(config.action_scaling)?;
        let ema = flat_params(&model.valid());
        (0, obs_norm, act_norm, ema, f64::NAN)
    };
    let train_p = Prepared::new(&train_set, &obs_norm, &act_norm)?;
    let test_p = Prepared::new(&test_set, &obs_norm, &act_norm)?;
    if start == 0 {
        // Bin ranges and K-means centres come from the training actions (a
        // resumed run reads them from the checkpoint).
        model = model.fit_to_actions(&train_p.actions, &config.baseline, config.seed);
        ema = flat_params(&model.valid());
    }
    let initial_test_loss = if start == 0 {
        split_loss(
            &model.valid(),
            &test_p,
            &spec,
            &schedule,
            config.seed,
            device,
        )
    } else {
        f64::NAN
    };

    let total = config.optim.steps;
    let stop = options.stop_at.unwrap_or(total).min(total);
    let bar = if options.progress {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(format!("{} {}", config.task, config.method.name()));
    bar.set_position(start as u64);

    let t0 = Instant::now();
    let mut save_time = 0.0;
    let first = start;
    let mut first_loss = f64::NAN;
    // (clock, checkpoint time so far) when the warm-up steps were done.
    let mut warm: Option<(Instant, f64)> = None;
    let ema_decay = config.optim.ema_decay;
    while start < stop {
        let step = start;
        let mut rng = step_rng(config.seed, step);
        let rows: Vec<usize> = (0..config.optim.batch_size)
            .map(|_| rng.random_range(0..train_p.len()))
            .collect();
        let batch = make_batch(
            &train_p,
            &rows,
            &schedule,
            config.obs_dropout,
            mode_channels.as_ref().map(|channels| ModeNoise {
                channels,
                drop: config.mode_dropout,
                widen: config.mode_sets,
            }),
            &mut rng,
        );
        let loss = batch_loss(&model, &batch, &spec, device);
        let value: f64 = loss.clone().into_scalar().elem();
        if !value.is_finite() {
            return Err(TrainError::Data(format!(
                "loss became {value} at step {step}; lower optim.lr"
            )));
        }
        if step == first {
            first_loss = value;
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(learning_rate(config, step), model, grads);
        // EMA with the usual warm-up so early weights do not dominate.
        let d = ema_decay.min((1.0 + step as f64) / (10.0 + step as f64));
        let current = flat_params(&model.valid());
        for (e, p) in ema.iter_mut().zip(current) {
            *e = e.clone().mul_scalar(d) + p.mul_scalar(1.0 - d);
        }
        smoothed = if smoothed.is_nan() {
            value
        } else {
            0.98 * smoothed + 0.02 * value
        };
        start += 1;
        if start - first == WARM_UP_STEPS {
            warm = Some((Instant::now(), save_time));
        }
        let elapsed = t0.elapsed().as_secs_f64() - save_time;
        bar.set_position(start as u64);
        bar.set_message(format!(
            "loss {smoothed:.4}  {:.1} steps/s",
            (start - first) as f64 / elapsed.max(1e-9)
        ));
        let every = config.checkpoint_every;
        if start == stop || (every > 0 && start % every == 0) {
            let ts = Instant::now();
            let meta = CheckpointMeta {
                format_version: checkpoint::CHECKPOINT_FORMAT,
                crate_version: env!("CARGO_PKG_VERSION").to_string(),
                step: start,
                obs: data.obs,
                action_dim: data.action_dim,
                obs_normalizer: obs_norm.clone(),
                action_normalizer: act_norm.clone(),
                train_loss: smoothed,
                interface: data.interface.clone(),
            };
            let ema_model = assign_params(model.valid(), &ema);
            checkpoint::save(out, config, &meta, |dir| {
                checkpoint::save_module(ema_model, dir, files::MODEL)?;
                checkpoint::save_module(model.clone(), dir, files::RAW)?;
                burn::record::Recorder::<B>::record(
                    &checkpoint::Recorder::new(),
                    optim.to_record(),
                    dir.join(files::OPTIM),
                )
                .map_err(|e| TrainError::Checkpoint {
                    path: dir.join("optim.mpk"),
                    message: e.to_string(),
                })
            })?;
            save_time += ts.elapsed().as_secs_f64();
            tracing::debug!(step = start, dir = %out.display(), "checkpoint saved");
        }
    }
    bar.finish_and_clear();
    let steps_per_second =
        (start - first) as f64 / (t0.elapsed().as_secs_f64() - save_time).max(1e-9);
    let steady_steps_per_second = match warm {
        Some((t, saved)) if start - first > WARM_UP_STEPS => {
            (start - first - WARM_UP_STEPS) as f64
                / (t.elapsed().as_secs_f64() - (save_time - saved)).max(1e-9)
        }
        _ => f64::NAN,
    };
    let parameters = model.num_params();
    let ema_model = assign_params(model.valid(), &ema);
    let test_loss = split_loss(&ema_model, &test_p, &spec, &schedule, config.seed, device);
    tracing::info!(
        steps = start,
        train_loss = smoothed,
        test_loss,
        initial_test_loss,
        steps_per_second,
        "training finished"
    );
    Ok(TrainOutcome {
        steps: start,
        parameters,
        first_loss,
        train_loss: smoothed,
        test_loss,
        initial_test_loss,
        steps_per_second,
        steady_steps_per_second,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Method;
    use crate::config::TaskDefaults;
    use crate::model::{ConvLayerConfig, DenoiserConfig, EncoderConfig, MlpSieveConfig};
    use burn::backend::{Autodiff, NdArray};

    type Tb = Autodiff<NdArray<f32>>;

    /// A configuration small enough to train in seconds.
    pub(crate) fn tiny(method: Method, steps: usize) -> TrainConfig {
        let mut c = TrainConfig::for_task(&TaskDefaults::image("scenes"), method);
        c.encoder = EncoderConfig::Cnn {
            layers: vec![ConvLayerConfig {
                channels: 8,
                patch: 8,
            }],
            embed: 16,
        };
        c.denoiser = DenoiserConfig::MlpSieve(MlpSieveConfig {
            embed: 16,
            hidden: 32,
            time_frequency: 1.0,
        });
        c.mse_head.hidden = 32;
        c.data.samples = 600;
        c.optim.steps = steps;
        c.optim.batch_size = 32;
        c.optim.warmup_steps = 5;
        c.checkpoint_every = 0;
        c.seed = 42;
        c
    }

    /// Seven 64×64 RGB scenes with one to three bright squares each, and
    /// `samples` (scene, action) pairs: a scene uniformly, then a point
    /// uniformly on one of its squares (the claw scenes' structure, made up
    /// here so the training library's tests need no task's files).
    pub(crate) fn tiny_data(config: &TrainConfig) -> Dataset {
        use rand::{Rng, SeedableRng};
        const SIDE: usize = 64;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut frames = Vec::new();
        let mut squares = Vec::new();
        for scene in 0..7 {
            let mut img = vec![0.1f32; 3 * SIDE * SIDE];
            let mut boxes = Vec::new();
            for k in 0..=scene % 3 {
                let (x0, y0) = (
                    rng.random_range(0..SIDE - 12),
                    rng.random_range(0..SIDE - 12),
                );
                for y in y0..y0 + 12 {
                    for x in x0..x0 + 12 {
                        img[(k % 3) * SIDE * SIDE + y * SIDE + x] = 0.9;
                    }
                }
                boxes.push((x0, y0));
            }
            frames.extend_from_slice(&img);
            squares.push(boxes);
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed);
        let n = config.data.samples;
        let mut frame_index = Vec::with_capacity(n);
        let mut actions = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let k = rng.random_range(0..squares.len());
            let (x0, y0) = squares[k][rng.random_range(0..squares[k].len())];
            frame_index.push(k as u32);
            actions.push((x0 as f32 + 12.0 * rng.random::<f32>()) / SIDE as f32);
            actions.push((y0 as f32 + 12.0 * rng.random::<f32>()) / SIDE as f32);
        }
        Dataset {
            obs: crate::data::ObsSpec::Image {
                channels: 3,
                height: SIDE,
                width: SIDE,
            },
            action_dim: 2,
            history: 0,
            horizon: 1,
            frames,
            frame_index,
            actions,
            interface: None,
        }
    }

    fn run(config: &TrainConfig, dir: &Path, resume: bool, stop_at: Option<usize>) -> TrainOutcome {
        let data = tiny_data(config);
        train::<Tb>(
            config,
            &data,
            dir,
            &Default::default(),
            RunOptions {
                resume,
                progress: false,
                stop_at,
                force: false,
            },
        )
        .expect("train")
    }

    /// Every method at test size, the diffusion one with each denoiser.
    fn tiny_grid(steps: usize) -> Vec<TrainConfig> {
        let mut configs = Vec::new();
        for method in Method::ALL {
            if method == Method::Diffusion {
                for d in [
                    DenoiserConfig::MlpSieve(MlpSieveConfig {
                        embed: 16,
                        hidden: 32,
                        time_frequency: 1.0,
                    }),
                    DenoiserConfig::BasicMlp(crate::model::BasicMlpConfig {
                        hidden: 32,
                        layers: 3,
                    }),
                    DenoiserConfig::Transformer(crate::model::TransformerConfig {
                        d_model: 16,
                        heads: 4,
                        blocks: 1,
                        feed_forward: 32,
                        time_frequency: 1.0,
                    }),
                ] {
                    let mut c = tiny(method, steps);
                    c.denoiser = d;
                    configs.push(c);
                }
            } else {
                let mut c = tiny(method, steps);
                c.baseline.hidden = 32;
                configs.push(c);
            }
        }
        configs
    }

    #[test]
    fn every_method_and_architecture_reduces_the_held_out_loss() {
        let configs = tiny_grid(150);
        assert_eq!(configs.len(), Method::ALL.len() + 2);
        for c in configs {
            let dir = tempfile::tempdir().expect("tmp");
            let o = run(&c, &dir.path().join("ck"), false, None);
            assert!(
                o.test_loss < 0.9 * o.initial_test_loss,
                "{:?} {}: {o:?}",
                c.method,
                c.denoiser.name()
            );
        }
    }

    #[test]
    fn same_seed_gives_identical_checkpoint_bytes_and_resume_is_exact() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = tiny(Method::Diffusion, 30);
        let (a, b, r) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("r"),
        );
        let mut other = c.clone();
        other.seed = 43;
        let o = dir.path().join("o");
        run(&c, &a, false, None);
        // The twin trains beside a run with another seed (as `diffbc report`
        // trains two cells at once): the shared backend generator must not
        // leak between them.
        std::thread::scope(|s| {
            s.spawn(|| run(&c, &b, false, None));
            s.spawn(|| run(&other, &o, false, None));
        });
        run(&c, &r, false, Some(12));
        let meta: CheckpointMeta = crate::error::read_json(&r.join(files::META)).expect("meta");
        assert_eq!(meta.step, 12);
        run(&c, &r, true, None);
        for f in ["model.mpk", "raw.mpk", "meta.json", "config.json"] {
            let bytes = |d: &Path| std::fs::read(d.join(f)).expect("read");
            assert!(
                bytes(&a) == bytes(&b),
                "{f} differs between two runs with the same seed"
            );
            assert!(
                bytes(&a) == bytes(&r),
                "{f} differs between a resumed and an uninterrupted run"
            );
        }
        assert_ne!(
            std::fs::read(a.join("model.mpk")).expect("a"),
            std::fs::read(o.join("model.mpk")).expect("o")
        );
    }

    /// Every method and denoiser, trained twice with the same seed in one
    /// process (the heap in a different state the second time), writes the
    /// same bytes. The discrete baselines did not before their cross-entropy
    /// moved to `exact_log_softmax`.
    #[test]
    fn every_method_and_denoiser_is_byte_reproducible() {
        let configs = tiny_grid(3);
        assert_eq!(configs.len(), Method::ALL.len() + 2);
        for c in configs {
            let dir = tempfile::tempdir().expect("tmp");
            let (a, b) = (dir.path().join("a"), dir.path().join("b"));
            run(&c, &a, false, None);
            let churn: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 100 + 37 * i]).collect();
            run(&c, &b, false, None);
            drop(churn);
            for f in ["model.mpk", "raw.mpk"] {
                let bytes = |d: &Path| std::fs::read(d.join(f)).expect("read");
                assert!(
                    bytes(&a) == bytes(&b),
                    "{:?} {}: {f} differs between two runs with the same seed",
                    c.method,
                    c.denoiser.name()
                );
            }
        }
    }

    #[test]
    fn too_few_samples_for_a_held_out_split_are_refused_before_training() {
        // A vector task with a handful of rows: one row, and a few rows whose
        // 10 % test split rounds to nothing, must not train to a NaN test loss.
        let mut c = TrainConfig::for_task(&TaskDefaults::vector("arm"), Method::Diffusion);
        c.optim.steps = 2;
        c.checkpoint_every = 0;
        for rows in [1usize, 2, 4] {
            let mut e = crate::episodes::Episodes::new(3, 2);
            let obs: Vec<f32> = (0..rows * 3).map(|i| i as f32).collect();
            let act: Vec<f32> = (0..rows * 2).map(|i| i as f32 * 0.1).collect();
            e.push_episode(&obs, &act).expect("episode");
            let data = e.to_chunked_dataset(c.history, c.chunk.horizon);
            let dir = tempfile::tempdir().expect("tmp");
            let err = train::<Tb>(
                &c,
                &data,
                &dir.path().join("ck"),
                &Default::default(),
                RunOptions::default(),
            )
            .expect_err("too few samples")
            .to_string();
            assert!(
                err.contains("samples") && err.contains("test_fraction"),
                "{rows} rows: {err}"
            );
        }
    }

    use crate::modes::toy::{direction, three_directions as three_modes};

    #[test]
    fn a_mode_conditional_policy_follows_its_mode_and_steering_avoids_one() {
        use crate::infer::BurnPolicy;
        use diffbc_runtime::{NoiseModel, Sampler, SamplerConfig};
        let data = three_modes(3000, 1).to_dataset(0);
        assert_eq!(data.mode_channels().expect("modes"), Some(2..5));
        let c = crate::modes::toy::policy_config();
        let dir = tempfile::tempdir().expect("tmp");
        let ck = dir.path().join("ck");
        train::<Tb>(&c, &data, &ck, &Default::default(), RunOptions::default()).expect("train");
        let mut policy = BurnPolicy::<burn::backend::NdArray<f32>>::load(&ck, &Default::default())
            .expect("load");
        // Mode channels are not standardised: 0 means "no mode" to the network.
        let norm = policy.meta.obs_normalizer.clone();
        assert_eq!(
            (&norm.mean[2..], &norm.std[2..]),
            (&[0.0; 3][..], &[1.0; 3][..])
        );
        let act_norm = policy.meta.action_normalizer.clone();
        let schedule = NoiseSchedule::new(&c.diffusion).expect("schedule");
        let mut sampler = Sampler::new(schedule, SamplerConfig::ddpm()).expect("sampler");
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let n = 60;
        let points: Vec<[f32; 2]> = (0..n)
            .map(|_| {
                [
                    rng.random_range(-0.8f32..0.8),
                    rng.random_range(-0.8f32..0.8),
                ]
            })
            .collect();
        let obs_with = |mode: [f32; 3]| -> Vec<f32> {
            let mut o: Vec<f32> = points
                .iter()
                .flat_map(|p| [p[0], p[1], mode[0], mode[1], mode[2]])
                .collect();
            norm.normalize("obs", &mut o).expect("finite");
            o
        };
        // Shares of the three directions among the sampled actions.
        let shares = |actions: &mut Vec<f32>| -> [f64; 3] {
            act_norm.denormalize(actions);
            let mut count = [0usize; 3];
            for (i, p) in points.iter().enumerate() {
                let k = direction(*p, [actions[2 * i], actions[2 * i + 1]]);
                count[k] += 1;
            }
            count.map(|c| c as f64 / n as f64)
        };
        let ed = policy.embedding_dim();
        let embed = |policy: &mut BurnPolicy<_>, o: &[f32]| {
            let mut e = vec![0.0; n * ed];
            policy.encode(o, &mut e).expect("encode");
            e
        };
        let mut out = vec![0.0; n * 2];
        let one_hot = |m: usize| {
            let mut v = [0.0; 3];
            v[m] = 1.0;
            v
        };
        // Given a mode, the policy follows it.
        for m in 0..3 {
            sampler
                .sample(&mut policy, &obs_with(one_hot(m)), &mut rng, &mut out)
                .expect("sample");
            let s = shares(&mut out);
            println!("mode {m}: shares {s:?}");
            assert!(s[m] >= 0.9, "mode {m}: shares {s:?}");
        }
        // Without one, every mode appears.
        sampler
            .sample(&mut policy, &obs_with([0.0; 3]), &mut rng, &mut out)
            .expect("sample");
        let s = shares(&mut out);
        println!("no mode: shares {s:?}");
        assert!(s.iter().all(|&v| v >= 0.15), "no mode: shares {s:?}");
        // Steering away from mode 0 (base: no mode) leaves the other two.
        let mut blocks = embed(&mut policy, &obs_with([0.0; 3]));
        blocks.extend(embed(&mut policy, &obs_with(one_hot(0))));
        sampler
            .sample_steered(&mut policy, &blocks, &[-4.0], &mut rng, &mut out)
            .expect("steered");
        let s = shares(&mut out);
        println!("away from mode 0 (w = -4): shares {s:?}");
        assert!(
            s[0] <= 0.05 && s[1] >= 0.2 && s[2] >= 0.2,
            "away from 0: shares {s:?}"
        );
        // Trained with mode sets, a multi-hot input is "one of these": both
        // modes of the set appear, the third not.
        assert!(c.mode_sets > 0.0);
        for set in [[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]] {
            sampler
                .sample(&mut policy, &obs_with(set), &mut rng, &mut out)
                .expect("sample");
            let s = shares(&mut out);
            println!("modes {set:?}: shares {s:?}");
            for k in 0..3 {
                assert!(
                    if set[k] == 1.0 {
                        s[k] >= 0.25
                    } else {
                        s[k] <= 0.05
                    },
                    "modes {set:?}: shares {s:?}"
                );
            }
        }
    }

    /// A batch of 20 samples of the toy (history 1: neighbouring samples
    /// share frames) without and with mode noise (`drop`, `widen`), from
    /// the same draws.
    fn batches_with_mode_noise(drop: f64, widen: f64) -> (Batch, Batch) {
        let mut e = three_modes(40, 4);
        // Soft codes, as the arm's are: 0.8 on the mode, 0.1 elsewhere.
        for row in e.obs.chunks_exact_mut(5) {
            for v in &mut row[2..] {
                *v = if *v == 1.0 { 0.8 } else { 0.1 };
            }
        }
        let data = e.to_dataset(1);
        let p = Prepared::new(&data, &Normalizer::identity(5), &Normalizer::identity(2))
            .expect("prepared");
        let schedule = NoiseSchedule::new(&Default::default()).expect("schedule");
        let rows: Vec<usize> = (0..20).collect();
        let plain = make_batch(&p, &rows, &schedule, 0.0, None, &mut step_rng(0, 0));
        let noise = ModeNoise {
            channels: &(2..5),
            drop,
            widen,
        };
        let b = make_batch(&p, &rows, &schedule, 0.0, Some(noise), &mut step_rng(0, 0));
        (plain, b)
    }

    /// Frame `s` of a toy batch.
    fn frame(b: &Batch, s: i32) -> Vec<f32> {
        b.frames[s as usize * 5..s as usize * 5 + 5].to_vec()
    }

    #[test]
    fn mode_dropout_zeroes_a_samples_mode_channels_in_its_own_frame_copies() {
        for (p_drop, dropped) in [(1.0, true), (0.0, false)] {
            let (plain, b) = batches_with_mode_noise(p_drop, 0.0);
            // The noise is drawn as without mode dropout.
            assert_eq!(b.noisy, plain.noisy);
            for (&s, &q) in b.slot.iter().zip(&plain.slot) {
                let (f, g) = (frame(&b, s), frame(&plain, q));
                assert_eq!(f[..2], g[..2], "the position is kept");
                if dropped {
                    assert_eq!(f[2..], [0.0; 3], "mode channels dropped");
                } else {
                    assert_eq!(f, g);
                }
            }
            // The shared frames themselves are untouched.
            let shared = (plain.slot.iter().copied().max().expect("slots") as usize + 1) * 5;
            assert_eq!(b.frames[..shared], plain.frames[..shared]);
        }
    }

    #[test]
    fn mode_sets_widen_a_samples_mode_to_a_set_holding_it_in_every_frame() {
        let (plain, b) = batches_with_mode_noise(0.0, 1.0);
        let mut sets = std::collections::BTreeSet::new();
        for (i, (ours, theirs)) in b.slot.chunks(2).zip(plain.slot.chunks(2)).enumerate() {
            let set = frame(&b, ours[1])[2..].to_vec();
            // Its own mode: the largest soft value of its latest frame.
            let own = frame(&plain, theirs[1])[2..]
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(j, _)| j)
                .expect("modes");
            assert_eq!(set[own], 1.0, "sample {i}: its own mode is in {set:?}");
            for (&s, &q) in ours.iter().zip(theirs) {
                let (f, g) = (frame(&b, s), frame(&plain, q));
                assert_eq!(f[..2], g[..2], "sample {i}: the position is kept");
                assert_eq!(f[2..], set, "sample {i}: one hard set in every frame");
            }
            assert!(set.iter().all(|&v| v == 0.0 || v == 1.0), "{set:?}");
            sets.insert(set.iter().map(|&v| v as u8).collect::<Vec<_>>());
        }
        assert!(sets.len() >= 4, "random sets: {sets:?}");
        assert!(!sets.contains(&vec![1, 1, 1]), "never every mode: {sets:?}");
        assert!(
            sets.iter().any(|m| m.iter().sum::<u8>() >= 2),
            "some sets hold several modes: {sets:?}"
        );
    }

    #[test]
    fn frame_buckets_are_powers_of_two_and_three_quarters_of_them() {
        let buckets: Vec<usize> = (1..=13).map(frame_bucket).collect();
        assert_eq!(buckets, [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16]);
        for n in 1..5000 {
            let b = frame_bucket(n);
            assert!(b >= n && 2 * b < 3 * n + 1, "{n} -> {b}");
        }
    }

    /// The encoder's batch takes a handful of sizes over many steps (a GPU
    /// backend compiles and tunes each size once), and padding changes
    /// neither the loss nor what any sample sees.
    #[test]
    fn padded_batches_take_few_shapes_and_give_the_unpadded_loss() {
        let data = three_modes(400, 4).to_dataset(2);
        let p = Prepared::new(&data, &Normalizer::identity(5), &Normalizer::identity(2))
            .expect("prepared");
        let schedule = NoiseSchedule::new(&Default::default()).expect("schedule");
        let mut sizes = std::collections::BTreeSet::new();
        let mut used = std::collections::BTreeSet::new();
        let mut a_padded = None;
        for step in 0..200 {
            let mut rng = step_rng(3, step);
            let rows: Vec<usize> = (0..64).map(|_| rng.random_range(0..p.len())).collect();
            let b = make_batch(&p, &rows, &schedule, 0.0, None, &mut rng);
            let real = b.slot.iter().copied().max().expect("slots") as usize + 1;
            assert_eq!(b.distinct, frame_bucket(real));
            assert_eq!(b.frames.len(), b.distinct * 5);
            sizes.insert(b.distinct);
            used.insert(real);
            if b.distinct > real {
                a_padded = Some((b, real));
            }
        }
        assert!(used.len() > 10, "the distinct counts vary: {used:?}");
        assert!(sizes.len() <= 3, "encoder batch sizes {sizes:?}");

        let mut c = TrainConfig::for_task(&TaskDefaults::vector("modes"), Method::Diffusion);
        c.history = 2;
        let spec = PolicySpec {
            config: c,
            obs: data.obs,
            action_dim: 2,
        };
        let device = Default::default();
        let model: Policy<NdArray<f32>> = spec.init_seeded(&device, 1);
        let (padded, real) = a_padded.expect("some batch is padded");
        let unpadded = Batch {
            frames: padded.frames[..real * 5].to_vec(),
            distinct: real,
            slot: padded.slot.clone(),
            keep: padded.keep.clone(),
            clean: padded.clean.clone(),
            noisy: padded.noisy.clone(),
            noise: padded.noise.clone(),
            t: padded.t.clone(),
            rows: padded.rows,
        };
        let loss =
            |b: &Batch| -> f32 { batch_loss(&model, b, &spec, &device).into_scalar().elem() };
        assert_eq!(loss(&padded), loss(&unpadded));
    }

    #[test]
    fn mode_dropout_needs_mode_channels() {
        let mut c = TrainConfig::for_task(&TaskDefaults::vector("modes"), Method::Diffusion);
        c.history = 0;
        c.mode_dropout = 0.2;
        let mut e = three_modes(200, 2);
        e.obs_names = ["x", "y", "a", "b", "c"].map(String::from).to_vec();
        e.hints.obs_sources = e.obs_names.clone();
        let dir = tempfile::tempdir().expect("tmp");
        let err = train::<Tb>(
            &c,
            &e.to_dataset(0),
            &dir.path().join("ck"),
            &Default::default(),
            RunOptions::default(),
        )
        .expect_err("refused")
        .to_string();
        assert!(
            err.contains("mode_dropout") && err.contains("mode[k]"),
            "{err}"
        );
    }

    #[test]
    fn resume_refuses_a_different_config() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = tiny(Method::Diffusion, 10);
        let ck = dir.path().join("ck");
        run(&c, &ck, false, Some(5));
        let mut changed = c.clone();
        changed.optim.lr *= 2.0;
        let data = tiny_data(&changed);
        let e = train::<Tb>(
            &changed,
            &data,
            &ck,
            &Default::default(),
            RunOptions {
                resume: true,
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("config.json") && e.contains("different config"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod checkpoint_tests {
    use super::tests::{tiny, tiny_data};
    use super::*;
    use crate::config::Method;
    use crate::infer::BurnPolicy;
    use burn::backend::NdArray;
    use diffbc_runtime::NoiseModel;

    type Nb = NdArray<f32>;

    /// Weights are drawn on the CPU backend and copied: on the CPU backend
    /// itself (and its autodiff wrapper) they are exactly what drawing on it
    /// directly gives, so every backend starts from that network for a seed.
    #[test]
    fn seeded_weights_are_the_cpu_backends_draws_on_every_backend() {
        type Ad = burn::backend::Autodiff<Nb>;
        let c = tiny(Method::Diffusion, 1);
        let data = tiny_data(&c);
        let spec = PolicySpec {
            config: c,
            obs: data.obs,
            action_dim: 2,
        };
        let device = Default::default();
        let flat = |p: Vec<Tensor<Nb, 1>>| -> Vec<f32> {
            p.into_iter()
                .flat_map(|t| t.into_data().to_vec::<f32>().expect("f32"))
                .collect()
        };
        // Drawing directly on the backend, as before the copy existed.
        let direct = crate::model::with_backend_rng::<Nb, _>(&device, 9, || {
            flat(flat_params(&spec.build_for_tests::<Nb>(&device)))
        });
        assert!(!direct.is_empty());
        let seeded: Policy<Nb> = spec.init_seeded(&device, 9);
        assert_eq!(flat(flat_params(&seeded)), direct);
        let autodiff: Policy<Ad> = spec.init_seeded(&device, 9);
        assert_eq!(flat(flat_params(&autodiff.valid())), direct);
        let other: Policy<Nb> = spec.init_seeded(&device, 10);
        assert_ne!(flat(flat_params(&other)), direct);
    }

    #[test]
    fn weights_round_trip_through_a_checkpoint() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = tiny(Method::Diffusion, 1);
        let data = tiny_data(&c);
        let spec = PolicySpec {
            config: c.clone(),
            obs: data.obs,
            action_dim: 2,
        };
        let device = Default::default();
        let original: Policy<Nb> = spec.init_seeded(&device, 1);
        checkpoint::save_module(original.clone(), dir.path(), "m").expect("save");
        let fresh: Policy<Nb> = spec.init_seeded(&device, 2);
        let loaded =
            checkpoint::load_module(fresh.clone(), dir.path(), "m", &device).expect("load");
        let x = Tensor::<Nb, 2>::from_data(
            TensorData::new(
                data.frames[..2 * data.obs.len()].to_vec(),
                [2, data.obs.len()],
            ),
            &device,
        );
        let out = |p: &Policy<Nb>| {
            p.encode(x.clone(), 1)
                .into_data()
                .to_vec::<f32>()
                .expect("f32")
        };
        assert_eq!(out(&original), out(&loaded));
        assert_ne!(out(&original), out(&fresh));
    }

    #[test]
    fn a_checkpoint_whose_config_does_not_match_its_weights_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = tiny(Method::Diffusion, 2);
        let data = tiny_data(&c);
        let ck = dir.path().join("ck");
        train::<burn::backend::Autodiff<Nb>>(
            &c,
            &data,
            &ck,
            &Default::default(),
            RunOptions::default(),
        )
        .expect("train");
        let mut policy = BurnPolicy::<Nb>::load(&ck, &Default::default()).expect("load");
        let mut emb = vec![0.0; policy.embedding_dim()];
        policy
            .encode(&data.frames[..data.obs.len()], &mut emb)
            .expect("encode");
        let mut changed = c.clone();
        changed.denoiser = crate::model::DenoiserConfig::MlpSieve(crate::model::MlpSieveConfig {
            embed: 16,
            hidden: 48,
            time_frequency: 1.0,
        });
        crate::error::write_json(&ck.join(files::CONFIG), &changed).expect("write");
        let e = BurnPolicy::<Nb>::load(&ck, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.mpk") && e.contains("do not match the config"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use crate::config::Method;
    use crate::config::TaskDefaults;

    #[test]
    fn learning_rate_warms_up_then_decays_to_the_minimum() {
        let mut c = TrainConfig::for_task(&TaskDefaults::image("claw"), Method::Diffusion);
        c.optim.steps = 1000;
        c.optim.warmup_steps = 100;
        assert!((learning_rate(&c, 0) - c.optim.lr / 100.0).abs() < 1e-12);
        assert!((learning_rate(&c, 99) - c.optim.lr).abs() < 1e-12);
        assert!((learning_rate(&c, 100) - c.optim.lr).abs() < 1e-12);
        assert!((learning_rate(&c, 1000) - c.optim.lr_min).abs() < 1e-12);
        let mid = learning_rate(&c, 550);
        assert!((mid - 0.5 * (c.optim.lr + c.optim.lr_min)).abs() < 1e-9);
    }
}
