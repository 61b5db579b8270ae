//! Evaluation of claw policies against the known true distribution.
//!
//! For every scene, `n` actions are sampled from the policy (one observation,
//! encoded once) and compared with the scene's mask:
//!
//! * **on-object precision**: the share of sampled actions that land on an object;
//! * **coverage ratio** per object: the object's share of the on-object
//!   samples divided by its share of the object pixels (1 = perfectly
//!   proportional; the paper's "covers every mode");
//! * **sliced Wasserstein-1** distance between the samples and as many draws
//!   from the true distribution (uniform over the object area), in image
//!   widths, averaged over 64 evenly spaced projection directions.
//!
//! Policies are the exported graphs run by `diffbc_runtime::Policy` (a
//! checkpoint is exported first), so the table scores what deploys.

use super::{ClawScenes, Scene};
use crate::error::{Context, TaskError};
use crate::metrics::{Directions, sliced_w1};
use diffbc_runtime::{EngineChoice, Policy, SamplerConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Figures for one scene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneFigures {
    /// Scene number.
    pub scene: usize,
    /// Share of samples on an object.
    pub on_object_precision: f64,
    /// Per object: share of on-object samples / share of object pixels.
    pub coverage_ratio: Vec<f64>,
    /// Sliced Wasserstein-1 distance to the true distribution.
    pub sliced_wasserstein: f64,
}

/// One row of the evaluation table: a method with a sampler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClawRecord {
    /// `diffusion`, `mse`, or `ground_truth`.
    pub method: String,
    /// Sampler label, e.g. `diffusion-x(M=8)`; `regression` for MSE.
    pub sampler: String,
    /// What ran the networks: `burn`, `onnx-tract`, or `none` for the reference row.
    pub engine: String,
    /// Samples drawn per scene.
    pub samples_per_scene: usize,
    /// On-object precision over all scenes.
    pub on_object_precision: f64,
    /// Smallest on-object precision of any scene.
    pub worst_scene_precision: f64,
    /// Smallest coverage ratio of any object of any scene.
    pub min_coverage_ratio: f64,
    /// Largest coverage ratio of any object of any scene.
    pub max_coverage_ratio: f64,
    /// On-object precision over the scenes with more than one object.
    pub multi_object_precision: f64,
    /// Mean sliced Wasserstein-1 distance over scenes.
    pub sliced_wasserstein: f64,
    /// Sampled actions per second (all scenes, including encoding); null for the reference row.
    #[serde(serialize_with = "nan_as_null", deserialize_with = "null_as_nan")]
    pub actions_per_second: f64,
    /// Per-scene figures.
    pub scenes: Vec<SceneFigures>,
}

fn nan_as_null<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_none()
    }
}

fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Sampled points for plotting, per scene.
#[derive(Debug, Clone)]
pub struct ScenePoints {
    /// Row label.
    pub label: String,
    /// Per scene, `[n, 2]` actions in [0, 1] image units.
    pub points: Vec<Vec<f32>>,
}

/// Figures for one scene's samples.
pub fn scene_figures(scene: &Scene, samples: &[f32], truth: &[f32]) -> SceneFigures {
    let n = samples.len() / 2;
    let mut counts = vec![0usize; scene.objects.len()];
    for p in samples.chunks_exact(2) {
        if let Some(l) = scene.label_at(p[0], p[1])
            && l > 0
        {
            counts[l as usize - 1] += 1;
        }
    }
    let on: usize = counts.iter().sum();
    let total_px: usize = scene.object_pixels.iter().sum();
    let coverage_ratio = counts
        .iter()
        .zip(&scene.object_pixels)
        .map(|(&c, &px)| {
            if on == 0 {
                0.0
            } else {
                (c as f64 / on as f64) / (px as f64 / total_px as f64)
            }
        })
        .collect();
    SceneFigures {
        scene: scene.id,
        on_object_precision: on as f64 / n as f64,
        coverage_ratio,
        sliced_wasserstein: sliced_w1(samples, truth, 2, Directions::Even(64)),
    }
}

