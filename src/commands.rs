//! `diffbc train`, `demos`, `export` and `reference`.

use crate::args::{DemosArgs, DemosFormatArg, ExportArgs, ReferenceArgs, TaskArg, TrainArgs};
use crate::training::{Cpu, load_dataset, load_dataset_with, train_on_device};
use anyhow::{Context, Result, bail};
use diffbc_deploy::cli::SamplerKindArg;
use diffbc_tasks::Task;
use diffbc_tasks::arm::ArmTask;
use diffbc_train::config::{Method, TrainConfig};
use diffbc_train::keys::FeatureKeys;
use std::path::{Path, PathBuf};

/// `diffbc train`.
pub fn train(a: TrainArgs) -> Result<()> {
    let task: Task = a.task.into();
    let mut config = match &a.config {
        Some(p) => TrainConfig::load(p)?,
        None => task.train_config(a.method.into()),
    };
    if let Some(s) = a.steps {
        config.optim.steps = s;
    }
    if let Some(s) = a.seed {
        config.seed = s;
    }
    if let Some(d) = a.denoiser {
        config.denoiser = d.config();
    }
    if let Some(h) = a.horizon {
        config.chunk.horizon = h;
        // A new horizon without --execute executes half the chunk (at least one).
        config.chunk.execute = a.execute.unwrap_or(h.div_ceil(2));
    } else if let Some(e) = a.execute {
        config.chunk.execute = e;
    }
    config.validate()?;
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from(format!("runs/{}-{}", config.task, config.method.name())));
    if !a.resume {
        // Refuse a foreign output before the data are loaded.
        diffbc_train::checkpoint::claim(&out, a.force)?;
    }
    let dir = a.data.clone().unwrap_or_else(|| {
        PathBuf::from(Task::from_name(&config.task).unwrap_or(task).default_data())
    });
    let keys = FeatureKeys::new(&a.obs_keys, a.action_key.as_deref());
    let data = load_dataset_with(&config, &dir, &keys)?;
    let o = train_on_device(&config, &data, &out, a.resume, a.force, a.stop_at, a.device)?;
    println!(
        "trained {} {} for {} steps ({:.1} steps/s): train loss {:.4}, test loss {:.4} (untrained {:.4}) -> {}",
        config.task,
        config.method.name(),
        o.steps,
        o.steps_per_second,
        o.train_loss,
        o.test_loss,
        o.initial_test_loss,
        out.display()
    );
    if let Some(path) = &a.json {
        let record = serde_json::json!({
            "task": config.task,
            "method": config.method.name(),
            "denoiser": config.denoiser.name(),
            "device": format!("{:?}", a.device).to_lowercase(),
            "batch_size": config.optim.batch_size,
            "seed": config.seed,
            "samples": data.len(),
            "outcome": o,
        });
        std::fs::write(path, serde_json::to_string_pretty(&record)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `diffbc modes`: learn the arm demonstrations' modes and print what each
/// code captured.
pub fn modes(a: crate::args::ModesArgs) -> Result<()> {
    let task = match &a.task_config {
        Some(p) => crate::arm::read_task(p)?,
        None if a.two_operators => ArmTask::two_operators(),
        None => ArmTask::default(),
    };
    for out in [&a.json, &a.figure].into_iter().flatten() {
        if out.exists() && !a.force {
            bail!("{} exists; --force replaces it", out.display());
        }
    }
    anyhow::ensure!(
        a.weight.iter().all(|w| w.is_finite() && *w >= 0.0),
        "--weight: every weight must be a number ≥ 0"
    );
    // A list of weights is for the style study (--steer --scope episode).
    anyhow::ensure!(
        a.weight.len() <= 1
            || (a.policy.is_none() && a.scope == diffbc_train::modes::ModeScope::Episode),
        "--weight takes one value here (a list only with --steer --scope episode)"
    );
    let weight = a.weight.first().copied().unwrap_or(1.0);
    if let Some(policy) = &a.policy {
        let scratch = tempfile::tempdir().context("creating a scratch folder")?;
        let dir = diffbc_tasks::Task::Arm.exported(policy, scratch.path())?;
        let rows = diffbc_tasks::arm::modes::policy_modes(
            &task,
            &dir,
            weight,
            a.steer_episodes,
            true,
            a.figure.as_deref(),
        )?;
        println!(
            "Modes of {} ({} episodes per row, Diffusion-X):\n",
            policy.display(),
            a.steer_episodes
        );
        println!("{}", diffbc_tasks::arm::modes::style_markdown(&rows));
        if let Some(f) = &a.figure {
            println!("wrote {} and its -first-targets.png", f.display());
        }
        if let Some(json) = &a.json {
            std::fs::write(json, serde_json::to_string_pretty(&rows)?)
                .with_context(|| format!("writing {}", json.display()))?;
            println!("wrote {}", json.display());
        }
        return Ok(());
    }
    let config = diffbc_train::modes::ModesConfig {
        codes: a.codes,
        horizon: a.horizon,
        steps: a.steps,
        warmup: diffbc_train::modes::ModesConfig::default()
            .warmup
            .min(a.steps / 5),
        seed: a.model_seed,
        scope: a.scope,
        set_size: a.set_size,
        batch_size: a.batch_size,
        ..Default::default()
    };
    let (demos, truth) =
        diffbc_tasks::arm::demos::generate_with_truth(&task, a.episodes, a.seed, true)?;
    let (study, modes) = diffbc_tasks::arm::modes::study_of::<crate::training::CpuTrain>(
        &task,
        &demos,
        &truth,
        a.seed,
        &config,
        diffbc_tasks::arm::modes::WindowSpec {
            kind: a.windows,
            hindsight: a.hindsight,
        },
        &Default::default(),
        true,
        a.figure.as_deref(),
    )?;
    println!("{}", study.markdown());
    if let Some(f) = &a.figure {
        println!("wrote {}", f.display());
    }
    if a.steer {
        let defaults = diffbc_tasks::arm::modes::ModeTraining::default();
        let chunk = match a.policy_horizon {
            Some(horizon) => diffbc_runtime::manifest::ActionChunk {
                horizon,
                execute: a.policy_execute.unwrap_or(horizon.div_ceil(2)),
            },
            None => defaults.chunk,
        };
        chunk
            .validate()
            .map_err(|e| anyhow::anyhow!("--policy-horizon / --policy-execute: {e}"))?;
        let training = diffbc_tasks::arm::modes::ModeTraining {
            steps: a.policy_steps.unwrap_or(defaults.steps),
            dropout: a.mode_dropout,
            sets: a.mode_sets.unwrap_or(match a.scope {
                diffbc_train::modes::ModeScope::Episode => defaults.sets,
                diffbc_train::modes::ModeScope::Window => 0.0,
            }),
            chunk,
        };
        let heading = format!(
            "({} training steps, mode dropout {}, mode sets {}, chunks {}/{}, {} episodes per row, Diffusion-X)",
            training.steps,
            training.dropout,
            training.sets,
            chunk.horizon,
            chunk.execute,
            a.steer_episodes
        );
        if a.scope == diffbc_train::modes::ModeScope::Episode {
            let dir = diffbc_tasks::arm::modes::train_mode_policy::<crate::training::CpuTrain>(
                &demos,
                &modes,
                &study,
                &a.out,
                training,
                &Default::default(),
                true,
            )?;
            let rows = diffbc_tasks::arm::modes::style_steering_study(
                &task,
                &demos,
                &study,
                &dir,
                &a.weight,
                a.steer_episodes,
                true,
            )?;
            println!("\nSteering by operator style {heading}:\n");
            println!("{}", diffbc_tasks::arm::modes::style_markdown(&rows));
            let path = a.out.join("steering.json");
            std::fs::write(&path, serde_json::to_string_pretty(&rows)?)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        } else {
            let rows = diffbc_tasks::arm::modes::steering_study::<crate::training::CpuTrain>(
                &task,
                &demos,
                &truth,
                &modes,
                &study,
                &a.out,
                training,
                weight,
                a.steer_episodes,
                &Default::default(),
                true,
            )?;
            println!("\nMode steering {heading}:\n");
            println!("{}", diffbc_tasks::arm::modes::steering_markdown(&rows));
        }
    }
    if let Some(json) = &a.json {
        let text = serde_json::to_string_pretty(&study)?;
        std::fs::write(json, text).with_context(|| format!("writing {}", json.display()))?;
        println!("wrote {}", json.display());
    }
    Ok(())
}

/// `diffbc demos`.
pub fn demos(a: DemosArgs) -> Result<()> {
    if a.task != TaskArg::Arm {
        bail!("--task claw has no generator: its scenes are read from ../shared/data/claw");
    }
    let task = match &a.task_config {
        Some(p) => crate::arm::read_task(p)?,
        None => ArmTask::default(),
    };
    // Where it goes, claimed before the (long) generation.
    let out = match a.format {
        DemosFormatArg::Demos => {
            diffbc_runtime::fs::claim_output(&a.out, &diffbc_train::episodes::KIND, a.force)?;
            a.out.clone()
        }
        DemosFormatArg::Lerobot => {
            let out = if a.out.extension().is_some_and(|e| e == "demos") {
                a.out.with_extension("")
            } else {
                a.out.clone()
            };
            diffbc_runtime::fs::claim_output(&out, &diffbc_train::lerobot::KIND, false)?;
            out
        }
    };
    let t0 = std::time::Instant::now();
    let demos = crate::arm::generate(&task, a.episodes, a.seed, true)?;
    match a.format {
        DemosFormatArg::Demos => demos.save(&out)?,
        DemosFormatArg::Lerobot => {
            let options = diffbc_train::lerobot::WriteOptions {
                fps: task.control_hz,
                robot_type: Some("diffbc_sim_arm".into()),
                task: "diffbc arm task: reach the targets".into(),
            };
            demos.save_lerobot(&out, &options)?;
        }
    }
    let orders = crate::arm::orders_from_episodes(&task, &demos);
    println!(
        "{} episodes, {} steps, {} distinct task orders (entropy {:.2} bits) in {:.1} s -> {}",
        demos.len(),
        demos.steps(),
        orders
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        diffbc_tasks::metrics::entropy_bits(&orders),
        t0.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// `diffbc export`.
pub fn export(a: ExportArgs) -> Result<()> {
    if a.upgrade {
        return upgrade(&a);
    }
    let out = a.out.clone().context("--out is required")?;
    let manifest = a.checkpoint.join(diffbc_runtime::manifest::MANIFEST_FILE);
    if manifest.is_file() {
        // An exported folder: only its weight format can change.
        let weights = diffbc_runtime::WeightFormat::from(a.weights);
        if weights.is_f32() {
            bail!(
                "{} is an exported model, not a checkpoint; pass --weights f16 or int8 to \
                 write it in another weight format",
                a.checkpoint.display()
            );
        }
        let m = diffbc_export::reduce(&a.checkpoint, &out, weights, a.force)?;
        println!(
            "wrote {} with {} weights -> {}: {} [{}], {} [{}]",
            a.checkpoint.display(),
            m.weights,
            out.display(),
            m.encoder.file,
            &m.encoder.sha256[..12],
            m.head.file,
            &m.head.sha256[..12]
        );
        return Ok(());
    }
    // Channels from the data when given, else the checkpoint's record.
    let interface = match &a.data {
        Some(data) => {
            let config =
                TrainConfig::load(&a.checkpoint.join(diffbc_train::checkpoint::files::CONFIG))?;
            Some(data_interface(&config, data)?)
        }
        None => None,
    };
    let options = diffbc_export::ExportOptions {
        force: a.force,
        sampler: a.sampler.configs(&[SamplerKindArg::DiffusionX])[0],
        execute: a.execute,
        interface,
        weights: a.weights.into(),
        ..Default::default()
    };
    let m = diffbc_export::export_checkpoint::<Cpu>(
        &a.checkpoint,
        &out,
        &options,
        &Default::default(),
    )?;
    println!(
        "exported {} ({}, {} weights) -> {}: {} [{}], {} [{}]",
        a.checkpoint.display(),
        m.provenance.architecture,
        m.weights,
        out.display(),
        m.encoder.file,
        &m.encoder.sha256[..12],
        m.head.file,
        &m.head.sha256[..12]
    );
    Ok(())
}

/// The channels and deployment settings of the data `config` trains on.
fn data_interface(
    config: &TrainConfig,
    data: &Path,
) -> Result<diffbc_runtime::manifest::Interface> {
    load_dataset(config, data)?.interface.with_context(|| {
        format!(
            "{}: this data set records no channels (synthetic data)",
            data.display()
        )
    })
}

/// `diffbc export --upgrade DIR --data DATA [--out OUT]`.
fn upgrade(a: &ExportArgs) -> Result<()> {
    let dir = &a.checkpoint;
    let data = a.data.as_deref().context("--upgrade needs --data")?;
    let text = diffbc_runtime::fs::read_to_string(
        &dir.join(diffbc_runtime::manifest::MANIFEST_FILE),
        diffbc_runtime::fs::limits::JSON,
    )?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: manifest.json is not JSON", dir.display()))?;
    let task_name = v["provenance"]["task"].as_str().unwrap_or_default();
    let task = Task::from_name(task_name)
        .with_context(|| {
            format!(
                "{}: provenance.task is {task_name:?}, not one of diffbc's tasks, so its data cannot be read; re-export it instead",
                dir.display()
            )
        })?;
    let mut config = task.train_config(Method::Diffusion);
    config.history = v["observation"]["history"]
        .as_u64()
        .context("observation.history is missing")? as usize;
    if let Some(h) = v["chunk"]["horizon"].as_u64() {
        config.chunk.horizon = h as usize;
    }
    let interface = data_interface(&config, data)?;
    let out = a.out.clone().unwrap_or_else(|| dir.clone());
    let m = diffbc_export::upgrade(dir, &out, interface, a.force)?;
    println!(
        "upgraded {} -> {} (format {}, {} observation and {} action channels, control rate {})",
        dir.display(),
        out.display(),
        m.format_version,
        m.channels.observation.len(),
        m.channels.action.len(),
        m.deployment
            .control_hz
            .map_or_else(|| "none".to_string(), |hz| format!("{hz} Hz"))
    );
    Ok(())
}

/// `diffbc reference`.
pub fn reference(a: ReferenceArgs) -> Result<()> {
    let out = a
        .out
        .unwrap_or_else(|| Path::new("models").join(a.name.name()));
    let m = diffbc_export::export_reference(a.name, &out, a.seed, a.force, a.weights.into())?;
    println!(
        "exported reference {} ({} weights) -> {}: {} [{}], {} [{}]",
        a.name.name(),
        m.weights,
        out.display(),
        m.encoder.file,
        &m.encoder.sha256[..12],
        m.head.file,
        &m.head.sha256[..12]
    );
    Ok(())
}
