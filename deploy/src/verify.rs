//! `verify`: does this machine's engine reproduce an exported policy? Every
//! golden case of each folder (the trainer's graph outputs) and every
//! end-to-end golden episode (observations, recorded draws, actions) run on
//! each engine asked for, against the weight format's bound: what the test
//! suite asserts for the CPU engines, as a command for a board or a GPU
//! machine that has no Rust toolchain.

use anyhow::{Result, bail};
use clap::Args;
use diffbc_runtime::replay::{self, ReplayReport};
use diffbc_runtime::{EngineChoice, OnnxModel};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

/// End-to-end episodes must match within this, in the head's units, in
/// every weight format (reduced folders record their episodes on their own
/// graphs).
pub const EPISODE_TOLERANCE: f32 = 1e-4;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Exported policy folders (each with `golden/`).
    #[arg(required = true)]
    pub models: Vec<PathBuf>,
    /// Engines to check; repeat for several. Default: every CPU engine of
    /// this build (native, tract, and ort-cpu with `--features ort`).
    #[arg(long = "engine")]
    pub engines: Vec<EngineChoice>,
    /// Also write the rows as JSON records here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One folder on one engine.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyRow {
    /// The folder.
    pub model: String,
    /// The engine asked for.
    pub engine: String,
    /// The folder's weight format.
    pub weights: String,
    /// Golden graph cases run (one per batch size and graph).
    pub graph_cases: usize,
    /// Largest |output − trainer's output| over the graph cases.
    pub graph_worst_abs: f32,
    /// The same relative to each case's largest value.
    pub graph_worst_rel: f32,
    /// The bound for the graph cases (absolute for f32, relative otherwise).
    pub graph_bound: f32,
    /// End-to-end episodes replayed and their ticks.
    pub episodes: usize,
    /// Ticks of those episodes.
    pub ticks: usize,
    /// Largest action difference in the head's units.
    pub episode_worst: f32,
    /// Seconds to load the folder on the engine (graph preparation included).
    pub load_seconds: f64,
    /// Whether both parts are within their bounds.
    pub pass: bool,
    /// Why it could not run, if it could not.
    pub error: Option<String>,
}

fn check(model: &std::path::Path, engine: EngineChoice) -> VerifyRow {
    let mut row = VerifyRow {
        model: model.display().to_string(),
        engine: engine.to_string(),
        weights: String::new(),
        graph_cases: 0,
        graph_worst_abs: f32::NAN,
        graph_worst_rel: f32::NAN,
        graph_bound: f32::NAN,
        episodes: 0,
        ticks: 0,
        episode_worst: f32::NAN,
        load_seconds: f64::NAN,
        pass: false,
        error: None,
    };
    let t0 = Instant::now();
    let mut graphs = match OnnxModel::load(model, engine) {
        Ok(m) => m,
        Err(e) => {
            row.error = Some(e.to_string());
            return row;
        }
    };
    row.load_seconds = t0.elapsed().as_secs_f64();
    let weights = graphs.manifest.weights;
    row.weights = weights.to_string();
    row.graph_bound = weights.golden_tolerance();
    let golden = match graphs.golden_worst(model) {
        Ok(g) => g,
        Err(e) => {
            row.error = Some(e.to_string());
            return row;
        }
    };
    drop(graphs);
    row.graph_cases = golden.batches.len();
    row.graph_worst_abs = golden.absolute;
    row.graph_worst_rel = golden.relative;
    let episodes: ReplayReport = match replay::replay(model, engine) {
        Ok(r) => r,
        Err(e) => {
            row.error = Some(e.to_string());
            return row;
        }
    };
    row.episodes = episodes.cases;
    row.ticks = episodes.ticks;
    row.episode_worst = episodes.worst_normalised;
    row.pass = row.graph_cases > 0
        && golden.within(weights)
        && episodes.cases > 0
        && episodes.worst_normalised <= EPISODE_TOLERANCE;
    row
}

/// Check every folder on every engine; the rows in order.
pub fn verify(models: &[PathBuf], engines: &[EngineChoice]) -> Vec<VerifyRow> {
    models
        .iter()
        .flat_map(|m| engines.iter().map(move |&e| check(m, e)))
        .collect()
}

/// The rows as a Markdown table.
pub fn table(rows: &[VerifyRow]) -> String {
    let mut s = String::from(
        "| model | engine | weights | graph cases | worst graph diff (bound) | episodes × ticks | worst action diff (head units, bound 1e-4) | load (s) | result |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let result = match &r.error {
            Some(e) => format!("error: {}", e.replace('|', "\\|").replace('\n', " ")),
            None if r.pass => "pass".into(),
            None => "FAIL".into(),
        };
        let graph = if r.error.is_some() {
            "–".to_string()
        } else if r.weights == "f32" {
            format!("{:.1e} abs ({:.0e})", r.graph_worst_abs, r.graph_bound)
        } else {
            format!("{:.1e} rel ({:.0e})", r.graph_worst_rel, r.graph_bound)
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} × {} | {:.1e} | {:.2} | {} |",
            r.model,
            r.engine,
            r.weights,
            r.graph_cases,
            graph,
            r.episodes,
            r.ticks,
            r.episode_worst,
            r.load_seconds,
            result
        );
    }
    s
}

/// The command: print the table, write the JSON, fail unless every row passes.
pub fn run(a: &VerifyArgs) -> Result<()> {
    let engines = crate::cli::engines_or_cpu_default(&a.engines);
    let rows = verify(&a.models, &engines);
    let tf32 = std::env::var(crate::TF32_VARIABLE).unwrap_or_default();
    println!(
        "NVIDIA libraries: {}={tf32} ({})\n",
        crate::TF32_VARIABLE,
        if tf32 == "0" { "f32" } else { "TF32 allowed" }
    );
    print!("{}", table(&rows));
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&rows)?;
        std::fs::write(path, text + "\n")
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| !r.pass)
        .map(|r| format!("{} on {}", r.model, r.engine))
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} checks did not reproduce the golden outputs: {}",
            failed.len(),
            rows.len(),
            failed.join(", ")
        );
    }
    Ok(())
}