fn record(
    method: &str,
    sampler: &str,
    engine: &str,
    n: usize,
    scenes: &[Scene],
    figures: Vec<SceneFigures>,
    seconds: Option<f64>,
) -> ClawRecord {
    let ratios = figures
        .iter()
        .flat_map(|f| f.coverage_ratio.iter().copied());
    let min = ratios.clone().fold(f64::INFINITY, f64::min);
    let max = ratios.fold(f64::NEG_INFINITY, f64::max);
    let mean = |v: Vec<f64>| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let multi: Vec<f64> = figures
        .iter()
        .zip(scenes)
        .filter(|(_, s)| s.objects.len() > 1)
        .map(|(f, _)| f.on_object_precision)
        .collect();
    ClawRecord {
        method: method.into(),
        sampler: sampler.into(),
        engine: engine.into(),
        samples_per_scene: n,
        on_object_precision: mean(figures.iter().map(|f| f.on_object_precision).collect()),
        worst_scene_precision: figures
            .iter()
            .map(|f| f.on_object_precision)
            .fold(f64::INFINITY, f64::min),
        min_coverage_ratio: min,
        max_coverage_ratio: max,
        multi_object_precision: mean(multi),
        sliced_wasserstein: mean(figures.iter().map(|f| f.sliced_wasserstein).collect()),
        actions_per_second: seconds.map_or(f64::NAN, |s| (n * scenes.len()) as f64 / s.max(1e-9)),
        scenes: figures,
    }
}

/// True-distribution draws for every scene (the reference the policies are scored against).
pub fn truth_points(scenes: &ClawScenes, n: usize, seed: u64) -> Vec<Vec<f32>> {
    scenes
        .scenes
        .iter()
        .map(|s| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(s.id as u64));
            (0..n).flat_map(|_| s.draw_action(&mut rng)).collect()
        })
        .collect()
}

/// The reference row: a second independent draw from the true distribution,
/// scored like a policy (its distance is the metric's noise floor).
pub fn ground_truth_record(scenes: &ClawScenes, n: usize, seed: u64) -> (ClawRecord, ScenePoints) {
    let truth = truth_points(scenes, n, seed);
    let other = truth_points(scenes, n, seed ^ 0xdead_beef);
    let figures = scenes
        .scenes
        .iter()
        .zip(&other)
        .zip(&truth)
        .map(|((s, o), t)| scene_figures(s, o, t))
        .collect();
    (
        record(
            "ground_truth",
            "true-distribution",
            "none",
            n,
            &scenes.scenes,
            figures,
            None,
        ),
        ScenePoints {
            label: "truth".into(),
            points: other,
        },
    )
}

/// Evaluate one policy with one sampler (`None`: the policy's own, for a
/// regressor or classifier) on every scene: `n` draws per scene from
/// [`Policy::sample_many`], seeded per scene from `seed`. `engine` names what
/// ran the graphs in the table.
pub fn evaluate(
    policy: &mut Policy,
    sampler_config: Option<SamplerConfig>,
    scenes: &ClawScenes,
    n: usize,
    seed: u64,
) -> Result<(ClawRecord, ScenePoints), TaskError> {
    let truth = truth_points(scenes, n, seed);
    let cfg = sampler_config.unwrap_or(SamplerConfig::ddpm());
    if !policy.is_direct() {
        policy.set_sampler(cfg)?;
    }
    let label = if policy.is_direct() {
        policy
            .manifest()
            .decoder
            .as_ref()
            .map_or("regression", |d| d.choice.name())
            .to_string()
    } else {
        cfg.label()
    };
    let mut figures = Vec::new();
    let mut points = Vec::new();
    let t0 = Instant::now();
    for (scene, truth) in scenes.scenes.iter().zip(&truth) {
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(scene.id as u64));
        let samples = policy.sample_many(&scene.image, n, &mut rng)?;
        figures.push(scene_figures(scene, &samples, truth));
        points.push(samples);
    }
    let secs = t0.elapsed().as_secs_f64();
    let method = policy.manifest().provenance.method.clone();
    let engine = format!("onnx-{}", policy.engine_name());
    Ok((
        record(
            &method,
            &label,
            &engine,
            n,
            &scenes.scenes,
            figures,
            Some(secs),
        ),
        ScenePoints {
            label: format!("{method} {label} {engine}"),
            points,
        },
    ))
}

