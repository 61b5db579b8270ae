//! Evaluations run the deployed path: a checkpoint given to `eval` is exported
//! into a scratch folder first, and the exported folder runs on the runtime.

use crate::training::Cpu;
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
    // One line: the export error names the file already.
    diffbc_export::export_checkpoint::<Cpu>(dir, &out, options, &Default::default())
        .map_err(|e| anyhow::anyhow!("exporting {} for evaluation: {e}", dir.display()))?;
    Ok(out)
}

/// What an exported folder is, for evaluation tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedKind {
    /// The manifest's `provenance.method` (`diffusion`, `mse`, `discretised`, …).
    pub method: String,
    /// For heads that decide without the sampler, the label of their
    /// decision (`-` for a regressor, the choice rule for a classifier);
    /// `None` for a denoiser, which is evaluated with each sampler.
    pub direct: Option<String>,
}

/// Read what `dir` holds from its manifest.
pub fn kind_of(dir: &Path) -> Result<ExportedKind> {
    use diffbc_runtime::manifest::HeadKind;
    let (m, _) = diffbc_runtime::policy::read_manifest(dir)
        .with_context(|| format!("loading {}", dir.display()))?;
    let direct = match m.head_kind {
        HeadKind::Denoiser => None,
        HeadKind::Regressor => Some("-".to_string()),
        HeadKind::Classifier => Some(
            m.decoder
                .as_ref()
                .map_or("sample", |d| d.choice.name())
                .to_string(),
        ),
    };
    Ok(ExportedKind {
        method: m.provenance.method,
        direct,
    })
}
