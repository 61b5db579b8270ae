//! LeRobot datasets in and out: the parquet + JSON layout of LeRobot's
//! format v3.0 (read and written) and v2.x (read), state features only.
//!
//! ## Layout
//!
//! | file | content |
//! |---|---|
//! | `meta/info.json` | `codebase_version`, `fps`, `robot_type`, `features` (each with `dtype`, `shape`, `names`), totals |
//! | `data/chunk-XXX/file-XXX.parquet` (v3.0) | frames of many episodes, in order |
//! | `data/chunk-XXX/episode_XXXXXX.parquet` (v2.x) | the frames of one episode |
//! | `meta/episodes/chunk-XXX/file-XXX.parquet` (v3.0), `meta/episodes.jsonl` (v2.x) | per-episode length, tasks, data file |
//! | `meta/tasks.parquet` (v3.0), `meta/tasks.jsonl` (v2.x) | task strings and their `task_index` |
//! | `meta/stats.json` | per-feature min / max / mean / std / count |
//!
//! A data file holds one row per frame: the features (`observation.state`,
//! `action`, …: a list of float32, or a float32 when the shape is `[1]`),
//! `episode_index`, `frame_index`, `timestamp`, `index`, `task_index` and
//! optionally `next.done`. Camera features (`dtype` `video` or `image`) live
//! in other files and are not decoded here.
//!
//! The reader takes the rows of every data file in path order, so frames are
//! in dataset order for both versions, and derives the episode boundaries
//! from `episode_index`, which must run 0, 1, 2, … with each episode's rows
//! together and `frame_index` counting from 0 inside each; where the episode
//! metadata is present its lengths must agree, so LeRobot and diffbc see the
//! same episodes. The parquet files are read with the `parquet` crate's
//! record API: it reads the few columns needed here without the arrow-*
//! crates that the crate's `arrow` feature adds to every build.
//!
//! The writer produces v3.0 (one data file, snappy, as LeRobot writes it)
//! into a temporary sibling folder renamed into place, and never replaces a
//! non-empty folder. diffbc's own provenance (`Episodes::source`) goes to
//! `meta/diffbc.json`, a file LeRobot ignores, and comes back on reading.

