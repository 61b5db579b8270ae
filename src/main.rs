//! `diffbc`: train, sample and evaluate diffusion policies, export them, and
//! drive an arm. A thin dispatcher: the arguments live in [`args`], each
//! subcommand is one function in the module of its area, and the work is done
//! by the library crates (`diffbc-train`, `diffbc-export`, `diffbc-tasks`,
//! `diffbc-deploy`).

mod args;
mod arm;
mod claw;
mod commands;
mod exported;
mod pusht;
mod report;
mod training;

use anyhow::Result;
use args::{Cli, Command, EvalArgs, PipelineArgs, TaskArg};
use clap::Parser;

fn main() -> Result<()> {
    diffbc_deploy::init_tracing();
    match Cli::parse().command {
        Command::Train(a) => commands::train(a),
        Command::Sample(a) => claw::sample(&a),
        Command::Eval(a) => eval(&a),
        Command::Pipeline(a) => pipeline(&a),
        Command::Demos(a) => commands::demos(a),
        Command::Export(a) => commands::export(a),
        Command::Bench(a) => diffbc_deploy::cli::bench(a),
        Command::BenchBridge(a) => diffbc_deploy::bridge_bench::run(&a),
        Command::Reference(a) => commands::reference(a),
        Command::SimArm(a) => diffbc_deploy::cli::sim_arm(a),
        Command::Run(a) => diffbc_deploy::cli::run(a),
        Command::Report(a) => report::run(&a),
    }
}

/// `diffbc eval --task <task>`.
fn eval(a: &EvalArgs) -> Result<()> {
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
