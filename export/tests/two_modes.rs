//! The one behaviour diffbc exists for (Pearce et al. 2023, Fig. 1): when
//! people act in two different ways in the same situation, a diffusion policy
//! reproduces both, where regression lands between them. Trained on a toy
//! data set — action +1 or −1 with equal probability whatever the
//! observation — then exported and sampled through the deployed path
//! (`runtime::Policy` on the exported folder).

use burn::backend::{Autodiff, NdArray};
use diffbc_export::{ExportOptions, export_checkpoint};
use diffbc_runtime::{EngineChoice, Policy, PolicyOptions, SamplerConfig};
use diffbc_train::TaskDefaults;
use diffbc_train::config::{Method, TrainConfig};
use diffbc_train::episodes::Episodes;
use diffbc_train::model::{DenoiserConfig, EncoderConfig, MlpSieveConfig};
use diffbc_train::train::{RunOptions, train};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

type Tb = Autodiff<NdArray<f32>>;

/// 40 episodes of 25 steps: a 2-value observation drawn at random, and an
/// action of +1 or −1 chosen by a fair coin, independent of it.
fn two_mode_demos(seed: u64) -> Episodes {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut e = Episodes::new(2, 1);
    for _ in 0..40 {
        let obs: Vec<f32> = (0..50).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let act: Vec<f32> = (0..25)
            .map(|_| if rng.random_bool(0.5) { 1.0 } else { -1.0 })
            .collect();
        e.push_episode(&obs, &act).expect("episode");
    }
    e
}

fn config(method: Method, steps: usize) -> TrainConfig {
    let mut c = TrainConfig::for_task(&TaskDefaults::vector("coin"), method);
    c.encoder = EncoderConfig::Mlp {
        hidden: 32,
        embed: 16,
    };
    c.denoiser = DenoiserConfig::MlpSieve(MlpSieveConfig {
        embed: 16,
        hidden: 64,
        time_frequency: 1.0,
    });
    c.mse_head.hidden = 32;
    c.history = 0;
    c.chunk = diffbc_runtime::manifest::ActionChunk::SINGLE;
    c.optim.steps = steps;
    c.optim.batch_size = 128;
    c.optim.lr = 3e-3;
    c.optim.lr_min = 1e-4;
    c.optim.warmup_steps = 20;
    c.optim.ema_decay = 0.95;
    c.checkpoint_every = 0;
    c.seed = 3;
    c
}

/// Train, export and draw `n` actions for one observation through
/// `runtime::Policy` (reset between draws, so each is a fresh decision).
fn actions(method: Method, steps: usize, dir: &Path, n: usize) -> Vec<f32> {
    let c = config(method, steps);
    let data = two_mode_demos(1).to_chunked_dataset(c.history, c.chunk.horizon);
    let ck = dir.join(format!("{}-ck", method.name()));
    train::<Tb>(&c, &data, &ck, &Default::default(), RunOptions::default()).expect("train");
    let model = dir.join(format!("{}-model", method.name()));
    let options = ExportOptions {
        sampler: SamplerConfig::ddpm(),
        golden_batches: vec![1],
        ..Default::default()
    };
    export_checkpoint::<NdArray<f32>>(&ck, &model, &options, &Default::default()).expect("export");
    let mut policy = Policy::load_with(
        &model,
        &PolicyOptions {
            engine: EngineChoice::Native,
            seed: 11,
            ..Default::default()
        },
    )
    .expect("load");
    (0..n)
        .map(|_| {
            policy.reset();
            policy.act(&[0.3, -0.2]).expect("act")[0]
        })
        .collect()
}

#[test]
fn diffusion_keeps_both_modes_where_regression_averages_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = 400;
    let diffusion = actions(Method::Diffusion, 600, dir.path(), n);
    let near = |a: &f32, mode: f32| (a - mode).abs() < 0.35;
    let plus = diffusion.iter().filter(|a| near(a, 1.0)).count() as f64 / n as f64;
    let minus = diffusion.iter().filter(|a| near(a, -1.0)).count() as f64 / n as f64;
    let between = diffusion.iter().filter(|a| a.abs() < 0.5).count() as f64 / n as f64;
    assert!(
        (0.3..=0.7).contains(&plus) && (0.3..=0.7).contains(&minus),
        "diffusion should sample both modes about equally: +1 {plus:.2}, −1 {minus:.2}"
    );
    assert!(
        between < 0.1,
        "diffusion should rarely land between the modes: {between:.2} within 0.5 of 0"
    );
    // Regression predicts one action: the mean of the two modes, near 0,
    // which no demonstrator ever did.
    let mse = actions(Method::Mse, 300, dir.path(), 3);
    assert!(
        mse.iter().all(|a| a.abs() < 0.35),
        "MSE should land between the modes: {mse:?}"
    );
}
