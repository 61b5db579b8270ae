#!/usr/bin/env python3
"""Write the tiny LeRobot data sets that diffbc's reader is tested against.

The files are written with pyarrow, the library LeRobot itself writes parquet
with (through Hugging Face `datasets` and pandas), in the layouts of LeRobot's
format v3.0 (many episodes per data file, episode metadata in parquet) and
v2.1 (one data file per episode, metadata in JSON lines). Their values follow
a rule the Rust tests restate:

    observation.state[row][j] = 100 * episode + frame + j / 10
    action[row][j]            = observation.state[row][j] + 0.5
    observation.force[row]    = -frame                    (v3.0 only)

The output is committed beside this script; run it again only to change the
data (`python3 tests/lerobot/make_datasets.py`). Needs pyarrow and numpy.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
FPS = 30
JOINTS = ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos",
          "wrist_flex.pos", "wrist_roll.pos", "gripper.pos"]
TASK = "Grab the cube and put it in the bin."


def scalar(dtype):
    return {"dtype": dtype, "shape": [1], "names": None}


def frames(lengths, dims=6, force=False, done=False):
    """Columns of all episodes back to back, as numpy arrays."""
    ep, fr = [], []
    for e, n in enumerate(lengths):
        ep += [e] * n
        fr += list(range(n))
    ep = np.array(ep, dtype=np.int64)
    fr = np.array(fr, dtype=np.int64)
    state = (100.0 * ep[:, None] + fr[:, None] + np.arange(dims)[None, :] / 10.0).astype(np.float32)
    cols = {
        "observation.state": state,
        "action": (state + np.float32(0.5)).astype(np.float32),
        "timestamp": (fr / FPS).astype(np.float32),
        "frame_index": fr,
        "episode_index": ep,
        "index": np.arange(len(ep), dtype=np.int64),
        "task_index": np.zeros(len(ep), dtype=np.int64),
    }
    if force:
        cols["observation.force"] = (-fr).astype(np.float32)
    if done:
        ends = np.cumsum(lengths) - 1
        d = np.zeros(len(ep), dtype=bool)
        d[ends] = True
        cols["next.done"] = d
    return cols


def table(cols, rows, fixed=True, list_type=pa.float32()):
    """A pyarrow table of `rows`: vectors as fixed-size lists (as LeRobot's
    `datasets.Sequence(length=n)` stores them) or variable-length lists."""
    arrays, names = [], []
    for k, v in cols.items():
        v = v[rows]
        if v.ndim == 2:
            flat = pa.array(v.reshape(-1), type=list_type)
            if fixed:
                arr = pa.FixedSizeListArray.from_arrays(flat, v.shape[1])
            else:
                offsets = pa.array(np.arange(0, v.size + 1, v.shape[1], dtype=np.int32))
                arr = pa.ListArray.from_arrays(offsets, flat)
        else:
            arr = pa.array(v)
        arrays.append(arr)
        names.append(k)
    return pa.Table.from_arrays(arrays, names=names)


def stats(cols):
    out = {}
    for k, v in cols.items():
        v = np.asarray(v, dtype=np.float64)
        v = v.reshape(len(v), -1)
        out[k] = {"min": v.min(0).tolist(), "max": v.max(0).tolist(),
                  "mean": v.mean(0).tolist(), "std": v.std(0).tolist(),
                  "count": [len(v)]}
    return out


def write_json(path, value, lines=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        if lines:
            for v in value:
                f.write(json.dumps(v) + "\n")
        else:
            json.dump(value, f, indent=4)


def fresh(name):
    root = HERE / name
    if root.exists():
        shutil.rmtree(root)
    (root / "meta").mkdir(parents=True)
    return root


def tasks_parquet(path):
    """meta/tasks.parquet as pandas writes LeRobot's task table: the task
    string is the (pandas) index, stored as column `__index_level_0__`."""
    t = pa.table({"task_index": pa.array([0], pa.int64()),
                  "__index_level_0__": pa.array([TASK], pa.string())})
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    t = t.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})
    pq.write_table(t, path, compression="snappy")


def v30():
    """Three episodes (5, 7, 4 frames) in two data files; the first file has
    two row groups. A camera feature is declared (as a video) but, as in any
    state-only use, never read."""
    lengths = [5, 7, 4]
    root = fresh("so100_v30")
    cols = frames(lengths, force=True)
    ends = np.cumsum(lengths)
    # Episodes 0 and 1 in file-000 (row groups of 8 rows), episode 2 in file-001.
    split = [(0, ends[1]), (ends[1], ends[2])]
    for file_index, (a, b) in enumerate(split):
        p = root / f"data/chunk-000/file-{file_index:03d}.parquet"
        p.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table(cols, slice(a, b)), p, compression="snappy", row_group_size=8)
    starts = ends - np.array(lengths)
    ep_table = pa.table({
        "episode_index": pa.array(range(len(lengths)), pa.int64()),
        "tasks": pa.array([[TASK]] * len(lengths), pa.list_(pa.string())),
        "length": pa.array(lengths, pa.int64()),
        "data/chunk_index": pa.array([0, 0, 0], pa.int64()),
        "data/file_index": pa.array([0, 0, 1], pa.int64()),
        "dataset_from_index": pa.array(starts, pa.int64()),
        "dataset_to_index": pa.array(ends, pa.int64()),
        "meta/episodes/chunk_index": pa.array([0, 0, 0], pa.int64()),
        "meta/episodes/file_index": pa.array([0, 0, 0], pa.int64()),
    })
    p = root / "meta/episodes/chunk-000/file-000.parquet"
    p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(ep_table, p, compression="snappy")
    tasks_parquet(root / "meta/tasks.parquet")
    vec = {"dtype": "float32", "shape": [6], "names": JOINTS}
    info = {
        "codebase_version": "v3.0",
        "robot_type": "so100_follower",
        "total_episodes": len(lengths),
        "total_frames": int(ends[-1]),
        "total_tasks": 1,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": FPS,
        "splits": {"train": f"0:{len(lengths)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": {
            "action": vec,
            "observation.state": vec,
            "observation.force": {"dtype": "float32", "shape": [1], "names": ["force"]},
            "observation.images.front": {
                "dtype": "video", "shape": [480, 640, 3], "names": ["height", "width", "channels"],
                "info": {"video.fps": FPS, "video.codec": "av1"}},
            "timestamp": scalar("float32"),
            "frame_index": scalar("int64"),
            "episode_index": scalar("int64"),
            "index": scalar("int64"),
            "task_index": scalar("int64"),
        },
    }
    write_json(root / "meta/info.json", info)
    write_json(root / "meta/stats.json", stats({k: v for k, v in cols.items()}))


def v21():
    """Two episodes (6 and 3 frames), one file each; vectors as variable
    lists, joint names in the older `{"motors": [...]}` form, `next.done`."""
    lengths = [6, 3]
    root = fresh("koch_v21")
    cols = frames(lengths, done=True)
    ends = np.cumsum(lengths)
    for e, n in enumerate(lengths):
        p = root / f"data/chunk-000/episode_{e:06d}.parquet"
        p.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table(cols, slice(ends[e] - n, ends[e]), fixed=False), p, compression="snappy")
    write_json(root / "meta/episodes.jsonl",
               [{"episode_index": e, "tasks": [TASK], "length": n} for e, n in enumerate(lengths)],
               lines=True)
    write_json(root / "meta/tasks.jsonl", [{"task_index": 0, "task": TASK}], lines=True)
    vec = {"dtype": "float32", "shape": [6], "names": {"motors": JOINTS}}
    info = {
        "codebase_version": "v2.1",
        "robot_type": "koch",
        "total_episodes": len(lengths),
        "total_frames": int(ends[-1]),
        "total_tasks": 1,
        "total_videos": 0,
        "total_chunks": 1,
        "chunks_size": 1000,
        "fps": FPS,
        "splits": {"train": f"0:{len(lengths)}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": None,
        "features": {
            "action": vec,
            "observation.state": vec,
            "timestamp": scalar("float32"),
            "frame_index": scalar("int64"),
            "episode_index": scalar("int64"),
            "index": scalar("int64"),
            "task_index": scalar("int64"),
            "next.done": scalar("bool"),
        },
    }
    write_json(root / "meta/info.json", info)


def bad(name, t, features=None):
    """A one-file v3.0 data set whose data file is the pyarrow table `t`."""
    root = fresh(f"bad/{name}")
    p = root / "data/chunk-000/file-000.parquet"
    p.parent.mkdir(parents=True)
    pq.write_table(t, p, compression="snappy")
    vec = {"dtype": "float32", "shape": [6], "names": JOINTS}
    features = features or {"action": vec, "observation.state": vec,
                            "timestamp": scalar("float32"), "frame_index": scalar("int64"),
                            "episode_index": scalar("int64"), "index": scalar("int64"),
                            "task_index": scalar("int64")}
    episodes = t.column("episode_index").to_pylist()
    write_json(root / "meta/info.json", {
        "codebase_version": "v3.0", "robot_type": "so100_follower", "fps": FPS,
        "total_episodes": max(episodes) + 1, "total_frames": len(episodes),
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "features": features})


def bad_sets():
    shutil.rmtree(HERE / "bad", ignore_errors=True)
    rows = slice(0, 5)
    # observation.state stored as float64: the wrong type.
    bad("float64_state", table(frames([3, 2]), rows, list_type=pa.float64()))
    # Row 3 of observation.state has 5 values, not 6.
    t = table(frames([3, 2]), rows, fixed=False)
    state = t.column("observation.state").to_pylist()
    state[3] = state[3][:5]
    i = t.schema.get_field_index("observation.state")
    bad("short_state_row", t.set_column(i, "observation.state", pa.array(state, pa.list_(pa.float32()))))
    # Episode 1's rows are split by a row of episode 0: not contiguous.
    cols = frames([3, 2])
    cols["episode_index"] = np.array([0, 0, 1, 0, 1], dtype=np.int64)
    cols["frame_index"] = np.array([0, 1, 0, 2, 1], dtype=np.int64)
    bad("interleaved_episodes", table(cols, rows))
    # Episodes 0 and 2 but no 1.
    cols = frames([3, 2])
    cols["episode_index"] = np.array([0, 0, 0, 2, 2], dtype=np.int64)
    bad("missing_episode", table(cols, rows))
    # info.json declares observation.state; the data file has no such column.
    cols = frames([3, 2])
    del cols["observation.state"]
    vec = {"dtype": "float32", "shape": [6], "names": JOINTS}
    bad("state_not_in_file", table(cols, rows), features={
        "action": vec, "observation.state": vec, "episode_index": scalar("int64"),
        "frame_index": scalar("int64")})


if __name__ == "__main__":
    v30()
    v21()
    bad_sets()
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"wrote the LeRobot test data sets under {HERE} ({total} bytes with the scripts)")
