#!/usr/bin/env python3
"""Check a LeRobot v3.0 dataset written by diffbc with pyarrow, the library
LeRobot reads parquet with: layout, column types and shapes, episode and frame
indices, episode metadata, tasks, statistics, and (optionally) known values.

    python3 tests/lerobot/check_roundtrip.py DATASET [EXPECTED.json]

EXPECTED.json may give: frames, episode_lengths, fps, obs_names,
action_names, and rows {"row": i, "state": [...], "action": [...]} whose
values must match exactly (as float32). Exits 0 when every check passes,
1 with the failures listed otherwise, 2 when pyarrow or numpy is missing.
"""

import json
import sys
from pathlib import Path

try:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError as e:  # pragma: no cover - the Rust test reports this
    print(f"check_roundtrip.py needs pyarrow and numpy (pip install pyarrow numpy): {e}", file=sys.stderr)
    sys.exit(2)

failures = []


def check(cond, message):
    if not cond:
        failures.append(message)
    return cond


def vectors(table, name, width):
    """A [rows, width] float32 array from a list / fixed-size-list column."""
    col = table.column(name).combine_chunks()
    t = col.type
    if not check(pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t),
                 f"{name}: type {t} is not a list"):
        return None
    check(t.value_type == pa.float32(), f"{name}: element type {t.value_type}, expected float")
    lengths = np.array(col.value_lengths() if not pa.types.is_fixed_size_list(t)
                       else [t.list_size] * len(col))
    check(bool((lengths == width).all()), f"{name}: row lengths {sorted(set(lengths.tolist()))}, expected {width}")
    check(col.null_count == 0, f"{name}: {col.null_count} null rows")
    return np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, width)


def main(root, expected):
    info = json.loads((root / "meta/info.json").read_text())
    check(info.get("codebase_version") == "v3.0", f"codebase_version {info.get('codebase_version')}")
    fps = info["fps"]
    features = info["features"]
    for key in ["observation.state", "action", "timestamp", "frame_index", "episode_index", "index", "task_index"]:
        check(key in features, f"info.json features lack {key}")
    obs_dim = features["observation.state"]["shape"][0]
    act_dim = features["action"]["shape"][0]
    for key in ["observation.state", "action"]:
        check(features[key]["dtype"] == "float32", f"{key} dtype {features[key]['dtype']}")

    files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    check(len(files) > 0, "no data/chunk-*/file-*.parquet")
    data = pa.concat_tables([pq.read_table(f) for f in files])
    n = data.num_rows
    for name, t in [("timestamp", pa.float32()), ("frame_index", pa.int64()), ("episode_index", pa.int64()),
                    ("index", pa.int64()), ("task_index", pa.int64())]:
        check(data.schema.field(name).type == t, f"{name}: type {data.schema.field(name).type}, expected {t}")
    state = vectors(data, "observation.state", obs_dim)
    action = vectors(data, "action", act_dim)
    ep = data.column("episode_index").to_numpy()
    fr = data.column("frame_index").to_numpy()
    check(bool((data.column("index").to_numpy() == np.arange(n)).all()), "index is not 0..frames")
    check(ep[0] == 0 and bool((np.diff(ep) >= 0).all()) and bool((np.diff(ep) <= 1).all()),
          "episode_index does not run 0, 1, 2, … contiguously")
    lengths = np.bincount(ep)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    check(bool((fr == np.arange(n) - np.repeat(starts, lengths)).all()), "frame_index does not count from 0 per episode")
    ts = data.column("timestamp").to_numpy()
    check(bool(np.allclose(ts, fr / fps, atol=1e-5)), "timestamp is not frame_index / fps")
    check(info["total_frames"] == n, f"total_frames {info['total_frames']} but {n} rows")
    check(info["total_episodes"] == len(lengths), f"total_episodes {info['total_episodes']} but {len(lengths)} episodes")

    episodes = pa.concat_tables([pq.read_table(f) for f in sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet"))])
    check(episodes.column("episode_index").to_pylist() == list(range(len(lengths))), "meta/episodes episode_index")
    check(episodes.column("length").to_pylist() == lengths.tolist(), "meta/episodes length differs from the data")
    check(episodes.column("dataset_from_index").to_pylist() == starts.tolist(), "dataset_from_index")
    check(episodes.column("dataset_to_index").to_pylist() == (starts + lengths).tolist(), "dataset_to_index")
    for c in ["data/chunk_index", "data/file_index", "meta/episodes/chunk_index", "meta/episodes/file_index"]:
        check(c in episodes.column_names, f"meta/episodes lacks {c}")
    tasks_per_episode = episodes.column("tasks").to_pylist()
    check(all(isinstance(t, list) and len(t) == 1 and isinstance(t[0], str) for t in tasks_per_episode),
          "meta/episodes tasks is not one string per episode")

    tasks_file = pq.ParquetFile(root / "meta/tasks.parquet")
    tasks = tasks_file.read()
    check(tasks.column("task_index").to_pylist() == [0], "tasks.parquet task_index")
    task = tasks.column("__index_level_0__").to_pylist()
    check(task == [tasks_per_episode[0][0]], f"tasks.parquet task {task}")
    pandas_meta = json.loads(tasks_file.schema_arrow.metadata[b"pandas"])
    check(pandas_meta["index_columns"] == ["__index_level_0__"], "tasks.parquet pandas index")
    try:
        import pandas  # noqa: F401  (optional: LeRobot reads the table with pandas)
        df = tasks.to_pandas()
        check(list(df.index) == task and list(df.task_index) == [0], "pandas does not index tasks by string")
    except ImportError:
        pass

    stats = json.loads((root / "meta/stats.json").read_text())
    for key, v in [("observation.state", state), ("action", action)]:
        if v is None:
            continue
        s = stats[key]
        check(np.allclose(s["min"], v.min(0)) and np.allclose(s["max"], v.max(0)), f"stats {key} min/max")
        check(np.allclose(s["mean"], v.astype(np.float64).mean(0), rtol=1e-6), f"stats {key} mean")
        check(np.allclose(s["std"], v.astype(np.float64).std(0), rtol=1e-5, atol=1e-6), f"stats {key} std")
        check(s["count"] == [n], f"stats {key} count")

    if expected:
        e = json.loads(Path(expected).read_text())
        if "frames" in e:
            check(n == e["frames"], f"{n} frames, expected {e['frames']}")
        if "episode_lengths" in e:
            check(lengths.tolist() == e["episode_lengths"], "episode lengths differ")
        if "fps" in e:
            check(fps == e["fps"], f"fps {fps}, expected {e['fps']}")
        for key, names in [("observation.state", e.get("obs_names")), ("action", e.get("action_names"))]:
            if names is not None:
                check(features[key]["names"] == names, f"{key} names {features[key]['names']}")
        for r in e.get("rows", []):
            i = r["row"]
            if state is not None:
                check(state[i].tolist() == np.float32(r["state"]).tolist(), f"row {i} state {state[i].tolist()}")
            if action is not None:
                check(action[i].tolist() == np.float32(r["action"]).tolist(), f"row {i} action {action[i].tolist()}")

    if failures:
        print(f"{root}: {len(failures)} check(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print(f"{root}: {n} frames, {len(lengths)} episodes, state {obs_dim}, action {act_dim}: pyarrow reads it as written")
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) == 3 else None))