use crate::episodes::Episodes;
use crate::error::TrainError;
use crate::keys::FeatureKeys;
use parquet::basic::{LogicalType, Repetition, Type as PhysicalType};
use parquet::data_type::{ByteArray, ByteArrayType, FloatType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field;
use parquet::schema::types::{Type, TypePtr};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The metadata file whose presence makes a folder a LeRobot dataset.
pub const INFO: &str = "meta/info.json";
/// Observation feature read when none is named.
pub const DEFAULT_OBS: &str = "observation.state";
/// Action feature read when none is named.
pub const DEFAULT_ACTION: &str = "action";
/// Version the writer produces.
pub const WRITTEN_VERSION: &str = "v3.0";
/// diffbc's provenance beside LeRobot's metadata.
pub const DIFFBC_META: &str = "meta/diffbc.json";

fn err(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Whether `path` is a LeRobot dataset folder (it has `meta/info.json`).
pub fn is_dataset(path: &Path) -> bool {
    path.join(INFO).is_file()
}

/// The parts of `meta/info.json` this module uses (LeRobot writes more).
#[derive(Debug, Clone, Deserialize)]
struct Info {
    codebase_version: String,
    fps: f64,
    #[serde(default)]
    robot_type: Option<String>,
    features: BTreeMap<String, Feature>,
    #[serde(default)]
    total_frames: Option<usize>,
    #[serde(default)]
    total_episodes: Option<usize>,
}

/// One entry of `info.json`'s `features`.
#[derive(Debug, Clone, Deserialize)]
struct Feature {
    dtype: String,
    shape: Vec<usize>,
    /// A list of names, `{"motors": [...]}` (older data sets) or null.
    #[serde(default)]
    names: serde_json::Value,
}

impl Feature {
    fn width(&self) -> usize {
        self.shape.iter().product()
    }

    /// One name per value, when `names` gives exactly that many.
    fn names(&self) -> Option<Vec<String>> {
        let list = match &self.names {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Object(m) if m.len() == 1 => m.values().next()?.as_array()?,
            _ => return None,
        };
        let names: Option<Vec<String>> =
            list.iter().map(|v| v.as_str().map(String::from)).collect();
        names.filter(|n| n.len() == self.width())
    }
}

/// A float feature to read: its column and row width.
struct Wanted {
    key: String,
    width: usize,
}

/// Read a LeRobot dataset (v3.0 or v2.x): `keys.obs` (default
/// `observation.state`) concatenated as the observation, `keys.action`
/// (default `action`) as the action. Channel names come from the features'
/// `names` in `info.json`; `fps` and the chosen keys go into `source`.
pub fn read(root: &Path, keys: &FeatureKeys) -> Result<Episodes, TrainError> {
    let info_path = root.join(INFO);
    if !info_path.is_file() {
        return Err(err(
            &info_path,
            "missing: a LeRobot dataset has meta/info.json (fps, features); is this the dataset's root folder?",
        ));
    }
    let info: Info = crate::error::read_json(&info_path)?;
    let version = info.codebase_version.as_str();
    if !(version.starts_with("v2.") || version.starts_with("v3.")) {
        return Err(err(
            &info_path,
            format!("codebase_version {version}: this reader supports LeRobot v2.x and v3.0"),
        ));
    }
    if !(info.fps.is_finite() && info.fps > 0.0) {
        return Err(err(
            &info_path,
            format!("fps {} is not a positive rate", info.fps),
        ));
    }
    let obs_keys = keys.obs_or(DEFAULT_OBS);
    let action_key = keys.action_or(DEFAULT_ACTION);
    let mut wanted = Vec::new();
    for (i, key) in obs_keys.iter().copied().chain([action_key]).enumerate() {
        if obs_keys[..i.min(obs_keys.len())].contains(&key) {
            return Err(err(
                &info_path,
                format!(
                    "feature {key} is chosen twice (--obs-keys / --action-key name each feature once)"
                ),
            ));
        }
        let f = info.features.get(key).ok_or_else(|| {
            err(
                &info_path,
                format!(
                    "feature {key} is not in this dataset (float32 features: {})",
                    float_features(&info).join(", ")
                ),
            )
        })?;
        if f.dtype == "video" || f.dtype == "image" {
            return Err(err(
                &info_path,
                format!(
                    "feature {key} is a camera stream (dtype {}): diffbc reads LeRobot state features only, video is not decoded; choose state features with --obs-keys (float32 features: {})",
                    f.dtype,
                    float_features(&info).join(", ")
                ),
            ));
        }
        if f.dtype != "float32" || f.width() == 0 {
            return Err(err(
                &info_path,
                format!(
                    "feature {key} has dtype {} and shape {:?}; observations and actions must be float32 with at least one value",
                    f.dtype, f.shape
                ),
            ));
        }
        wanted.push(Wanted {
            key: key.to_string(),
            width: f.width(),
        });
    }

    let files = data_files(&root.join("data"))?;
    let mut table = Table {
        values: vec![Vec::new(); wanted.len()],
        episode: Vec::new(),
        frame: Vec::new(),
        file_starts: Vec::new(),
    };
    for file in &files {
        read_file(file, &wanted, &mut table)?;
    }
    if table.episode.is_empty() {
        return Err(err(&root.join("data"), "the data files hold no frames"));
    }
    let episode_ends = table.episode_ends()?;
    check_episode_meta(root, &episode_ends)?;
    for (what, total, found) in [
        ("total_frames", info.total_frames, table.episode.len()),
        ("total_episodes", info.total_episodes, episode_ends.len()),
    ] {
        if let Some(total) = total.filter(|&t| t != found) {
            return Err(err(
                &info_path,
                format!(
                    "{what} is {total}, but the data files under {} hold {found}",
                    root.join("data").display()
                ),
            ));
        }
    }

    let steps = table.episode.len();
    let n_obs = obs_keys.len();
    let obs_dim: usize = wanted[..n_obs].iter().map(|w| w.width).sum();
    let mut obs = Vec::with_capacity(steps * obs_dim);
    for i in 0..steps {
        for (w, v) in wanted[..n_obs].iter().zip(&table.values) {
            obs.extend_from_slice(&v[i * w.width..(i + 1) * w.width]);
        }
    }
    let names_of = |w: &Wanted, qualify: bool| -> Vec<String> {
        let given = info.features.get(&w.key).and_then(Feature::names);
        (0..w.width)
            .map(|j| match (&given, qualify) {
                (Some(n), false) => n[j].clone(),
                (Some(n), true) => format!("{}[{}]", w.key, n[j]),
                (None, _) if w.width == 1 => w.key.clone(),
                (None, _) => format!("{}[{j}]", w.key),
            })
            .collect()
    };
    let recorded_path = root.join(DIFFBC_META);
    let diffbc_meta = if recorded_path.is_file() {
        crate::error::read_json::<serde_json::Value>(&recorded_path)?
    } else {
        serde_json::Value::Null
    };
    let recorded = diffbc_meta["source"].clone();
    // Units and sources diffbc recorded when it wrote the dataset; the control
    // rate is the dataset's own `fps`.
    let mut hints: crate::interface::ChannelHints = match diffbc_meta.get("channels") {
        Some(v) if wanted.len() == 2 => {
            serde_json::from_value(v.clone()).map_err(|e| TrainError::File {
                path: recorded_path.clone(),
                message: format!("field channels: {e}"),
            })?
        }
        _ => Default::default(),
    };
    hints.control_hz = Some(info.fps);
    let action_width = wanted[n_obs].width;
    if hints
        .validate(wanted[..n_obs].iter().map(|w| w.width).sum(), action_width)
        .is_err()
    {
        // Recorded for other features than the ones read now.
        hints = crate::interface::ChannelHints {
            control_hz: Some(info.fps),
            ..Default::default()
        };
    }
    let action = table.values.pop().unwrap_or_default();
    let ep = Episodes {
        obs_dim,
        action_dim: wanted[n_obs].width,
        obs,
        actions: action,
        episode_ends,
        obs_names: wanted[..n_obs]
            .iter()
            .flat_map(|w| names_of(w, n_obs > 1))
            .collect(),
        action_names: names_of(&wanted[n_obs], false),
        source: serde_json::json!({
            "format": "lerobot",
            "path": root.display().to_string(),
            "codebase_version": info.codebase_version,
            "fps": info.fps,
            "robot_type": info.robot_type,
            "obs": obs_keys,
            "action": action_key,
            "recorded": recorded,
        }),
        hints,
    };
    ep.validate(root)?;
    Ok(ep)
}

/// LeRobot finds an episode's frames through its metadata (v3.0:
/// `meta/episodes/*/*.parquet`, v2.x: `meta/episodes.jsonl`); where that is
/// present, its lengths must be the boundaries read from the data, so both
/// tools see the same episodes.
fn check_episode_meta(root: &Path, ends: &[usize]) -> Result<(), TrainError> {
    let lengths: Vec<usize> = ends
        .iter()
        .scan(0, |start, &end| {
            let n = end - *start;
            *start = end;
            Some(n)
        })
        .collect();
    let mut meta: Vec<(PathBuf, i64, i64)> = Vec::new();
    let jsonl = root.join("meta/episodes.jsonl");
    let dir = root.join("meta/episodes");
    if dir.is_dir() {
        for file in data_files(&dir)? {
            check_magic(&file)?;
            let f = std::fs::File::open(&file).map_err(TrainError::io(&file))?;
            let reader = SerializedFileReader::new(f)
                .map_err(|e| err(&file, format!("not a readable parquet file: {e}")))?;
            let schema = reader.metadata().file_metadata().schema();
            let mut fields = Vec::new();
            for name in ["episode_index", "length"] {
                let t = schema
                    .get_fields()
                    .iter()
                    .find(|f| f.name() == name)
                    .ok_or_else(|| err(&file, format!("column {name} is not in this file")))?;
                fields.push(t.clone());
            }
            let projection = Type::group_type_builder(schema.name())
                .with_fields(fields)
                .build()
                .map_err(|e| err(&file, format!("selecting columns: {e}")))?;
            let rows = reader
                .get_row_iter(Some(projection))
                .map_err(|e| err(&file, format!("reading rows: {e}")))?;
            for (r, row) in rows.enumerate() {
                let row = row.map_err(|e| err(&file, format!("row {r}: {e}")))?;
                let mut v = [0i64; 2];
                for (k, (name, field)) in row.get_column_iter().enumerate() {
                    v[k] = match field {
                        Field::Long(x) => *x,
                        Field::Int(x) => i64::from(*x),
                        other => {
                            return Err(err(
                                &file,
                                format!("column {name}, row {r}: {other} is not an integer"),
                            ));
                        }
                    };
                }
                meta.push((file.clone(), v[0], v[1]));
            }
        }
    } else if jsonl.is_file() {
        let text = diffbc_runtime::fs::read_to_string(&jsonl, diffbc_runtime::fs::limits::JSON)?;
        for (line, l) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(l)
                .map_err(|e| err(&jsonl, format!("line {}: {e}", line + 1)))?;
            let field = |name: &str| {
                v[name].as_i64().ok_or_else(|| {
                    err(
                        &jsonl,
                        format!("line {}: {name} is not an integer", line + 1),
                    )
                })
            };
            meta.push((jsonl.clone(), field("episode_index")?, field("length")?));
        }
    }
    meta.sort_by_key(|m| m.1);
    if !meta.is_empty() && meta.len() != lengths.len() {
        return Err(err(
            &meta[0].0,
            format!(
                "the metadata lists {} episodes, the data files hold {}",
                meta.len(),
                lengths.len()
            ),
        ));
    }
    for (e, ((file, index, length), &n)) in meta.iter().zip(&lengths).enumerate() {
        if *index != e as i64 || *length != n as i64 {
            return Err(err(
                file,
                format!(
                    "episode_index {index}: length {length} in the metadata, but episode {e} has {n} frames in the data files"
                ),
            ));
        }
    }
    Ok(())
}

fn float_features(info: &Info) -> Vec<String> {
    info.features
        .iter()
        .filter(|(_, f)| f.dtype == "float32")
        .map(|(k, _)| k.clone())
        .collect()
}

/// Every `*.parquet` file under `dir`, in path order (chunk, then file or
/// episode number: the zero-padded names sort as numbers).
fn data_files(dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), TrainError> {
        for entry in std::fs::read_dir(dir).map_err(TrainError::io(dir))? {
            let path = entry.map_err(TrainError::io(dir))?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Err(err(
            dir,
            "missing: a LeRobot dataset keeps its frames in data/",
        ));
    }
    walk(dir, &mut out)?;
    out.sort();
    if out.is_empty() {
        return Err(err(dir, "no .parquet data files"));
    }
    Ok(out)
}

/// Columns read so far, all files back to back.
struct Table {
    /// One flat vector per wanted feature, `width` values per row.
    values: Vec<Vec<f32>>,
    episode: Vec<i64>,
    frame: Vec<i64>,
    /// First row of each file, to name the file of a bad row.
    file_starts: Vec<(usize, PathBuf)>,
}

impl Table {
    /// The file holding dataset row `i`, and the row's index in it.
    fn locate(&self, i: usize) -> (&Path, usize) {
        let k = self.file_starts.partition_point(|(s, _)| *s <= i) - 1;
        let (start, path) = &self.file_starts[k];
        (path, i - start)
    }

    /// Exclusive end row of each episode, checking that `episode_index` runs
    /// 0, 1, 2, … with every episode's rows together, and that `frame_index`
    /// counts from 0 inside each episode.
    fn episode_ends(&self) -> Result<Vec<usize>, TrainError> {
        let mut ends = Vec::new();
        let mut start = 0;
        for (i, (&e, &f)) in self.episode.iter().zip(&self.frame).enumerate() {
            let current = ends.len() as i64;
            if e != current {
                let (path, row) = self.locate(i);
                let why = if i == 0 {
                    Some("the first episode must be 0".to_string())
                } else if e <= current {
                    Some(format!(
                        "episode {e} appears again after episode {current}: an episode's rows must be contiguous"
                    ))
                } else if e > current + 1 {
                    Some(format!(
                        "episode {} is missing: episodes must be numbered 0, 1, 2, … without gaps",
                        current + 1
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(err(
                        path,
                        format!("column episode_index, row {row}: episode_index {e} ({why})"),
                    ));
                }
                ends.push(i);
                start = i;
            }
            if f != (i - start) as i64 {
                let (path, row) = self.locate(i);
                return Err(err(
                    path,
                    format!(
                        "column frame_index, row {row}: frame_index {f} in episode {e}, expected {} (frames must count from 0 in dataset order)",
                        i - start
                    ),
                ));
            }
        }
        ends.push(self.episode.len());
        Ok(ends)
    }
}

/// The last four bytes of a parquet file are its magic `PAR1`; a file cut
/// short loses them first, so check them before the footer is parsed.
fn check_magic(path: &Path) -> Result<(), TrainError> {
    // A regular file (a FIFO would block the open), as every user file is.
    diffbc_runtime::fs::regular_file_size(path)?;
    let mut f = std::fs::File::open(path).map_err(TrainError::io(path))?;
    let len = f.metadata().map_err(TrainError::io(path))?.len();
    let mut head = [0u8; 4];
    let mut tail = [0u8; 4];
    if len < 12 {
        return Err(err(
            path,
            format!("{len} bytes: too short for a parquet file (truncated?)"),
        ));
    }
    f.read_exact(&mut head).map_err(TrainError::io(path))?;
    f.seek(SeekFrom::End(-4)).map_err(TrainError::io(path))?;
    f.read_exact(&mut tail).map_err(TrainError::io(path))?;
    if &head != b"PAR1" {
        return Err(err(path, "byte 0: not a parquet file (magic PAR1 missing)"));
    }
    if &tail != b"PAR1" {
        return Err(err(
            path,
            format!(
                "byte {}: the parquet footer's magic PAR1 is missing at the end of the {len}-byte file: it is truncated or still being written",
                len - 4
            ),
        ));
    }
    Ok(())
}

/// What a float feature's column holds.
#[derive(Clone, Copy)]
enum Shape {
    Scalar,
    List,
}

/// A short description of a column's type, for messages.
fn describe(t: &Type) -> String {
    if t.is_primitive() {
        return format!("{:?}", t.get_physical_type()).to_lowercase();
    }
    match list_element(t) {
        Some(e) if e.is_primitive() => format!(
            "a list of {}",
            format!("{:?}", e.get_physical_type()).to_lowercase()
        ),
        _ => "a group".to_string(),
    }
}

/// The element type of a three-level parquet LIST.
fn list_element(t: &Type) -> Option<&TypePtr> {
    if t.is_primitive() {
        return None;
    }
    let list = t.get_fields().first()?;
    let info = list.get_basic_info();
    if !info.has_repetition() || info.repetition() != Repetition::REPEATED || list.is_primitive() {
        return None;
    }
    list.get_fields().first()
}

fn float_shape(t: &Type) -> Option<Shape> {
    if t.is_primitive() {
        return (t.get_physical_type() == PhysicalType::FLOAT).then_some(Shape::Scalar);
    }
    let e = list_element(t)?;
    (e.is_primitive() && e.get_physical_type() == PhysicalType::FLOAT).then_some(Shape::List)
}

fn read_file(path: &Path, wanted: &[Wanted], out: &mut Table) -> Result<(), TrainError> {
    check_magic(path)?;
    let file = std::fs::File::open(path).map_err(TrainError::io(path))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| err(path, format!("not a readable parquet file: {e}")))?;
    let schema = reader.metadata().file_metadata().schema();
    let column = |name: &str| -> Result<TypePtr, TrainError> {
        schema
            .get_fields()
            .iter()
            .find(|f| f.name() == name)
            .cloned()
            .ok_or_else(|| {
                let have: Vec<&str> = schema.get_fields().iter().map(|f| f.name()).collect();
                err(
                    path,
                    format!(
                        "column {name} is not in this file (columns: {})",
                        have.join(", ")
                    ),
                )
            })
    };
    let mut fields = Vec::new();
    let mut shapes = Vec::new();
    for w in wanted {
        let t = column(&w.key)?;
        let shape = float_shape(&t).ok_or_else(|| {
            err(
                path,
                format!(
                    "column {}: holds {}, expected float32 values (a float, or a list of {} floats)",
                    w.key,
                    describe(&t),
                    w.width
                ),
            )
        })?;
        if matches!(shape, Shape::Scalar) && w.width != 1 {
            return Err(err(
                path,
                format!(
                    "column {}: holds one float per row, but info.json gives it {} values",
                    w.key, w.width
                ),
            ));
        }
        shapes.push(shape);
        fields.push(t);
    }
    for name in ["episode_index", "frame_index"] {
        let t = column(name)?;
        if !t.is_primitive()
            || !matches!(
                t.get_physical_type(),
                PhysicalType::INT64 | PhysicalType::INT32
            )
        {
            return Err(err(
                path,
                format!("column {name}: holds {}, expected int64", describe(&t)),
            ));
        }
        fields.push(t);
    }
    let projection = Type::group_type_builder(schema.name())
        .with_fields(fields)
        .build()
        .map_err(|e| err(path, format!("selecting columns: {e}")))?;
    let rows = reader
        .get_row_iter(Some(projection))
        .map_err(|e| err(path, format!("reading rows: {e}")))?;
    out.file_starts
        .push((out.episode.len(), path.to_path_buf()));
    let n = wanted.len();
    for (r, row) in rows.enumerate() {
        let row = row.map_err(|e| err(path, format!("row {r}: {e}")))?;
        for (c, (_, field)) in row.get_column_iter().enumerate() {
            if c < n {
                let w = &wanted[c];
                let before = out.values[c].len();
                let bad = |what: String| err(path, format!("column {}, row {r}: {what}", w.key));
                match (shapes[c], field) {
                    (Shape::Scalar, Field::Float(v)) => out.values[c].push(*v),
                    (Shape::List, Field::ListInternal(list)) => {
                        for (j, v) in list.elements().iter().enumerate() {
                            match v {
                                Field::Float(v) => out.values[c].push(*v),
                                other => return Err(bad(format!("value {j} is {other}"))),
                            }
                        }
                    }
                    (_, other) => return Err(bad(format!("{other} instead of float32 values"))),
                }
                let got = out.values[c].len() - before;
                if got != w.width {
                    return Err(bad(format!(
                        "{got} values, but info.json gives the feature shape {}",
                        w.width
                    )));
                }
            } else {
                let name = if c == n {
                    "episode_index"
                } else {
                    "frame_index"
                };
                let v = match field {
                    Field::Long(v) => *v,
                    Field::Int(v) => i64::from(*v),
                    other => {
                        return Err(err(
                            path,
                            format!("column {name}, row {r}: {other} is not an index"),
                        ));
                    }
                };
                if c == n {
                    out.episode.push(v);
                } else {
                    out.frame.push(v);
                }
            }
        }
    }
    Ok(())
}

/// How [`write`] labels a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOptions {
    /// Control rate, frames per second (`info.json`'s `fps`).
    pub fps: f64,
    /// `info.json`'s `robot_type`.
    pub robot_type: Option<String>,
    /// The task string every episode carries (`meta/tasks.parquet`).
    pub task: String,
}

impl Episodes {
    /// Write these episodes as a LeRobot v3.0 dataset, see [`write`].
    pub fn save_lerobot(&self, dir: &Path, options: &WriteOptions) -> Result<(), TrainError> {
        write(self, dir, options)
    }
}

/// Write `episodes` as a LeRobot v3.0 dataset in the folder `dir`
/// (`observation.state` and `action` with the channel names as `names`),
/// atomically: everything goes to a temporary sibling folder that is renamed
/// into place. An existing non-empty `dir` is refused, never replaced.
pub fn write(episodes: &Episodes, dir: &Path, options: &WriteOptions) -> Result<(), TrainError> {
    episodes.validate(dir)?;
    if !(options.fps.is_finite() && options.fps > 0.0) {
        return Err(err(
            dir,
            format!("fps {} is not a positive rate", options.fps),
        ));
    }
    // Claimed as a new folder (absent or empty), staged under a unique
    // sibling name and renamed into place: diffbc_runtime::fs, as for every
    // other output.
    diffbc_runtime::fs::claim_output(dir, &KIND, false)?;
    let staged = diffbc_runtime::fs::staging_dir(dir)?;
    write_into(episodes, staged.path(), options)?;
    diffbc_runtime::fs::replace_dir(staged, dir, &KIND)?;
    Ok(())
}

/// A LeRobot dataset as an output: written once into an absent or empty
/// folder; an existing dataset (or anything else) is never replaced.
pub const KIND: diffbc_runtime::fs::OutputKind = diffbc_runtime::fs::OutputKind {
    what: "empty (a LeRobot dataset folder is written once, never replaced)",
    is_dir: true,
    entries: &[],
    recognise: never_ours,
};

fn never_ours(_: &Path) -> bool {
    false
}

fn write_into(ep: &Episodes, root: &Path, options: &WriteOptions) -> Result<(), TrainError> {
    let steps = ep.steps();
    let n_episodes = ep.len();
    let mut episode_index = Vec::with_capacity(steps);
    let mut frame_index = Vec::with_capacity(steps);
    for e in 0..n_episodes {
        for (f, _) in ep.episode(e).enumerate() {
            episode_index.push(e as i64);
            frame_index.push(f as i64);
        }
    }
    let timestamp: Vec<f32> = frame_index
        .iter()
        .map(|&f| (f as f64 / options.fps) as f32)
        .collect();
    let index: Vec<i64> = (0..steps as i64).collect();
    let task_index = vec![0i64; steps];

    let data = root.join("data/chunk-000/file-000.parquet");
    write_parquet(
        &data,
        &[
            Column::F32List("observation.state", ep.obs_dim, &ep.obs),
            Column::F32List("action", ep.action_dim, &ep.actions),
            Column::F32("timestamp", &timestamp),
            Column::I64("frame_index", &frame_index),
            Column::I64("episode_index", &episode_index),
            Column::I64("index", &index),
            Column::I64("task_index", &task_index),
        ],
        Vec::new(),
    )?;

    let lengths: Vec<i64> = (0..n_episodes)
        .map(|e| ep.episode(e).len() as i64)
        .collect();
    let from: Vec<i64> = (0..n_episodes)
        .map(|e| ep.episode(e).start as i64)
        .collect();
    let to: Vec<i64> = ep.episode_ends.iter().map(|&e| e as i64).collect();
    let zeros = vec![0i64; n_episodes];
    let tasks = vec![vec![options.task.clone()]; n_episodes];
    write_parquet(
        &root.join("meta/episodes/chunk-000/file-000.parquet"),
        &[
            Column::I64("episode_index", &(0..n_episodes as i64).collect::<Vec<_>>()),
            Column::StrList("tasks", &tasks),
            Column::I64("length", &lengths),
            Column::I64("data/chunk_index", &zeros),
            Column::I64("data/file_index", &zeros),
            Column::I64("dataset_from_index", &from),
            Column::I64("dataset_to_index", &to),
            Column::I64("meta/episodes/chunk_index", &zeros),
            Column::I64("meta/episodes/file_index", &zeros),
        ],
        Vec::new(),
    )?;

    // pandas keeps LeRobot's task table with the task string as its index;
    // this metadata lets pandas (and so LeRobot) read it back that way.
    let pandas = serde_json::json!({
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": null, "field_name": null, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": null},
            {"name": null, "field_name": "__index_level_0__", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": null}
        ],
        "creator": {"library": "diffbc", "version": env!("CARGO_PKG_VERSION")},
        "pandas_version": "2.2.3"
    });
    write_parquet(
        &root.join("meta/tasks.parquet"),
        &[
            Column::I64("task_index", &[0]),
            Column::Str("__index_level_0__", std::slice::from_ref(&options.task)),
        ],
        vec![KeyValue::new("pandas".to_string(), pandas.to_string())],
    )?;

    let names = |n: &[String]| {
        if n.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::json!(n)
        }
    };
    let scalar = |dtype: &str| serde_json::json!({"dtype": dtype, "shape": [1], "names": null});
    let fps = if options.fps.fract() == 0.0 {
        serde_json::json!(options.fps as i64)
    } else {
        serde_json::json!(options.fps)
    };
    let info = serde_json::json!({
        "codebase_version": WRITTEN_VERSION,
        "robot_type": options.robot_type,
        "total_episodes": n_episodes,
        "total_frames": steps,
        "total_tasks": 1,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": fps,
        "splits": {"train": format!("0:{n_episodes}")},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": null,
        "features": {
            "observation.state": {"dtype": "float32", "shape": [ep.obs_dim], "names": names(&ep.obs_names)},
            "action": {"dtype": "float32", "shape": [ep.action_dim], "names": names(&ep.action_names)},
            "timestamp": scalar("float32"),
            "frame_index": scalar("int64"),
            "episode_index": scalar("int64"),
            "index": scalar("int64"),
            "task_index": scalar("int64"),
        },
    });
    crate::error::write_json(&root.join(INFO), &info)?;
    let stats = serde_json::json!({
        "observation.state": stats(&ep.obs, ep.obs_dim),
        "action": stats(&ep.actions, ep.action_dim),
        "timestamp": stats(&timestamp, 1),
        "frame_index": stats(&to_f32(&frame_index), 1),
        "episode_index": stats(&to_f32(&episode_index), 1),
        "index": stats(&to_f32(&index), 1),
        "task_index": stats(&to_f32(&task_index), 1),
    });
    crate::error::write_json(&root.join("meta/stats.json"), &stats)?;
    crate::error::write_json(
        &root.join(DIFFBC_META),
        &serde_json::json!({ "source": ep.source, "channels": ep.hints }),
    )
}

