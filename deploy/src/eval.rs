//! `diffbc-deploy eval`: exported arm policies, closed loop, without the
//! training stack — in-process episodes on the arm task's world and, on
//! request, episodes through the serial bridge against the emulated arm on a
//! pty. Task completion, collisions, the task-order entropy, decisions/s.
//! (The full `diffbc eval --task arm` adds the demonstrations' reference row,
//! the action-distribution distance and figures; those read `.demos` files
//! and draw with the training crate.)

use crate::cli::{SamplerArgs, SamplerKindArg};
use anyhow::{Result, ensure};
use clap::Args;
use diffbc_tasks::arm::ArmTask;
use diffbc_tasks::arm::eval::{self, ArmRecord, EvalPlan};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Options of `diffbc-deploy eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Exported policy folders (trained on the arm task).
    #[arg(required = true)]
    pub models: Vec<PathBuf>,
    /// In-process episodes per policy × sampler.
    #[arg(long, default_value_t = 100)]
    pub episodes: usize,
    /// Episodes through the serial bridge against the emulated arm (0 = none).
    #[arg(long, default_value_t = 0)]
    pub bridge_episodes: usize,
    /// Device seconds per wall-clock second on the bridge.
    #[arg(long, default_value = "5", value_parser = diffbc_bridge::checked::flag::time_scale, allow_hyphen_values = true)]
    pub time_scale: f64,
    /// Worker threads for in-process episodes (results do not depend on it).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also write the records as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Samplers (default: the manifest's).
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

/// Evaluate and return the Markdown table.
pub fn run(a: &EvalArgs) -> Result<String> {
    ensure!(a.episodes > 0, "--episodes must be at least 1");
    let task = ArmTask::default();
    let mut samplers = Vec::new();
    if !a.sampler.samplers.is_empty() {
        samplers = a.sampler.configs(&[SamplerKindArg::DiffusionX]);
    } else {
        for m in &a.models {
            let (manifest, _) = diffbc_runtime::policy::read_manifest(m)?;
            if !samplers.contains(&manifest.sampler) {
                samplers.push(manifest.sampler);
            }
        }
    }
    let plan = EvalPlan {
        samplers,
        episodes: a.episodes,
        bridge_episodes: a.bridge_episodes,
        time_scale: a.time_scale,
        progress: true,
        threads: a
            .threads
            .unwrap_or_else(diffbc_tasks::pool::default_threads),
        steering: None,
    };
    let names: Vec<String> = a
        .models
        .iter()
        .map(|m| {
            m.file_name()
                .map_or_else(|| m.display().to_string(), |n| n.to_string_lossy().into())
        })
        .collect();
    let models: Vec<(String, &std::path::Path)> = names
        .iter()
        .cloned()
        .zip(a.models.iter().map(PathBuf::as_path))
        .collect();
    // No demonstrations here: the first record (their reference row) is empty.
    let (records, _) = eval::evaluate(&task, &models, &plan, &[], &[])?;
    let records: Vec<ArmRecord> = records.into_iter().skip(1).collect();
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&records)? + "\n")?;
    }
    Ok(table(&records))
}

/// The deploy table: the columns that need no demonstrations.
pub fn table(records: &[ArmRecord]) -> String {
    let mut s = String::from(
        "| policy | sampler | path | episodes | all targets | collisions | tasks done (mean) | order entropy (bits) | top / min first-target share | decisions/s |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in records {
        let se = |p: f64| (p * (1.0 - p) / r.episodes.max(1) as f64).sqrt();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:.2} | {:.2} | {:.2} / {:.2} | {} |",
            r.method,
            r.sampler,
            match r.path {
                eval::RolloutPath::Bridge => "bridge",
                _ => "in-process",
            },
            r.episodes,
            r.all_targets_rate,
            se(r.all_targets_rate),
            r.collision_rate,
            se(r.collision_rate),
            r.tasks_completed_mean,
            r.order_entropy,
            r.first_task_top_share,
            r.first_task_min_share,
            r.decisions_per_second
                .map_or_else(|| "-".to_string(), |d| format!("{d:.0}"))
        );
    }
    s
}
