//! Demonstrations as episodes on disk: diffbc's own one-file format, and the
//! Diffusion Policy zarr layout (`data/<obs>`, `data/action`,
//! `meta/episode_ends`) that Push-T and many users' data sets use.
//!
//! ## The `.demos` file (format version 1)
//!
//! | bytes | content |
//! |---|---|
//! | 0..8 | magic `DIFFBCD1` |
//! | 8..12 | header length `H`, u32 little-endian |
//! | 12..12+H | header, UTF-8 JSON ([`DemosHeader`]) |
//! | then | observations, f32 little-endian, `[steps, obs_dim]` row-major |
//! | then | actions, f32 little-endian, `[steps, action_dim]` row-major |
//!
//! The header carries the episode boundaries (exclusive end index of each
//! episode, like Diffusion Policy's `episode_ends`), the names of the
//! observation and action channels, free-form provenance (the generator and
//! its seed), and the SHA-256 of the payload. Every error names the file and,
//! for the payload, the byte offset.

use crate::data::Dataset;
use crate::data::ObsSpec;
use crate::error::TrainError;
use crate::interface::ChannelHints;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// First bytes of a `.demos` file.
pub const MAGIC: &[u8; 8] = b"DIFFBCD1";
/// Version written into the header.
pub const FORMAT_VERSION: u32 = 1;
pub use crate::data::MAX_ABS_VALUE;

/// A `.demos` file as an output: recognised by its magic, so a save never
/// overwrites a file of any other kind.
pub const KIND: diffbc_runtime::fs::OutputKind = diffbc_runtime::fs::OutputKind {
    what: "a diffbc demonstrations file",
    is_dir: false,
    entries: &[],
    recognise: has_magic,
};

fn has_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == MAGIC
}

/// The JSON header of a `.demos` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemosHeader {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Values per observation row.
    pub obs_dim: usize,
    /// Values per action row.
    pub action_dim: usize,
    /// Rows in total.
    pub steps: usize,
    /// Exclusive end row of each episode, increasing, last = `steps`.
    pub episode_ends: Vec<usize>,
    /// One name per observation value.
    pub obs_names: Vec<String>,
    /// One name per action value.
    pub action_names: Vec<String>,
    /// Where the data came from (generator, seed, settings).
    pub source: serde_json::Value,
    /// Units, run-time sources and targets, control rate (absent in files
    /// written before they were recorded).
    #[serde(default, skip_serializing_if = "ChannelHints::is_empty")]
    pub channels: ChannelHints,
    /// SHA-256 of the payload (observations then actions), lower-case hex.
    pub payload_sha256: String,
}

/// Demonstrations: one row per control tick, episodes back to back.
#[derive(Debug, Clone, PartialEq)]
pub struct Episodes {
    /// Values per observation row.
    pub obs_dim: usize,
    /// Values per action row.
    pub action_dim: usize,
    /// `[steps, obs_dim]`.
    pub obs: Vec<f32>,
    /// `[steps, action_dim]`.
    pub actions: Vec<f32>,
    /// Exclusive end row of each episode.
    pub episode_ends: Vec<usize>,
    /// One name per observation value (may be empty).
    pub obs_names: Vec<String>,
    /// One name per action value (may be empty).
    pub action_names: Vec<String>,
    /// Provenance.
    pub source: serde_json::Value,
    /// Units, sources, targets and control rate, where recorded.
    pub hints: ChannelHints,
}

