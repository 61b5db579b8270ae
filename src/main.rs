//! `diffbc`: train, sample and evaluate diffusion policies, export them, and
//! drive an arm. A thin dispatcher: the arguments live in [`args`], each
//! subcommand is one function in the module of its area, and the work is done
//! by the library crates (`diffbc-train`, `diffbc-export`, `diffbc-tasks`,
//! `diffbc-deploy`).

mod args;
/// Counting allocations costs an atomic add per allocation: only builds that
/// measure (`bench`'s allocs/act column) install it.
#[cfg(feature = "count-allocations")]
#[global_allocator]
static ALLOCATOR: diffbc_alloc_count::Counting = diffbc_alloc_count::Counting;

mod arm;
mod claw;
mod commands;
mod pusht;
mod record;
mod training;

use anyhow::Result;
use args::{Cli, Command, EvalArgs, PipelineArgs, ReportArgs, TaskArg};
use clap::Parser;

fn main() -> std::process::ExitCode {
    diffbc_deploy::keep_nvidia_libraries_at_f32();
    diffbc_deploy::init_tracing();
    diffbc_deploy::exit(dispatch(Cli::parse().command))
}

fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Train(a) => commands::train(a),
        Command::Sample(a) => claw::sample(&a),
        Command::Eval(a) => eval(&a),
        Command::Pipeline(a) => pipeline(&a),
        Command::Demos(a) => commands::demos(a),
        Command::Modes(a) => commands::modes(a),
        Command::Export(a) => commands::export(a),
        Command::Bench(a) => diffbc_deploy::cli::bench(a),
        Command::Verify(a) => diffbc_deploy::verify::run(&a),
        Command::BenchBridge(a) => diffbc_deploy::bridge_bench::run(&a),
        Command::Reference(a) => commands::reference(a),
        Command::SimArm(a) => diffbc_deploy::cli::sim_arm(a),
        Command::Calibrate(a) => diffbc_deploy::cli::calibrate(a),
        Command::Record(a) => record::record(a),
        Command::Run(a) => diffbc_deploy::cli::run(a),
        Command::Report(a) => report(&a),
    }
}

/// `diffbc eval --task <task>`.
fn eval(a: &EvalArgs) -> Result<()> {
    a.check_task_flags()?;
    match a.task {
        TaskArg::Claw => claw::evaluate(a),
        TaskArg::Arm => arm::evaluate(a),
        TaskArg::Pusht => pusht::evaluate(a),
    }
}

/// `diffbc pipeline --task <task>`.
fn pipeline(a: &PipelineArgs) -> Result<()> {
    match a.task {
        TaskArg::Claw => claw::pipeline(a),
        TaskArg::Arm => arm::pipeline(a),
        TaskArg::Pusht => anyhow::bail!(
            "the pipeline runs the arm task (the main job) or the claw scenes; for Push-T use `diffbc train --task pusht`, `diffbc export` and `diffbc eval --task pusht`"
        ),
    }
}

/// `diffbc report`: the paper's comparison, `diffbc_tasks::study`.
fn report(a: &ReportArgs) -> Result<()> {
    Ok(diffbc_tasks::study::run(
        &diffbc_tasks::study::StudyOptions {
            out: a.out.clone(),
            seed: a.seed,
            tasks: a.tasks.iter().map(|&t| t.into()).collect(),
            steps_scale: a.steps_scale,
            claw_data: a.claw_data.clone(),
            claw_samples: a.claw_samples,
            arm_demos: a.arm_demos,
            arm_episodes: a.arm_episodes,
            arm_architectures: a.arm_architectures,
            arm_modes: a.arm_modes,
            smoke: a.smoke,
        },
    )?)
}