/// The evaluation table as Markdown.
pub fn markdown_table(records: &[ClawRecord]) -> String {
    let mut s = String::from(
        "| method | sampler | engine | on-object precision | multi-object precision | worst scene | coverage ratio min / max | sliced W1 | actions/s |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in records {
        let aps = if r.actions_per_second.is_finite() {
            format!("{:.0}", r.actions_per_second)
        } else {
            "—".into()
        };
        s.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.2} / {:.2} | {:.4} | {} |\n",
            r.method,
            r.sampler,
            r.engine,
            r.on_object_precision,
            r.multi_object_precision,
            r.worst_scene_precision,
            r.min_coverage_ratio,
            r.max_coverage_ratio,
            r.sliced_wasserstein,
            aps
        ));
    }
    s
}

/// Evaluate every exported policy in `models` with every sampler (a
/// regressor or classifier once, with its own decision), plus the
/// ground-truth row, on `threads` workers. Rows come back in table order
/// (model, then sampler) whatever `threads` is: each job loads its own copy
/// of the policy on `engine` and [`evaluate`] seeds every scene from `seed`,
/// so a row does not depend on which worker ran it or when. KDE rows draw
/// `kde_samples` per scene, the others `samples`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_all(
    models: &[PathBuf],
    engine: EngineChoice,
    samplers: &[SamplerConfig],
    scenes: &ClawScenes,
    samples: usize,
    kde_samples: usize,
    seed: u64,
    threads: usize,
) -> crate::Result<(Vec<ClawRecord>, Vec<ScenePoints>)> {
    let (truth, truth_points) = ground_truth_record(scenes, samples, seed);
    let count = |cfg: Option<SamplerConfig>| match cfg.map(|c| c.selection) {
        Some(diffbc_runtime::Selection::Kde { .. }) => kde_samples,
        _ => samples,
    };
    let load = |dir: &Path| {
        Policy::load(dir, engine).context_with(|| format!("loading {}", dir.display()))
    };
    // Jobs in table order, each with a cost estimate: the time of 1 % of
    // its samples on the first scene (KDE on the Transformer costs 100×
    // DDPM on the sieve; the longest jobs start first).
    let mut jobs: Vec<(usize, Option<SamplerConfig>, f64)> = Vec::new();
    for (i, dir) in models.iter().enumerate() {
        let mut policy = load(dir)?;
        let cfgs: Vec<Option<SamplerConfig>> = if policy.is_direct() {
            vec![None]
        } else {
            samplers.iter().copied().map(Some).collect()
        };
        for cfg in cfgs {
            let cost = match cfg {
                None => 0.0,
                Some(c) => {
                    policy.set_sampler(c)?;
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    let probe = (count(cfg) / 100).max(1);
                    let t0 = Instant::now();
                    policy.sample_many(&scenes.scenes[0].image, probe, &mut rng)?;
                    t0.elapsed().as_secs_f64()
                }
            };
            jobs.push((i, cfg, cost));
        }
    }
    let costs: Vec<f64> = jobs.iter().map(|j| j.2).collect();
    let rows = crate::pool::longest_first(&costs, threads, |j| {
        let (i, cfg, _) = jobs[j];
        let run = || -> crate::Result<(ClawRecord, ScenePoints)> {
            let mut policy = load(&models[i])?;
            let (r, p) = evaluate(&mut policy, cfg, scenes, count(cfg), seed)?;
            tracing::info!(method = %r.method, sampler = %r.sampler, precision = r.on_object_precision, "evaluated");
            Ok((r, p))
        };
        run().context_with(|| format!("evaluating {}", models[i].display()))
    })?;
    let mut records = vec![truth];
    let mut points = vec![truth_points];
    for (r, p) in rows {
        records.push(r);
        points.push(p);
    }
    Ok((records, points))
}

