//! Which stored features become the observation and the action.
//!
//! Stored data sets name their arrays: a LeRobot dataset has columns such as
//! `observation.state`, `observation.environment_state` and `action`; a
//! Diffusion Policy zarr has arrays such as `data/state`, `data/keypoint` and
//! `data/action`. [`FeatureKeys`] picks them by name (`--obs-keys`,
//! `--action-key`); several observation features are concatenated in the
//! order given. The `.demos` file stores exactly one observation and one
//! action, so it takes no keys.

use crate::episodes::Episodes;
use crate::error::TrainError;
use std::path::Path;

/// Observation and action features chosen by name; empty / `None` means the
/// format's default (`observation.state` / `action` for LeRobot, `state` /
/// `action` for zarr).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureKeys {
    /// Observation features, concatenated per row in this order.
    pub obs: Vec<String>,
    /// The action feature.
    pub action: Option<String>,
}

/// Default observation array of the Diffusion Policy zarr layout.
pub const ZARR_OBS: &str = "state";
/// Default action array of the Diffusion Policy zarr layout.
pub const ZARR_ACTION: &str = "action";

impl FeatureKeys {
    /// Keys from the command line: `obs` comma-separated (empty: default).
    pub fn new(obs: &[String], action: Option<&str>) -> Self {
        Self {
            obs: obs
                .iter()
                .flat_map(|s| s.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            action: action.map(String::from),
        }
    }

    /// Whether every key is the format's default.
    pub fn is_default(&self) -> bool {
        self.obs.is_empty() && self.action.is_none()
    }

    /// The observation keys, or `default` when none was given.
    pub fn obs_or<'a>(&'a self, default: &'a str) -> Vec<&'a str> {
        if self.obs.is_empty() {
            vec![default]
        } else {
            self.obs.iter().map(String::as_str).collect()
        }
    }

    /// The action key, or `default` when none was given.
    pub fn action_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.action.as_deref().unwrap_or(default)
    }
}

/// Read a data-set folder: a LeRobot dataset when it has `meta/info.json`,
/// otherwise a Diffusion Policy zarr.
pub(crate) fn load_folder(path: &Path, keys: &FeatureKeys) -> Result<Episodes, TrainError> {
    if crate::lerobot::is_dataset(path) {
        return crate::lerobot::read(path, keys);
    }
    load_zarr(path, keys)
}

/// The zarr layout with the arrays `keys` names: each observation array is
/// read (with the action array, whose rows and the episode ends must agree)
/// and the rows are concatenated in order.
fn load_zarr(root: &Path, keys: &FeatureKeys) -> Result<Episodes, TrainError> {
    let obs_keys = keys.obs_or(ZARR_OBS);
    let action_key = keys.action_or(ZARR_ACTION);
    let mut out = Episodes::load_zarr(root, obs_keys[0], action_key)?;
    if obs_keys.len() == 1 {
        return Ok(out);
    }
    let mut parts = vec![out.clone()];
    for key in &obs_keys[1..] {
        parts.push(Episodes::load_zarr(root, key, action_key)?);
    }
    let steps = out.steps();
    out.obs_dim = parts.iter().map(|p| p.obs_dim).sum();
    out.obs = Vec::with_capacity(steps * out.obs_dim);
    for i in 0..steps {
        for p in &parts {
            out.obs.extend_from_slice(p.obs_row(i));
        }
    }
    out.obs_names = parts
        .iter()
        .zip(&obs_keys)
        .flat_map(|(p, key)| (0..p.obs_dim).map(move |j| format!("{key}[{j}]")))
        .collect();
    out.source["obs"] = serde_json::json!(obs_keys);
    out.validate(root)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_on_commas_and_default_per_format() {
        let k = FeatureKeys::new(&["a, b".into(), "c".into()], Some("act"));
        assert_eq!(k.obs, ["a", "b", "c"]);
        assert_eq!(k.obs_or("x"), ["a", "b", "c"]);
        assert_eq!(k.action_or("x"), "act");
        let d = FeatureKeys::new(&[], None);
        assert!(d.is_default());
        assert_eq!(
            (d.obs_or("state"), d.action_or("action")),
            (vec!["state"], "action")
        );
    }

    #[test]
    fn zarr_arrays_are_chosen_by_name() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/pusht/pusht_cchi_v7_replay.zarr");
        let plain = Episodes::load(&root).expect("state");
        let k = FeatureKeys::new(&["state,keypoint".into()], Some("action"));
        let e = Episodes::load_with(&root, &k).expect("state + keypoint");
        assert_eq!((e.obs_dim, e.action_dim), (5 + 18, 2));
        assert_eq!(e.episode_ends, plain.episode_ends);
        assert_eq!(&e.obs_row(7)[..5], plain.obs_row(7));
        assert_eq!(
            (e.obs_names[0].as_str(), e.obs_names[5].as_str()),
            ("state[0]", "keypoint[0]")
        );
        let m = Episodes::load_with(&root, &FeatureKeys::new(&["velocity".into()], None))
            .unwrap_err()
            .to_string();
        assert!(m.contains("data/velocity"), "{m}");
        let m = Episodes::load_with(std::path::Path::new("x.demos"), &k)
            .unwrap_err()
            .to_string();
        assert!(m.contains("x.demos") && m.contains("--obs-keys"), "{m}");
    }
}
