//! Evaluations run the deployed path: a checkpoint given to `eval` is exported
//! into a scratch folder first, and the exported folder runs on the runtime.

use crate::Cpu;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The exported folder for `dir`: itself if it has a manifest, else the
/// checkpoint exported into `scratch` with `options`. Evaluations measure the
/// deployed path.
pub fn exported_with(
    dir: &Path,
    scratch: &Path,
    options: &diffbc_export::ExportOptions,
) -> Result<PathBuf> {
    if dir.join(diffbc_runtime::manifest::MANIFEST_FILE).is_file() {
        return Ok(dir.to_path_buf());
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let out = scratch.join(name);
    diffbc_export::export_checkpoint::<Cpu>(dir, &out, options, &Default::default())
        .with_context(|| format!("exporting {}", dir.display()))?;
    Ok(out)
}

/// The method of an exported folder, for tables: `mse` for a regressor head,
/// `diffusion` for a denoiser.
pub fn method_of(dir: &Path) -> Result<String> {
    let p = diffbc_runtime::Policy::load(dir, diffbc_runtime::EngineChoice::Native)
        .with_context(|| format!("loading {}", dir.display()))?;
    Ok(if p.is_regressor() { "mse" } else { "diffusion" }.to_string())
}