fn data_err(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl Episodes {
    /// An empty set with the given row widths.
    pub fn new(obs_dim: usize, action_dim: usize) -> Self {
        Self {
            obs_dim,
            action_dim,
            obs: Vec::new(),
            actions: Vec::new(),
            episode_ends: Vec::new(),
            obs_names: Vec::new(),
            action_names: Vec::new(),
            source: serde_json::Value::Null,
            hints: ChannelHints::default(),
        }
    }

    /// Rows in total.
    pub fn steps(&self) -> usize {
        self.actions.len() / self.action_dim.max(1)
    }

    /// Number of episodes.
    pub fn len(&self) -> usize {
        self.episode_ends.len()
    }

    /// Whether there is no episode.
    pub fn is_empty(&self) -> bool {
        self.episode_ends.is_empty()
    }

    /// Row range of episode `e`.
    pub fn episode(&self, e: usize) -> std::ops::Range<usize> {
        let start = if e == 0 { 0 } else { self.episode_ends[e - 1] };
        start..self.episode_ends[e]
    }

    /// Observation row `i`.
    pub fn obs_row(&self, i: usize) -> &[f32] {
        &self.obs[i * self.obs_dim..(i + 1) * self.obs_dim]
    }

    /// Action row `i`.
    pub fn action_row(&self, i: usize) -> &[f32] {
        &self.actions[i * self.action_dim..(i + 1) * self.action_dim]
    }

    /// Append one episode.
    pub fn push_episode(&mut self, obs: &[f32], actions: &[f32]) -> Result<(), TrainError> {
        let n = actions.len() / self.action_dim.max(1);
        if n == 0 || actions.len() != n * self.action_dim || obs.len() != n * self.obs_dim {
            return Err(TrainError::Data(format!(
                "episode {}: {} observation values and {} action values do not make whole rows of {} and {}",
                self.len(),
                obs.len(),
                actions.len(),
                self.obs_dim,
                self.action_dim
            )));
        }
        self.obs.extend_from_slice(obs);
        self.actions.extend_from_slice(actions);
        self.episode_ends.push(self.steps());
        Ok(())
    }

    /// Check lengths, boundaries and finiteness; `origin` names the source.
    pub fn validate(&self, origin: &Path) -> Result<(), TrainError> {
        let steps = self.steps();
        if self.obs_dim == 0 || self.action_dim == 0 {
            return Err(data_err(
                origin,
                "obs_dim and action_dim must be at least 1",
            ));
        }
        if self.actions.len() != steps * self.action_dim || self.obs.len() != steps * self.obs_dim {
            return Err(data_err(
                origin,
                format!(
                    "{} observation values and {} action values are not {steps} rows of {} and {}",
                    self.obs.len(),
                    self.actions.len(),
                    self.obs_dim,
                    self.action_dim
                ),
            ));
        }
        let mut prev = 0;
        for (e, &end) in self.episode_ends.iter().enumerate() {
            if end <= prev || end > steps {
                return Err(data_err(
                    origin,
                    format!(
                        "episode_ends[{e}] = {end}: ends must increase strictly and stay within {steps} rows (previous {prev})"
                    ),
                ));
            }
            prev = end;
        }
        if prev != steps {
            return Err(data_err(
                origin,
                format!("the last episode ends at row {prev}, but there are {steps} rows"),
            ));
        }
        for (name, names, dim) in [
            ("obs_names", &self.obs_names, self.obs_dim),
            ("action_names", &self.action_names, self.action_dim),
        ] {
            if !names.is_empty() && names.len() != dim {
                return Err(data_err(
                    origin,
                    format!("{name} has {} names for {dim} values", names.len()),
                ));
            }
        }
        for (what, v, dim, names) in [
            ("observation", &self.obs, self.obs_dim, &self.obs_names),
            ("action", &self.actions, self.action_dim, &self.action_names),
        ] {
            if let Some(i) = v
                .iter()
                .position(|x| !(x.is_finite() && x.abs() <= MAX_ABS_VALUE))
            {
                let (row, col) = (i / dim, i % dim);
                let channel = names
                    .get(col)
                    .map_or_else(|| format!("channel {col}"), |n| format!("channel {n:?}"));
                let why = if v[i].is_finite() {
                    format!(
                        "beyond ±{MAX_ABS_VALUE:e}, implausible for a recorded {what} (check the units, or a corrupt recording); it would swamp the channel's normalisation"
                    )
                } else {
                    "not finite".to_string()
                };
                return Err(data_err(
                    origin,
                    format!("{what} row {row} value {col}, {channel}: {} is {why}", v[i]),
                ));
            }
        }
        self.hints
            .validate(self.obs_dim, self.action_dim)
            .map_err(|m| data_err(origin, m))?;
        Ok(())
    }

    /// Samples for training: every row with its `history` previous rows of
    /// the same episode (the first row repeated at an episode's start, as the
    /// runtime does at deployment).
    pub fn to_dataset(&self, history: usize) -> Dataset {
        self.to_chunked_dataset(history, 1)
    }

    /// As [`Episodes::to_dataset`], with each sample's action the chunk of
    /// `horizon` actions from its row on (`[samples, horizon · action_dim]`).
    /// Near an episode's end the chunk repeats the episode's last action (the
    /// demonstrator holds still), so no chunk crosses into the next episode.
    pub fn to_chunked_dataset(&self, history: usize, horizon: usize) -> Dataset {
        let h = history + 1;
        let a = self.action_dim;
        let horizon = horizon.max(1);
        let mut frame_index = Vec::with_capacity(self.steps() * h);
        let mut actions = Vec::with_capacity(self.steps() * a * horizon);
        for e in 0..self.len() {
            let r = self.episode(e);
            for i in r.clone() {
                for back in (0..h).rev() {
                    frame_index.push(i.saturating_sub(back).max(r.start) as u32);
                }
                for k in 0..horizon {
                    let j = (i + k).min(r.end - 1);
                    actions.extend_from_slice(&self.actions[j * a..(j + 1) * a]);
                }
            }
        }
        Dataset {
            obs: ObsSpec::Vector { dim: self.obs_dim },
            action_dim: a * horizon,
            history,
            horizon,
            frames: self.obs.clone(),
            frame_index,
            actions,
            interface: Some(crate::interface::describe(self)),
        }
    }

    fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 * (self.obs.len() + self.actions.len()));
        for v in self.obs.iter().chain(&self.actions) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Write a `.demos` file (atomically: a temporary file, then rename). An
    /// existing file at `path` is replaced only if it is a `.demos` file
    /// ([`KIND`]); callers that honour `--force` claim it first.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        self.validate(path)?;
        let payload = self.payload();
        let header = DemosHeader {
            format_version: FORMAT_VERSION,
            obs_dim: self.obs_dim,
            action_dim: self.action_dim,
            steps: self.steps(),
            episode_ends: self.episode_ends.clone(),
            obs_names: self.obs_names.clone(),
            action_names: self.action_names.clone(),
            source: self.source.clone(),
            channels: self.hints.clone(),
            payload_sha256: hex(&Sha256::digest(&payload)),
        };
        let json = serde_json::to_vec(&header).map_err(|e| data_err(path, e.to_string()))?;
        let mut bytes = Vec::with_capacity(12 + json.len() + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&json);
        bytes.extend_from_slice(&payload);
        diffbc_runtime::fs::replace_file(path, &bytes, &KIND)?;
        Ok(())
    }

    /// Read a `.demos` file, a LeRobot dataset folder (`meta/info.json`, see
    /// [`crate::lerobot`]) or a Diffusion Policy zarr folder (observation
    /// array `data/state`, see [`Episodes::load_zarr`]).
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        Self::load_with(path, &crate::keys::FeatureKeys::default())
    }

    /// As [`Episodes::load`], with `keys` choosing the observation and action
    /// features of a folder (a `.demos` file has exactly one of each).
    pub fn load_with(path: &Path, keys: &crate::keys::FeatureKeys) -> Result<Self, TrainError> {
        if path.is_dir() {
            return crate::keys::load_folder(path, keys);
        }
        if !keys.is_default() {
            return Err(data_err(
                path,
                "a .demos file stores one observation and one action: --obs-keys / --action-key apply to LeRobot and zarr folders",
            ));
        }
        let bytes = diffbc_runtime::fs::read(path, diffbc_runtime::fs::limits::DEMOS)?;
        Self::from_bytes(&bytes, path)
    }

    /// Parse the bytes of a `.demos` file; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, TrainError> {
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(data_err(
                path,
                "byte 0: not a diffbc demonstrations file (magic DIFFBCD1 missing)",
            ));
        }
        let h = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let header_end = 12usize.saturating_add(h);
        if header_end > bytes.len() {
            return Err(data_err(
                path,
                format!(
                    "byte 8: header length {h} runs past the end of the file ({} bytes)",
                    bytes.len()
                ),
            ));
        }
        let header: DemosHeader = serde_json::from_slice(&bytes[12..header_end])
            .map_err(|e| data_err(path, format!("bytes 12..{header_end}: header: {e}")))?;
        if header.format_version != FORMAT_VERSION {
            return Err(data_err(
                path,
                format!(
                    "header field format_version: {} is not supported (this build reads {FORMAT_VERSION})",
                    header.format_version
                ),
            ));
        }
        let n_obs = header.steps.checked_mul(header.obs_dim);
        let n_act = header.steps.checked_mul(header.action_dim);
        let expected = n_obs
            .zip(n_act)
            .and_then(|(a, b)| a.checked_add(b))
            .and_then(|n| n.checked_mul(4));
        let payload = &bytes[header_end..];
        if expected != Some(payload.len()) {
            return Err(data_err(
                path,
                format!(
                    "byte {header_end}: the header promises {} rows of {} + {} values ({} bytes) but {} bytes follow",
                    header.steps,
                    header.obs_dim,
                    header.action_dim,
                    expected.map_or("too many".to_string(), |e| e.to_string()),
                    payload.len()
                ),
            ));
        }
        let digest = hex(&Sha256::digest(payload));
        if digest != header.payload_sha256 {
            return Err(data_err(
                path,
                format!(
                    "bytes {header_end}..{}: payload checksum mismatch (header {}, data {digest}): the file is corrupt",
                    bytes.len(),
                    header.payload_sha256
                ),
            ));
        }
        let floats: Vec<f32> = payload
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let n_obs = n_obs.unwrap_or(0);
        let ep = Self {
            obs_dim: header.obs_dim,
            action_dim: header.action_dim,
            obs: floats[..n_obs].to_vec(),
            actions: floats[n_obs..].to_vec(),
            episode_ends: header.episode_ends,
            obs_names: header.obs_names,
            action_names: header.action_names,
            source: header.source,
            hints: header.channels,
        };
        if let Some(i) = ep
            .obs
            .iter()
            .chain(&ep.actions)
            .position(|v| !v.is_finite())
        {
            return Err(data_err(
                path,
                format!("byte {}: value is not finite", header_end + 4 * i),
            ));
        }
        ep.validate(path)?;
        Ok(ep)
    }

    /// Read the Diffusion Policy replay-buffer layout: `data/<obs_key>`
    /// (`[steps, obs_dim]`), `data/<action_key>` (`[steps, action_dim]`) and
    /// `meta/episode_ends` (int64), any zarr v2/v3 codec zarrs supports
    /// (Blosc-zstd for Push-T).
    pub fn load_zarr(root: &Path, obs_key: &str, action_key: &str) -> Result<Self, TrainError> {
        let obs = zarr::read_f32(root, &format!("data/{obs_key}"))?;
        let act = zarr::read_f32(root, &format!("data/{action_key}"))?;
        let ends = zarr::read_i64(root, "meta/episode_ends")?;
        let steps = obs.shape[0];
        if act.shape[0] != steps {
            return Err(data_err(
                &root.join("data").join(action_key),
                format!("{} rows, but data/{obs_key} has {steps}", act.shape[0]),
            ));
        }
        let episode_ends = ends
            .iter()
            .enumerate()
            .map(|(i, &e)| {
                usize::try_from(e).map_err(|_| {
                    data_err(
                        &root.join("meta/episode_ends"),
                        format!("element {i} is {e}, not a row index"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ep = Self {
            obs_dim: obs.row_len(),
            action_dim: act.row_len(),
            obs: obs.data,
            actions: act.data,
            episode_ends,
            obs_names: Vec::new(),
            action_names: Vec::new(),
            source: serde_json::json!({ "zarr": root.display().to_string(), "obs": obs_key, "action": action_key }),
            hints: ChannelHints::default(),
        };
        ep.validate(root)?;
        Ok(ep)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The zarr side, on the `zarrs` crate.
mod zarr {
    use super::data_err;
    use crate::error::TrainError;
    use std::path::Path;
    use std::sync::Arc;
    use zarrs::array::{Array, ArraySubset};
    use zarrs::filesystem::FilesystemStore;
    use zarrs::storage::ReadableStorageTraits;

    pub(super) struct Read<T> {
        pub shape: Vec<usize>,
        pub data: Vec<T>,
    }

    impl<T> Read<T> {
        pub fn row_len(&self) -> usize {
            self.shape[1..].iter().product()
        }
    }

    fn open(root: &Path, name: &str) -> Result<Array<FilesystemStore>, TrainError> {
        let store = FilesystemStore::new(root)
            .map_err(|e| data_err(root, format!("not a zarr store: {e}")))?;
        Array::open(Arc::new(store), &format!("/{name}"))
            .map_err(|e| data_err(&root.join(name), format!("cannot open the zarr array: {e}")))
    }

    /// The most bytes one array may declare (the data are read into memory).
    const MAX_BYTES: u64 = diffbc_runtime::fs::limits::DEMOS;

    fn read<T: zarrs::array::ElementOwned>(root: &Path, name: &str) -> Result<Read<T>, TrainError> {
        let a = open(root, name)?;
        let at = root.join(name);
        let shape: Vec<usize> = a.shape().iter().map(|&d| d as usize).collect();
        if shape.is_empty() || shape[0] == 0 {
            return Err(data_err(&at, "the array is empty"));
        }
        // The declared shape, before anything is allocated for it.
        let bytes = a
            .shape()
            .iter()
            .try_fold(std::mem::size_of::<T>() as u64, |acc, &d| {
                acc.checked_mul(d)
            });
        if bytes.is_none_or(|b| b > MAX_BYTES) {
            return Err(data_err(
                &at,
                format!(
                    "the declared shape {:?} holds {} bytes, more than the {MAX_BYTES} a data array may hold",
                    a.shape(),
                    bytes.map_or("over 2^64".to_string(), |b| b.to_string())
                ),
            ));
        }
        // Every chunk the shape needs must be stored: zarr reads a missing
        // chunk as its fill value, which would train on invented zeros.
        let store = a.storage();
        let grid = a.chunk_grid_shape().to_vec();
        let mut index = vec![0u64; grid.len()];
        if grid.iter().all(|&g| g > 0) {
            loop {
                let key = a.chunk_key(&index);
                let size = store
                    .size_key(&key)
                    .map_err(|e| data_err(&at, format!("cannot look up chunk {key}: {e}")))?;
                if size.is_none() {
                    return Err(data_err(
                        &at,
                        format!(
                            "chunk {key} is missing (the declared shape {:?} needs {} chunks); zarr would read it as zeros",
                            a.shape(),
                            grid.iter().product::<u64>()
                        ),
                    ));
                }
                // Next chunk index, last axis fastest.
                let mut d = grid.len();
                loop {
                    if d == 0 {
                        break;
                    }
                    d -= 1;
                    index[d] += 1;
                    if index[d] < grid[d] {
                        break;
                    }
                    index[d] = 0;
                }
                if index.iter().all(|&i| i == 0) {
                    break;
                }
            }
        }
        let data = a
            .retrieve_array_subset::<Vec<T>>(&ArraySubset::new_with_shape(a.shape().to_vec()))
            .map_err(|e| data_err(&at, format!("reading a chunk failed: {e}")))?;
        Ok(Read { shape, data })
    }

    pub(super) fn read_f32(root: &Path, name: &str) -> Result<Read<f32>, TrainError> {
        read::<f32>(root, name)
    }

    pub(super) fn read_i64(root: &Path, name: &str) -> Result<Vec<i64>, TrainError> {
        Ok(read::<i64>(root, name)?.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn sample() -> Episodes {
        let mut e = Episodes::new(3, 2);
        e.obs_names = vec!["a".into(), "b".into(), "c".into()];
        e.action_names = vec!["x".into(), "y".into()];
        e.source = serde_json::json!({"generator": "test", "seed": 7});
        e.push_episode(&[0., 1., 2., 3., 4., 5.], &[0.5, 0.6, 0.7, 0.8])
            .expect("ep");
        e.push_episode(&[6., 7., 8.], &[0.9, 1.0]).expect("ep");
        e
    }

    #[test]
    fn round_trip_and_history_indices() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("x.demos");
        let e = sample();
        e.save(&p).expect("save");
        let back = Episodes::load(&p).expect("load");
        assert_eq!(back, e);
        let d = back.to_dataset(2);
        d.validate().expect("valid");
        // Row 0: [0,0,0]; row 1: [0,0,1]; row 2 starts episode 2: [2,2,2].
        assert_eq!(d.frame_index, vec![0, 0, 0, 0, 0, 1, 2, 2, 2]);
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn chunks_stay_inside_their_episode() {
        let d = sample().to_chunked_dataset(1, 3);
        d.validate().expect("valid");
        assert_eq!((d.len(), d.action_dim, d.horizon), (3, 6, 3));
        // Episode 1 has actions (0.5, 0.6), (0.7, 0.8): the chunk from row 0
        // holds both and then repeats the last; row 1's repeats it twice.
        assert_eq!(&d.actions[0..6], &[0.5, 0.6, 0.7, 0.8, 0.7, 0.8]);
        assert_eq!(&d.actions[6..12], &[0.7, 0.8, 0.7, 0.8, 0.7, 0.8]);
        // Episode 2's only row never sees episode 1.
        assert_eq!(&d.actions[12..18], &[0.9, 1.0, 0.9, 1.0, 0.9, 1.0]);
        assert_eq!(d.frame_index, vec![0, 0, 0, 1, 2, 2]);
    }

    #[test]
    fn corruption_is_named_with_the_file_and_offset() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("x.demos");
        sample().save(&p).expect("save");
        let good = std::fs::read(&p).expect("read");

        let mut bad = good.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0x40;
        let e = Episodes::from_bytes(&bad, &p).unwrap_err().to_string();
        assert!(e.contains("x.demos") && e.contains("checksum"), "{e}");

        let e = Episodes::from_bytes(&good[..good.len() - 4], &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bytes follow"), "{e}");

        let mut bad = good.clone();
        bad[0] = b'X';
        let e = Episodes::from_bytes(&bad, &p).unwrap_err().to_string();
        assert!(e.contains("byte 0"), "{e}");

        let mut bad = good.clone();
        bad[8] = 0xff;
        bad[9] = 0xff;
        let e = Episodes::from_bytes(&bad, &p).unwrap_err().to_string();
        assert!(e.contains("byte 8"), "{e}");

        // Every truncation is an error, never a panic.
        for n in 0..good.len() {
            assert!(Episodes::from_bytes(&good[..n], &p).is_err());
        }
    }

    #[test]
    fn bad_boundaries_and_nan_are_refused() {
        let p = Path::new("mem");
        let mut e = sample();
        e.episode_ends = vec![2, 2];
        assert!(
            e.validate(p)
                .unwrap_err()
                .to_string()
                .contains("episode_ends[1]")
        );
        let mut e = sample();
        e.episode_ends = vec![2];
        assert!(
            e.validate(p)
                .unwrap_err()
                .to_string()
                .contains("last episode")
        );
        let mut e = sample();
        e.obs[4] = f32::NAN;
        let m = e.validate(p).unwrap_err().to_string();
        assert!(m.contains("observation row 1 value 1"), "{m}");
    }

    fn pusht() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/pusht/pusht_cchi_v7_replay.zarr")
    }

    #[test]
    fn reads_the_push_t_zarr_with_known_values() {
        let e = Episodes::load(&pusht()).expect("push-t");
        assert_eq!((e.obs_dim, e.action_dim), (5, 2));
        assert_eq!(e.steps(), 25_650);
        assert_eq!(e.len(), 206);
        assert_eq!(e.episode(0), 0..161);
        assert_eq!(e.episode(1), 161..279);
        assert_eq!(*e.episode_ends.last().expect("ends"), 25_650);
        let first = e.obs_row(0);
        for (v, want) in first.iter().zip([222.0, 97.0, 222.99, 381.60, 3.008]) {
            assert!((v - want).abs() < 0.01, "{first:?}");
        }
        assert_eq!(e.action_row(0), &[233.0, 71.0]);
        // History never crosses an episode boundary.
        let d = e.to_dataset(1);
        assert_eq!(&d.frame_index[2 * 161..2 * 161 + 2], &[161, 161]);
    }

    #[test]
    fn a_corrupt_zarr_chunk_is_named() {
        // A copy of Push-T's small arrays with one chunk overwritten.
        let dir = tempfile::tempdir().expect("tmp");
        let root = pusht_copy(dir.path());
        Episodes::load_zarr(&root, "state", "action").expect("the copy reads");
        std::fs::write(root.join("data/action/3.0"), b"not blosc at all").expect("write");
        let e = Episodes::load_zarr(&root, "state", "action")
            .unwrap_err()
            .to_string();
        assert!(e.contains("data/action") && e.contains("chunk"), "{e}");
    }

    /// A copy of Push-T's small arrays (state, action, episode ends).
    fn pusht_copy(dir: &Path) -> PathBuf {
        let root = dir.join("copy.zarr");
        for sub in ["data/state", "data/action", "meta/episode_ends"] {
            let from = pusht().join(sub);
            let to = root.join(sub);
            std::fs::create_dir_all(&to).expect("mkdir");
            for f in std::fs::read_dir(&from).expect("ls").flatten() {
                std::fs::copy(f.path(), to.join(f.file_name())).expect("copy");
            }
        }
        for g in ["", "data", "meta"] {
            let z = pusht().join(g).join(".zgroup");
            if z.is_file() {
                std::fs::copy(&z, root.join(g).join(".zgroup")).expect("copy");
            }
        }
        root
    }

    #[test]
    fn a_missing_zarr_chunk_is_an_error_not_zeros() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = pusht_copy(dir.path());
        Episodes::load_zarr(&root, "state", "action").expect("the copy reads");
        // A chunk in the middle, the last one, and one of episode_ends.
        for (array, chunk) in [
            ("data/action", "3.0"),
            ("data/state", "159.0"),
            ("meta/episode_ends", "0"),
        ] {
            let root = pusht_copy(&dir.path().join(chunk));
            std::fs::remove_file(root.join(array).join(chunk)).expect("rm");
            let e = Episodes::load_zarr(&root, "state", "action")
                .expect_err("a missing chunk is an error")
                .to_string();
            assert!(
                e.contains(array) && e.contains(chunk) && e.contains("missing"),
                "{array}/{chunk}: {e}"
            );
        }
    }

    #[test]
    fn a_zarr_shape_the_chunks_do_not_back_is_an_error_not_an_abort() {
        let dir = tempfile::tempdir().expect("tmp");
        for rows in ["1000000000000000", "30000", "4000000000"] {
            let root = pusht_copy(&dir.path().join(rows));
            let meta = root.join("data/action/.zarray");
            let text = std::fs::read_to_string(&meta).expect("read");
            let edited = text.replacen("25650", rows, 1);
            assert_ne!(text, edited);
            std::fs::write(&meta, edited).expect("write");
            let e = Episodes::load_zarr(&root, "state", "action")
                .expect_err("an unbacked shape is an error")
                .to_string();
            assert!(
                e.contains("data/action") && e.contains("shape"),
                "{rows}: {e}"
            );
        }
    }

    #[test]
    fn implausible_values_are_named_with_their_channel() {
        let p = Path::new("mem.demos");
        // One action of 3e38 would make that joint's normaliser useless.
        let mut e = sample();
        e.actions[3] = 3e38;
        let m = e.validate(p).expect_err("3e38").to_string();
        assert!(
            m.contains("mem.demos") && m.contains("action") && m.contains("\"y\""),
            "{m}"
        );
        assert!(m.contains("row 1"), "{m}");
        let mut e = sample();
        e.obs[2] = -1e12;
        let m = e.validate(p).expect_err("-1e12").to_string();
        assert!(m.contains("observation") && m.contains("\"c\""), "{m}");
        // Unnamed channels are named by index.
        let mut e = sample();
        e.action_names.clear();
        e.actions[0] = f32::MAX;
        let m = e.validate(p).expect_err("max").to_string();
        assert!(m.contains("channel 0"), "{m}");
        // Large but plausible values (pixels, encoder ticks) are fine.
        let mut e = sample();
        e.obs[0] = 4095.0;
        e.actions[1] = -512.0;
        e.validate(p).expect("plausible");
        // And a file that holds them is refused at load, naming the file.
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("x.demos");
        let mut e = sample();
        e.obs_names.clear();
        e.action_names.clear();
        let good = {
            e.save(&f).expect("save");
            std::fs::read(&f).expect("read")
        };
        let mut e2 = e.clone();
        e2.actions[3] = 3e38;
        let bytes = {
            // Written around `save`'s check: the payload is patched by hand.
            let mut b = good.clone();
            let at = b.len() - 4;
            b[at..].copy_from_slice(&3e38f32.to_le_bytes());
            let h = u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize;
            let mut header: DemosHeader = serde_json::from_slice(&b[12..12 + h]).expect("header");
            header.payload_sha256 = hex(&Sha256::digest(&b[12 + h..]));
            let json = serde_json::to_vec(&header).expect("json");
            let mut out = Vec::new();
            out.extend_from_slice(MAGIC);
            out.extend_from_slice(&(json.len() as u32).to_le_bytes());
            out.extend_from_slice(&json);
            out.extend_from_slice(&b[12 + h..]);
            out
        };
        let m = Episodes::from_bytes(&bytes, &f)
            .expect_err("3e38 in a file")
            .to_string();
        assert!(m.contains("x.demos") && m.contains("action"), "{m}");
        assert!(e2.validate(&f).is_err());
    }

    #[test]
    fn a_missing_zarr_array_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let e = Episodes::load_zarr(dir.path(), "state", "action")
            .unwrap_err()
            .to_string();
        assert!(e.contains("data/state"), "{e}");
    }
}
