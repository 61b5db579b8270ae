//! Push-T from state: Chi et al.'s human teleoperation demonstrations (read in
//! place from the Diffusion Policy zarr), a Rust environment on `rapier2d`
//! for closed-loop scoring of exported policies, and the scripted replay of
//! the demonstrations.

pub mod env;
pub mod eval;
pub mod geometry;

/// Diffusion-X extra steps on Push-T by default.
pub const EXTRA_STEPS: usize = 8;
/// KDE candidates on Push-T by default.
pub const KDE_CANDIDATES: usize = 10;
/// Closed-loop episodes of an evaluation by default (Diffusion Policy's
/// evaluation uses 50 seeded test states).
pub const EPISODES: usize = 50;

use crate::error::{Context, Result};
use crate::invalid;
use diffbc_train::episodes::Episodes;
use diffbc_train::keys::FeatureKeys;
use std::path::Path;

/// Read the Push-T demonstrations (`data/state`, `data/action`,
/// `meta/episode_ends` of the zarr folder) and check their shapes. A folder
/// that holds exactly one `*.zarr` folder (such as `../shared/data/pusht`)
/// stands for it.
pub fn load_demos(path: &Path) -> Result<Episodes> {
    load_demos_with(path, &FeatureKeys::default())
}

/// As [`load_demos`], with `keys` choosing the arrays or columns (a LeRobot
/// dataset folder is read too).
pub fn load_demos_with(path: &Path, keys: &FeatureKeys) -> Result<Episodes> {
    let inner = zarr_inside(path);
    let path = inner.as_deref().unwrap_or(path);
    if !path.exists() {
        invalid!(
            "{}: no Push-T data there (expected the Diffusion Policy zarr folder, e.g. ../shared/data/pusht/pusht_cchi_v7_replay.zarr)",
            path.display()
        );
    }
    let e =
        Episodes::load_with(path, keys).context_with(|| format!("reading {}", path.display()))?;
    if e.obs_dim != env::OBS_DIM || e.action_dim != env::ACTION_DIM {
        invalid!(
            "{}: {}-value states and {}-value actions; Push-T from state has {} and {}",
            path.display(),
            e.obs_dim,
            e.action_dim,
            env::OBS_DIM,
            env::ACTION_DIM
        );
    }
    Ok(with_channels(e))
}

/// Push-T's channels: the zarr stores bare arrays, so name them here (the
/// environment's state order), with units, host-side sources (the
/// environment, a tracker on real hardware) and the 10 Hz control rate. A
/// data set that names its own channels (LeRobot) keeps its names.
fn with_channels(mut e: Episodes) -> Episodes {
    let named = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    if e.obs_names.is_empty() {
        e.obs_names = named(&["agent.x", "agent.y", "block.x", "block.y", "block.angle"]);
    }
    if e.action_names.is_empty() {
        e.action_names = named(&["agent.target.x", "agent.target.y"]);
    }
    if e.hints.obs_units.is_empty() {
        e.hints.obs_units = named(&["px", "px", "px", "px", "rad"]);
    }
    if e.hints.action_units.is_empty() {
        e.hints.action_units = named(&["px", "px"]);
    }
    e.hints.control_hz = Some(env::CONTROL_HZ);
    e
}

/// The single `*.zarr` folder inside `dir`, when `dir` is not itself a zarr group.
fn zarr_inside(dir: &Path) -> Option<std::path::PathBuf> {
    if !dir.is_dir() || dir.join(".zgroup").is_file() {
        return None;
    }
    let mut found = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.extension().is_some_and(|x| x == "zarr"));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}