#[cfg(feature = "figures")]
/// Write `report.md` (with `preamble` before the table), the per-scene
/// figures and the records as JSON (`json`, or `eval.json` in `out`); prints
/// the table and where everything went.
pub fn write_report(
    out: &Path,
    records: &[ClawRecord],
    points: &[ScenePoints],
    scenes: &ClawScenes,
    json: Option<&Path>,
    preamble: &str,
) -> Result<(), TaskError> {
    std::fs::create_dir_all(out).map_err(TaskError::io(out))?;
    let figures = crate::plot::write_scene_figures(&out.join("figures"), &scenes.scenes, points)?;
    let table = markdown_table(records);
    let mut report = format!("# diffbc claw evaluation\n\n{preamble}\n## Results\n\n{table}\n");
    report.push_str(
        "On-object precision: share of sampled actions on an object. Coverage ratio: an object's share of the \
         on-object samples over its share of the object pixels (1 = proportional; 0 = a mode is missed). \
         Sliced W1: distance to the true distribution in image widths (the ground-truth row is the noise floor).\n\n## Figures\n\n",
    );
    for f in &figures {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        report.push_str(&format!("![{name}](figures/{name})\n\n"));
    }
    let report_path = out.join("report.md");
    std::fs::write(&report_path, report).map_err(TaskError::io(&report_path))?;
    let json_text = serde_json::to_string_pretty(records).map_err(|e| TaskError::Json {
        path: out.join("eval.json"),
        message: e.to_string(),
    })?;
    let json_path = json
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out.join("eval.json"));
    std::fs::write(&json_path, json_text + "\n").map_err(TaskError::io(&json_path))?;
    println!("{table}");
    println!(
        "report: {}  figures: {}  json: {}",
        report_path.display(),
        out.join("figures").display(),
        json_path.display()
    );
    Ok(())
}

/// The claw bar: every diffusion row beats MSE, Discretised and K-means on
/// on-object precision, and covers every object.
pub fn bars_text(rows: &[ClawRecord]) -> String {
    let best_baseline = |m: &str| {
        rows.iter()
            .find(|r| r.method == m)
            .map(|r| r.on_object_precision)
    };
    let baselines: Vec<(&str, f64)> = ["mse", "discretised", "kmeans"]
        .iter()
        .filter_map(|m| best_baseline(m).map(|p| (*m, p)))
        .collect();
    let mut s = String::from(
        "Bar (every diffusion variant beats MSE, Discretised and K-means on precision, with every object covered):\n\n",
    );
    for r in rows.iter().filter(|r| r.method.starts_with("diffusion")) {
        let beats: Vec<String> = baselines
            .iter()
            .filter(|(_, p)| r.on_object_precision <= *p)
            .map(|(m, p)| format!("{m} {p:.3}"))
            .collect();
        let covered = r.min_coverage_ratio > 0.0;
        let _ = writeln!(
            s,
            "- {} {}: precision {:.3}, smallest coverage ratio {:.2} — {}",
            r.method,
            r.sampler,
            r.on_object_precision,
            r.min_coverage_ratio,
            match (beats.is_empty(), covered) {
                (true, true) => "met".to_string(),
                (false, _) => format!("NOT met (not above {})", beats.join(", ")),
                (true, false) => "NOT met (an object is never chosen)".to_string(),
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ground_truth_scores_perfectly() {
        let scenes = ClawScenes::load(&crate::claw::tests::shared_dir()).expect("data");
        let (r, _) = ground_truth_record(&scenes, 2000, 1);
        assert_eq!(r.on_object_precision, 1.0);
        assert!(
            r.min_coverage_ratio > 0.8 && r.max_coverage_ratio < 1.25,
            "{r:?}"
        );
        // A policy that always answers the centre of the image scores badly.
        let s = &scenes.scenes[5];
        let centre: Vec<f32> = std::iter::repeat_n([0.5f32, 0.5], 500).flatten().collect();
        let truth = &truth_points(&scenes, 500, 2)[5];
        let f = scene_figures(s, &centre, truth);
        assert!(f.sliced_wasserstein > 0.05, "{f:?}");
        assert!(f.coverage_ratio.iter().filter(|&&c| c == 0.0).count() >= 2);
    }
}