fn to_f32(v: &[i64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// LeRobot's per-feature statistics, per value (computed in f64).
fn stats(values: &[f32], width: usize) -> serde_json::Value {
    let n = values.len() / width.max(1);
    let mut min = vec![f64::INFINITY; width];
    let mut max = vec![f64::NEG_INFINITY; width];
    let mut sum = vec![0.0f64; width];
    let mut sq = vec![0.0f64; width];
    for row in values.chunks_exact(width) {
        for (j, &v) in row.iter().enumerate() {
            let v = f64::from(v);
            min[j] = min[j].min(v);
            max[j] = max[j].max(v);
            sum[j] += v;
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n.max(1) as f64).collect();
    for row in values.chunks_exact(width) {
        for (j, &v) in row.iter().enumerate() {
            sq[j] += (f64::from(v) - mean[j]).powi(2);
        }
    }
    let std: Vec<f64> = sq.iter().map(|s| (s / n.max(1) as f64).sqrt()).collect();
    serde_json::json!({"min": min, "max": max, "mean": mean, "std": std, "count": [n]})
}

/// A column to write: name and values (one row per entry, or `width` values
/// per row for a list).
enum Column<'a> {
    F32List(&'a str, usize, &'a [f32]),
    F32(&'a str, &'a [f32]),
    I64(&'a str, &'a [i64]),
    Str(&'a str, &'a [String]),
    StrList(&'a str, &'a [Vec<String>]),
}

fn primitive(
    name: &str,
    t: PhysicalType,
    rep: Repetition,
    logical: Option<LogicalType>,
) -> Result<TypePtr, parquet::errors::ParquetError> {
    Ok(Arc::new(
        Type::primitive_type_builder(name, t)
            .with_repetition(rep)
            .with_logical_type(logical)
            .build()?,
    ))
}

/// A required three-level LIST of required `element`s.
fn list(name: &str, element: TypePtr) -> Result<TypePtr, parquet::errors::ParquetError> {
    let inner = Type::group_type_builder("list")
        .with_repetition(Repetition::REPEATED)
        .with_fields(vec![element])
        .build()?;
    Ok(Arc::new(
        Type::group_type_builder(name)
            .with_repetition(Repetition::REQUIRED)
            .with_logical_type(Some(LogicalType::List))
            .with_fields(vec![Arc::new(inner)])
            .build()?,
    ))
}

/// Definition and repetition levels of a required list of required
/// elements, `lengths[r]` elements in row `r` (each at least 1).
fn list_levels(lengths: impl Iterator<Item = usize>) -> (Vec<i16>, Vec<i16>) {
    let (mut def, mut rep) = (Vec::new(), Vec::new());
    for n in lengths {
        for k in 0..n {
            def.push(1);
            rep.push(i16::from(k > 0));
        }
    }
    (def, rep)
}

/// Write one parquet file (one row group, snappy) with `columns` in order.
fn write_parquet(
    path: &Path,
    columns: &[Column],
    metadata: Vec<KeyValue>,
) -> Result<(), TrainError> {
    let pq = |e: parquet::errors::ParquetError| err(path, format!("writing parquet: {e}"));
    const REQUIRED: Repetition = Repetition::REQUIRED;
    let mut fields = Vec::new();
    for c in columns {
        fields.push(
            match c {
                Column::F32List(name, ..) => list(
                    name,
                    primitive("element", PhysicalType::FLOAT, REQUIRED, None).map_err(pq)?,
                ),
                Column::F32(name, _) => primitive(name, PhysicalType::FLOAT, REQUIRED, None),
                Column::I64(name, _) => primitive(name, PhysicalType::INT64, REQUIRED, None),
                Column::Str(name, _) => primitive(
                    name,
                    PhysicalType::BYTE_ARRAY,
                    REQUIRED,
                    Some(LogicalType::String),
                ),
                Column::StrList(name, _) => list(
                    name,
                    primitive(
                        "element",
                        PhysicalType::BYTE_ARRAY,
                        REQUIRED,
                        Some(LogicalType::String),
                    )
                    .map_err(pq)?,
                ),
            }
            .map_err(pq)?,
        );
    }
    let schema = Arc::new(
        Type::group_type_builder("schema")
            .with_fields(fields)
            .build()
            .map_err(pq)?,
    );
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_created_by(format!("diffbc {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata((!metadata.is_empty()).then_some(metadata))
        .build();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(TrainError::io(parent))?;
    }
    let file = std::fs::File::create(path).map_err(TrainError::io(path))?;
    let mut writer = SerializedFileWriter::new(file, schema, Arc::new(props)).map_err(pq)?;
    let mut group = writer.next_row_group().map_err(pq)?;
    for c in columns {
        let mut col = group
            .next_column()
            .map_err(pq)?
            .ok_or_else(|| err(path, "writing parquet: fewer columns than the schema"))?;
        match c {
            Column::F32List(_, width, values) => {
                let (def, rep) = list_levels(std::iter::repeat_n(*width, values.len() / width));
                col.typed::<FloatType>()
                    .write_batch(values, Some(&def), Some(&rep))
                    .map_err(pq)?;
            }
            Column::F32(_, values) => {
                col.typed::<FloatType>()
                    .write_batch(values, None, None)
                    .map_err(pq)?;
            }
            Column::I64(_, values) => {
                col.typed::<Int64Type>()
                    .write_batch(values, None, None)
                    .map_err(pq)?;
            }
            Column::Str(_, values) => {
                let v: Vec<ByteArray> =
                    values.iter().map(|s| ByteArray::from(s.as_str())).collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&v, None, None)
                    .map_err(pq)?;
            }
            Column::StrList(_, rows) => {
                let v: Vec<ByteArray> = rows
                    .iter()
                    .flatten()
                    .map(|s| ByteArray::from(s.as_str()))
                    .collect();
                let (def, rep) = list_levels(rows.iter().map(Vec::len));
                col.typed::<ByteArrayType>()
                    .write_batch(&v, Some(&def), Some(&rep))
                    .map_err(pq)?;
            }
        }
        col.close().map_err(pq)?;
    }
    group.close().map_err(pq)?;
    writer.close().map_err(pq)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOINTS: [&str; 6] = [
        "shoulder_pan.pos",
        "shoulder_lift.pos",
        "elbow_flex.pos",
        "wrist_flex.pos",
        "wrist_roll.pos",
        "gripper.pos",
    ];

    /// `tests/lerobot/<name>`: data sets written by pyarrow
    /// (`tests/lerobot/make_datasets.py`).
    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/lerobot")
            .join(name)
    }

    fn keys(obs: &[&str], action: Option<&str>) -> FeatureKeys {
        FeatureKeys {
            obs: obs.iter().map(|s| s.to_string()).collect(),
            action: action.map(String::from),
        }
    }

    /// The generator's rule: state[j] = 100 · episode + frame + j / 10.
    fn state(episode: usize, frame: usize) -> Vec<f32> {
        (0..6)
            .map(|j| (100.0 * episode as f64 + frame as f64 + j as f64 / 10.0) as f32)
            .collect()
    }

    fn check_rows(e: &Episodes) {
        for ep in 0..e.len() {
            for (frame, row) in e.episode(ep).enumerate() {
                let s = state(ep, frame);
                assert_eq!(e.obs_row(row), &s[..], "row {row}");
                let a: Vec<f32> = s.iter().map(|v| v + 0.5).collect();
                assert_eq!(e.action_row(row), &a[..], "row {row}");
            }
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("ls").flatten() {
            let p = entry.path();
            if p.is_dir() {
                copy_dir(&p, &to.join(entry.file_name()));
            } else {
                std::fs::copy(&p, to.join(entry.file_name())).expect("copy");
            }
        }
    }

    fn error(root: &Path, k: &FeatureKeys) -> String {
        read(root, k).expect_err("must be refused").to_string()
    }

    #[test]
    fn reads_v30_written_by_pyarrow() {
        let e = Episodes::load(&fixture("so100_v30")).expect("v3.0");
        assert_eq!((e.obs_dim, e.action_dim, e.steps()), (6, 6, 16));
        // Episodes of 5, 7 and 4 frames; the first two share a file of two
        // row groups, the third is in the next file.
        assert_eq!(e.episode_ends, [5, 12, 16]);
        assert_eq!(e.obs_row(0), &[0.0, 0.1, 0.2, 0.3, 0.4, 0.5]);
        check_rows(&e);
        assert_eq!(e.obs_names, JOINTS);
        assert_eq!(e.action_names, JOINTS);
        assert_eq!(e.source["fps"], 30.0);
        assert_eq!(e.source["codebase_version"], "v3.0");
        assert_eq!(e.source["robot_type"], "so100_follower");
        assert_eq!(e.source["obs"], serde_json::json!(["observation.state"]));
    }

    #[test]
    fn reads_v21_written_by_pyarrow() {
        // One file per episode, variable-length lists, names as {"motors": [...]}.
        let e = Episodes::load(&fixture("koch_v21")).expect("v2.1");
        assert_eq!((e.obs_dim, e.action_dim), (6, 6));
        assert_eq!(e.episode_ends, [6, 9]);
        check_rows(&e);
        assert_eq!(e.obs_names, JOINTS);
        assert_eq!(e.source["codebase_version"], "v2.1");
        assert_eq!(e.source["fps"], 30.0);
    }

    #[test]
    fn obs_keys_concatenate_in_order_and_name_their_channels() {
        let k = keys(&["observation.force", "observation.state"], Some("action"));
        let e = Episodes::load_with(&fixture("so100_v30"), &k).expect("two features");
        assert_eq!(e.obs_dim, 7);
        // Episode 1, frame 3 is row 8: force -3 first, then the state.
        let mut want = vec![-3.0];
        want.extend(state(1, 3));
        assert_eq!(e.obs_row(8), &want[..]);
        assert_eq!(e.obs_names[0], "observation.force[force]");
        assert_eq!(e.obs_names[1], "observation.state[shoulder_pan.pos]");
        assert_eq!(e.action_names[5], "gripper.pos");
        // A state feature may serve as the action too.
        let k = keys(&["observation.state"], Some("observation.force"));
        let e = read(&fixture("so100_v30"), &k).expect("force as action");
        assert_eq!((e.action_dim, e.action_row(3)), (1, &[-3.0][..]));
    }

    #[test]
    fn a_video_feature_is_refused_with_the_reason() {
        let m = error(
            &fixture("so100_v30"),
            &keys(&["observation.images.front"], None),
        );
        assert!(
            m.contains("meta/info.json")
                && m.contains("observation.images.front")
                && m.contains("video is not decoded"),
            "{m}"
        );
    }

    #[test]
    fn a_feature_that_is_not_there_is_named() {
        let m = error(
            &fixture("so100_v30"),
            &keys(&["observation.velocity"], None),
        );
        assert!(
            m.contains("meta/info.json")
                && m.contains("feature observation.velocity is not in this dataset")
                && m.contains("observation.state"),
            "{m}"
        );
        let m = error(
            &fixture("so100_v30"),
            &keys(&["observation.state"], Some("observation.state")),
        );
        assert!(m.contains("chosen twice"), "{m}");
        let m = error(
            &fixture("so100_v30"),
            &keys(&["timestamp"], Some("frame_index")),
        );
        assert!(m.contains("frame_index has dtype int64"), "{m}");
        // Declared in info.json, absent from the data file.
        let m = error(&fixture("bad/state_not_in_file"), &FeatureKeys::default());
        assert!(
            m.contains("file-000.parquet")
                && m.contains("column observation.state is not in this file"),
            "{m}"
        );
    }

    #[test]
    fn a_column_of_the_wrong_type_or_length_is_named() {
        let m = error(&fixture("bad/float64_state"), &FeatureKeys::default());
        assert!(
            m.contains("file-000.parquet")
                && m.contains("column observation.state")
                && m.contains("a list of double"),
            "{m}"
        );
        let m = error(&fixture("bad/short_state_row"), &FeatureKeys::default());
        assert!(
            m.contains("file-000.parquet")
                && m.contains("column observation.state, row 3: 5 values")
                && m.contains("shape 6"),
            "{m}"
        );
    }

    #[test]
    fn episodes_must_be_contiguous() {
        let m = error(
            &fixture("bad/interleaved_episodes"),
            &FeatureKeys::default(),
        );
        assert!(
            m.contains("file-000.parquet")
                && m.contains("column episode_index, row 3")
                && m.contains("appears again"),
            "{m}"
        );
        let m = error(&fixture("bad/missing_episode"), &FeatureKeys::default());
        assert!(
            m.contains("column episode_index, row 3") && m.contains("episode 1 is missing"),
            "{m}"
        );
    }

    #[test]
    fn episode_metadata_must_agree_with_the_data() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("ds");
        copy_dir(&fixture("koch_v21"), &root);
        let jsonl = root.join("meta/episodes.jsonl");
        let text = std::fs::read_to_string(&jsonl).expect("read");
        std::fs::write(&jsonl, text.replace("\"length\": 6", "\"length\": 5")).expect("write");
        let m = error(&root, &FeatureKeys::default());
        assert!(
            m.contains("episodes.jsonl")
                && m.contains("length 5 in the metadata")
                && m.contains("6 frames"),
            "{m}"
        );
        // v3.0: the episodes parquet of another data set (3 episodes) on a
        // 2-episode one.
        let root = dir.path().join("v30");
        copy_dir(&fixture("so100_v30"), &root);
        std::fs::remove_file(root.join("data/chunk-000/file-001.parquet")).expect("rm");
        let m = error(&root, &FeatureKeys::default());
        assert!(
            m.contains("meta/episodes") && m.contains("lists 3 episodes"),
            "{m}"
        );
    }

    #[test]
    fn a_missing_info_json_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("ds");
        copy_dir(&fixture("so100_v30"), &root);
        std::fs::remove_file(root.join(INFO)).expect("rm");
        let m = error(&root, &FeatureKeys::default());
        assert!(m.contains("meta/info.json") && m.contains("missing"), "{m}");
    }

    #[test]
    fn a_truncated_parquet_file_is_named_with_the_byte() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("ds");
        copy_dir(&fixture("so100_v30"), &root);
        let file = root.join("data/chunk-000/file-001.parquet");
        let good = std::fs::read(&file).expect("read");
        std::fs::write(&file, &good[..good.len() / 2]).expect("truncate");
        let m = error(&root, &FeatureKeys::default());
        assert!(
            m.contains("file-001.parquet") && m.contains(&format!("byte {}", good.len() / 2 - 4)),
            "{m}"
        );
        // Every truncation is an error, never a panic.
        for n in (0..good.len()).step_by(7) {
            std::fs::write(&file, &good[..n]).expect("truncate");
            assert!(read(&root, &FeatureKeys::default()).is_err(), "{n} bytes");
        }
        // A file whose footer is intact but whose pages are damaged.
        let mut bad = good.clone();
        for b in &mut bad[4..good.len() / 2] {
            *b = 0xAB;
        }
        std::fs::write(&file, &bad).expect("write");
        let m = error(&root, &FeatureKeys::default());
        assert!(m.contains("file-001.parquet"), "{m}");
    }

    fn sample() -> Episodes {
        let mut e = Episodes::new(3, 2);
        e.obs_names = vec!["x".into(), "y".into(), "done".into()];
        e.action_names = vec!["target0".into(), "target1".into()];
        e.source = serde_json::json!({"generator": "test", "seed": 7});
        e.push_episode(&[0., 1., 2., 3., 4., 5.], &[0.5, 0.6, 0.7, 0.8])
            .expect("ep");
        e.push_episode(&[6., 7., 8.], &[0.9, 1.0]).expect("ep");
        e.push_episode(&[-1.5, 1e-7, 3.5e5], &[f32::MIN_POSITIVE, -0.0])
            .expect("ep");
        e
    }

    fn options() -> WriteOptions {
        WriteOptions {
            fps: 10.0,
            robot_type: Some("diffbc_arm".into()),
            task: "reach the targets in order".into(),
        }
    }

    #[test]
    fn what_diffbc_writes_reads_back_exactly() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("nested/ds");
        let e = sample();
        e.save_lerobot(&out, &options()).expect("write");
        let back = Episodes::load(&out).expect("read");
        assert_eq!(back.obs, e.obs);
        assert_eq!(back.actions, e.actions);
        assert_eq!(back.episode_ends, e.episode_ends);
        assert_eq!(back.obs_names, e.obs_names);
        assert_eq!(back.action_names, e.action_names);
        assert_eq!(back.source["recorded"], e.source);
        assert_eq!(back.source["fps"], 10.0);
        assert_eq!(back.source["codebase_version"], WRITTEN_VERSION);
        // No temporary folder is left beside it.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("nested"))
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["ds"]);
    }

    #[test]
    fn an_existing_dataset_is_never_replaced() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("ds");
        std::fs::create_dir_all(&out).expect("mkdir");
        // An empty folder is taken.
        sample()
            .save_lerobot(&out, &options())
            .expect("empty folder");
        let before = std::fs::read(out.join(INFO)).expect("info");
        let m = sample()
            .save_lerobot(&out, &options())
            .expect_err("refused")
            .to_string();
        assert!(
            m.contains(&out.display().to_string()) && m.contains("not empty"),
            "{m}"
        );
        assert_eq!(std::fs::read(out.join(INFO)).expect("info"), before);
        // A file in the way is refused too.
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        assert!(sample().save_lerobot(&file, &options()).is_err());
    }

    /// Runs `tests/lerobot/check_roundtrip.py` (pyarrow) on `dir`; fails,
    /// never skips, when python3 or pyarrow is missing.
    pub(crate) fn pyarrow_check(dir: &Path, expected: &serde_json::Value) {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lerobot/check_roundtrip.py");
        let exp = dir.with_extension("expected.json");
        std::fs::write(&exp, expected.to_string()).expect("expected.json");
        let out = std::process::Command::new("python3")
            .arg(&script)
            .arg(dir)
            .arg(&exp)
            .output()
            .unwrap_or_else(|e| {
                panic!("this test reads diffbc's output with pyarrow and needs python3 on PATH (then `python3 -m pip install pyarrow numpy`): {e}")
            });
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() != Some(2),
            "this test needs pyarrow and numpy for python3: `python3 -m pip install pyarrow numpy`\n{stderr}"
        );
        assert!(
            out.status.success(),
            "pyarrow does not read {} as written ({}):\n{stderr}{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    fn pyarrow_reads_what_diffbc_writes() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("ds");
        let e = sample();
        e.save_lerobot(&out, &options()).expect("write");
        let rows: Vec<_> = (0..e.steps())
            .map(
                |i| serde_json::json!({"row": i, "state": e.obs_row(i), "action": e.action_row(i)}),
            )
            .collect();
        pyarrow_check(
            &out,
            &serde_json::json!({
                "frames": e.steps(),
                "episode_lengths": [2, 1, 1],
                "fps": 10,
                "obs_names": e.obs_names,
                "action_names": e.action_names,
                "rows": rows,
            }),
        );
    }

    fn pusht() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/pusht/pusht_cchi_v7_replay.zarr")
    }

    /// Diffusion Policy's Push-T runs its controller at 10 Hz.
    fn pusht_options() -> WriteOptions {
        WriteOptions {
            fps: 10.0,
            robot_type: None,
            task: "Push the T-shaped block onto the target.".into(),
        }
    }

    #[test]
    fn push_t_as_lerobot_has_the_zarr_episodes_and_rows() {
        let zarr = Episodes::load(&pusht()).expect("push-t zarr");
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("pusht");
        zarr.save_lerobot(&out, &pusht_options()).expect("write");
        let e = Episodes::load(&out).expect("read");
        assert_eq!((e.steps(), e.len()), (25_650, 206));
        assert_eq!(e.episode(0), 0..161);
        assert_eq!(e.episode_ends, zarr.episode_ends);
        assert_eq!(e.obs, zarr.obs);
        assert_eq!(e.actions, zarr.actions);
        let first = e.obs_row(0);
        for (v, want) in first.iter().zip([222.0, 97.0, 222.99, 381.60, 3.008]) {
            assert!((v - want).abs() < 0.01, "{first:?}");
        }
        assert_eq!(e.action_row(0), &[233.0, 71.0]);
        assert_eq!(e.source["fps"], 10.0);
        // And pyarrow reads the same boundaries and rows.
        let lengths: Vec<usize> = (0..e.len()).map(|k| e.episode(k).len()).collect();
        let rows: Vec<_> = [0, 160, 161, 25_649]
            .iter()
            .map(|&i| serde_json::json!({"row": i, "state": e.obs_row(i), "action": e.action_row(i)}))
            .collect();
        pyarrow_check(
            &out,
            &serde_json::json!({"frames": 25_650, "episode_lengths": lengths, "fps": 10, "rows": rows}),
        );
    }

    #[test]
    fn push_t_as_lerobot_trains_exactly_as_the_zarr() {
        use crate::config::{Method, TaskDefaults, TrainConfig};
        use crate::train::{RunOptions, train};
        type Tb = burn::backend::Autodiff<burn::backend::NdArray<f32>>;

        let zarr = Episodes::load(&pusht()).expect("push-t zarr");
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("pusht");
        zarr.save_lerobot(&out, &pusht_options()).expect("write");
        let lerobot = Episodes::load(&out).expect("read");

        let mut config = TrainConfig::for_task(&TaskDefaults::vector("pusht"), Method::Diffusion);
        config.chunk = diffbc_runtime::manifest::ActionChunk {
            horizon: 16,
            execute: 8,
        };
        config.optim.batch_size = 32;
        config.optim.warmup_steps = 2;
        config.checkpoint_every = 0;
        config.seed = 5;
        // The loss curve at two points: after 2 and after 4 steps.
        for steps in [2, 4] {
            config.optim.steps = steps;
            let run = |e: &Episodes, name: &str| {
                let data = e.to_chunked_dataset(config.history, config.chunk.horizon);
                let o = train::<Tb>(
                    &config,
                    &data,
                    &dir.path().join(format!("{name}-{steps}")),
                    &Default::default(),
                    RunOptions::default(),
                )
                .expect("train");
                [o.initial_test_loss, o.train_loss, o.test_loss].map(f64::to_bits)
            };
            assert_eq!(
                run(&zarr, "zarr"),
                run(&lerobot, "lerobot"),
                "after {steps} steps"
            );
        }
    }
}
