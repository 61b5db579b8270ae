//! Push-T from state: Chi et al.'s human teleoperation demonstrations (read in
//! place from the Diffusion Policy zarr), a Rust environment on `rapier2d`
//! for closed-loop scoring, and `diffbc eval --task pusht`.

pub mod cli;
pub mod env;
pub mod eval;
pub mod geometry;

use anyhow::{Context, Result, bail};
use diffbc_train::episodes::Episodes;
use std::path::Path;

/// Read the Push-T demonstrations (`data/state`, `data/action`,
/// `meta/episode_ends` of the zarr folder) and check their shapes.
pub fn load_demos(path: &Path) -> Result<Episodes> {
    if !path.exists() {
        bail!(
            "{}: no Push-T data there (expected the Diffusion Policy zarr folder, e.g. ../shared/data/pusht/pusht_cchi_v7_replay.zarr)",
            path.display()
        );
    }
    let e = Episodes::load(path).with_context(|| format!("reading {}", path.display()))?;
    if e.obs_dim != env::OBS_DIM || e.action_dim != env::ACTION_DIM {
        bail!(
            "{}: {}-value states and {}-value actions; Push-T from state has {} and {}",
            path.display(),
            e.obs_dim,
            e.action_dim,
            env::OBS_DIM,
            env::ACTION_DIM
        );
    }
    Ok(e)
}
