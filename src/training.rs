//! Training on the backend the user chose, and the data each task trains on.

use crate::args::DeviceArg;
use anyhow::{Context, Result, bail};
use diffbc_tasks::Task;
use diffbc_train::TrainConfig;
use diffbc_train::data::Dataset;
use diffbc_train::keys::FeatureKeys;
use diffbc_train::train::{self, RunOptions};
use std::path::{Path, PathBuf};

/// CPU inference backend.
pub type Cpu = burn::backend::NdArray<f32>;
/// CPU training backend.
pub type CpuTrain = burn::backend::Autodiff<Cpu>;

/// `--data`, or the task's default data.
pub fn data_dir(task: Task, data: &Option<PathBuf>) -> PathBuf {
    data.clone()
        .unwrap_or_else(|| PathBuf::from(task.default_data()))
}

/// The training samples of `config.task` from `data` (a folder or file).
pub fn load_dataset(config: &TrainConfig, data: &Path) -> Result<Dataset> {
    load_dataset_with(config, data, &FeatureKeys::default())
}

/// As [`load_dataset`], with `keys` choosing the features of a LeRobot or
/// zarr data set.
pub fn load_dataset_with(config: &TrainConfig, data: &Path, keys: &FeatureKeys) -> Result<Dataset> {
    let task = Task::from_name(&config.task).with_context(|| {
        format!(
            "the config's task {:?} is not one of diffbc's tasks ({})",
            config.task,
            Task::ALL.map(Task::name).join(", ")
        )
    })?;
    Ok(task.dataset(config, data, keys)?)
}

/// Train into `out`. `force` replaces a checkpoint already there (never a
/// folder or file that is not a checkpoint); `resume` continues it.
pub fn train_on_device(
    config: &TrainConfig,
    data: &diffbc_train::data::Dataset,
    out: &Path,
    resume: bool,
    force: bool,
    stop_at: Option<usize>,
    device: DeviceArg,
) -> Result<train::TrainOutcome> {
    let options = RunOptions {
        resume,
        progress: true,
        stop_at,
        force,
    };
    let outcome = match device {
        DeviceArg::Cpu => {
            train::train::<CpuTrain>(config, data, out, &Default::default(), options)?
        }
        // burn's CUDA backend panics (on its own thread, then on ours) when it
        // cannot load the driver or NVRTC: that becomes an error.
        #[cfg(feature = "cuda")]
        DeviceArg::Cuda => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            train::train::<burn::backend::Autodiff<burn::backend::Cuda>>(
                config,
                data,
                out,
                &Default::default(),
                options,
            )
        }))
        .map_err(|_| {
            anyhow::anyhow!(
                "burn's CUDA backend could not start (its message is above): an NVIDIA driver (libcuda.so.1) and the CUDA runtime and NVRTC libraries must be on the loader's path"
            )
        })??,
        #[cfg(feature = "wgpu")]
        DeviceArg::Wgpu => train::train::<burn::backend::Autodiff<burn::backend::Wgpu>>(
            config,
            data,
            out,
            &Default::default(),
            options,
        )?,
        #[allow(unreachable_patterns)]
        other => bail!(
            "--device {other:?} is not compiled in; rebuild with `--features {}`",
            format!("{other:?}").to_lowercase()
        ),
    };
    Ok(outcome)
}
