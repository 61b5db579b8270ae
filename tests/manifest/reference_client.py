#!/usr/bin/env python3
"""Independent reference client for diffbc's exported policy folders (format 2).

Written from docs/manifest.md alone (no Rust source was read), it is both a
check that the written contract is enough and a readable second
implementation of it. Usage:

    python3 tests/manifest/reference_client.py MODEL_DIR [MODEL_DIR ...]

For each folder it verifies manifest.json (format_version, graph hashes),
replays the per-graph cases of golden/index.json and every end-to-end case of
golden/episodes.json, taking random draws from the recorded streams. It prints
one summary line per model and exits 1 on the first kind of disagreement.
Dependencies: numpy, onnxruntime (CPU) and the standard library.
"""
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

f32 = np.float32
TOL = 1e-4  # in the head's (normalised) units, and for per-graph outputs
# Per-graph outputs against the trainer's f32 outputs, by `weights` (the
# table in manifest.md's "Golden files"): absolute for f32, relative to
# max(1, largest |expected output| of the case) for the reduced formats.
GRAPH_TOL = {"f32": 1e-4, "f16": 1e-3, "int8": 5e-2}


class Mismatch(Exception):
    pass


class Draws:
    """The recorded `normal` and `uniform` streams, consumed in order."""

    def __init__(self, normal, uniform):
        self.normal_s = np.asarray(normal, dtype=f32)
        self.uniform_s = np.asarray(uniform, dtype=f32)
        self.n = self.u = 0

    def normal(self, rows, cols):
        k = rows * cols
        if self.n + k > len(self.normal_s):
            raise Mismatch(f"normal stream exhausted ({len(self.normal_s)} values)")
        out = self.normal_s[self.n:self.n + k].reshape(rows, cols)
        self.n += k
        return out

    def uniform(self):
        if self.u >= len(self.uniform_s):
            raise Mismatch(f"uniform stream exhausted ({len(self.uniform_s)} values)")
        self.u += 1
        return self.uniform_s[self.u - 1]

    def leftover(self):
        return len(self.normal_s) - self.n, len(self.uniform_s) - self.u


def per_value(stats, length):
    """Expand {mean, std, group} so that value i uses statistic (i mod L) / group."""
    g = (np.arange(length) % length) // stats["group"]
    return np.asarray(stats["mean"], f32)[g], np.asarray(stats["std"], f32)[g]


def load_graph(folder, spec):
    data = (folder / spec["file"]).read_bytes()
    if hashlib.sha256(data).hexdigest() != spec["sha256"]:
        raise Mismatch(f"{spec['file']}: sha256 differs from the manifest")
    options = ort.SessionOptions()
    # int8 weights: f32 activations (manifest.md, "Weight formats").
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


class Policy:
    def __init__(self, folder):
        self.folder = Path(folder)
        m = self.m = json.loads((self.folder / "manifest.json").read_text())
        if m["format_version"] != 2:
            raise Mismatch(f"format_version {m['format_version']}, expected 2")
        self.encoder = load_graph(self.folder, m["encoder"])
        self.head = load_graph(self.folder, m["head"])
        self.kind = m["head_kind"]
        self.F = math.prod(m["observation"]["frame_shape"])
        self.k = m["observation"]["history"]
        self.A = m["action_dim"]
        chunk = m.get("chunk", {"horizon": 1, "execute": 1})
        self.execute = chunk["execute"]
        self.D = self.A // chunk["horizon"]
        self.obs_mean, self.obs_std = per_value(m["normalization"]["observation"], self.F)
        self.act_mean, self.act_std = per_value(m["normalization"]["action"], self.A)
        # Schedule in f64; rounded to f32 where it multiplies samples.
        self.T = m["schedule"]["steps"]
        self.beta = np.concatenate([[0.0], np.asarray(m["schedule"]["betas"], np.float64)])
        self.abar = np.cumprod(1.0 - self.beta)  # abar[0] = 1 since beta[0] = 0
        self.reset()

    def reset(self):
        self.frames = None  # list of k+1 normalised frames, oldest first
        self.action = None  # last decision (raw units), action_dim values
        self.cursor = 0

    def act(self, frame, draws, sampler):
        frame = np.asarray(frame, f32)
        if frame.shape != (self.F,) or not np.all(np.isfinite(frame)):
            raise ValueError("refused frame")  # nothing changes
        f = (frame - self.obs_mean) / self.obs_std
        if self.frames is None:
            self.frames = [f] * (self.k + 1)
        else:
            self.frames = self.frames[1:] + [f]
        if self.action is not None and self.cursor < self.execute:
            self.last = self.cursor  # chunk index of the action handed out
            self.cursor += 1
            return self.action[self.last * self.D:(self.last + 1) * self.D]
        a = self.decide(np.concatenate(self.frames)[None, :], draws, sampler)
        action = a * self.act_std + self.act_mean
        if not np.all(np.isfinite(action)):
            self.action = None  # the tick fails; the next one decides afresh
            raise ValueError("non-finite action")
        self.action, self.cursor, self.last = action, 1, 0
        return action[:self.D]

    # ---- heads -----------------------------------------------------------
    def decide(self, row, draws, sampler):
        e = self.encoder.run(None, {"observation": row})[0]
        if self.kind == "denoiser":
            return self.diffuse(e, draws, sampler)
        s = self.head.run(None, {"embedding": e})[0][0]
        if self.kind == "regressor":
            return s
        return self.classify(s, draws)

    def predict(self, e, x, tau, w):
        n = x.shape[0]
        emb = np.repeat(e, n, axis=0)
        if w != 0:
            emb, x = np.concatenate([emb, np.zeros_like(emb)]), np.concatenate([x, x])
        t = np.full((x.shape[0], 1), f32(tau) / f32(self.T), f32)
        eps = self.head.run(None, {"embedding": emb, "noisy_action": x, "t": t})[0]
        if w == 0:
            return eps
        return (f32(1) + f32(w)) * eps[:n] - f32(w) * eps[n:]

    def ddpm_step(self, x, eps, tau):
        c_x = f32(1 / math.sqrt(1 - self.beta[tau]))
        c_e = f32(self.beta[tau] / math.sqrt(1 - self.abar[tau]))
        return c_x * (x - c_e * eps)

    def diffuse(self, e, draws, sp):
        w = sp["guidance"]
        sel = sp["selection"]
        n = 1 if sel == "single" else sel["kde"]["candidates"]
        x = draws.normal(n, self.A)
        if sp["rule"] == "ddpm":
            for tau in range(self.T, 0, -1):
                x = self.ddpm_step(x, self.predict(e, x, tau, w), tau)
                if tau > 1:
                    x = x + f32(math.sqrt(self.beta[tau])) * draws.normal(n, self.A)
        else:
            S = sp["rule"]["ddim"]["steps"]
            taus = [-(-i * self.T // S) for i in range(S, 0, -1)] + [0]
            for tau, nxt in zip(taus, taus[1:]):
                eps = self.predict(e, x, tau, w)
                x0 = (x - f32(math.sqrt(1 - self.abar[tau])) * eps) / f32(math.sqrt(self.abar[tau]))
                x = f32(math.sqrt(self.abar[nxt])) * x0 + f32(math.sqrt(1 - self.abar[nxt])) * eps
        for _ in range(sp["extra_steps"]):  # Diffusion-X
            x = self.ddpm_step(x, self.predict(e, x, 1, w), 1)
        if n == 1:
            return x[0]
        h = f32(sel["kde"]["bandwidth"])
        d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
        density = np.exp(-d2 / (f32(2) * h * h)).sum(axis=1)
        return x[int(np.argmax(density))]  # argmax: first of ties

    def pick(self, logits, draws):
        if self.m["decoder"]["choice"] == "argmax":
            return int(np.argmax(logits))
        p = np.exp(logits - logits.max())
        total = f32(0)
        for pi in p:  # summed in order, in f32
            total = total + pi
        u = draws.uniform() * total
        for i, pi in enumerate(p):
            u = u - pi
            if u <= 0:
                return i
        return int(np.argmax(logits))

    def classify(self, s, draws):
        c = self.m["decoder"]["scheme"]
        if c["kind"] == "bins":
            B, low, high = c["bins"], np.asarray(c["low"], f32), np.asarray(c["high"], f32)
            j = np.array([self.pick(s[i * B:(i + 1) * B], draws) for i in range(self.A)], f32)
            return low + (j + f32(0.5)) * (high - low) / f32(B)
        k, A = c["k"], self.A
        j = self.pick(s[:k], draws)
        a = np.asarray(c["centres"], f32)[j * A:(j + 1) * A]
        return a + s[k + j * A:k + (j + 1) * A] if c["residual"] else a


# ---- golden replays -------------------------------------------------------
def replay_index(policy):
    golden = policy.folder / "golden"
    worst = 0.0
    tol = GRAPH_TOL[policy.m.get("weights", "f32")]
    for i, case in enumerate(json.loads((golden / "index.json").read_text())):
        sess = policy.encoder if case["graph"] == "encoder" else policy.head
        feeds = {t["name"]: np.load(golden / t["file"]) for t in case["inputs"]}
        names = [t["name"] for t in case["outputs"]]
        for name, got in zip(names, sess.run(names, feeds)):
            want = np.load(golden / next(t["file"] for t in case["outputs"] if t["name"] == name))
            d = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
            if policy.m.get("weights", "f32") != "f32" and want.size:
                d /= max(1.0, float(np.max(np.abs(want))))
            worst = max(worst, d)
            if not d <= tol:
                raise Mismatch(f"index case {i} ({case['graph']}, batch {case['batch']}), "
                               f"output {name}: |difference| {d:.3g} > {tol}")
    return worst


def array(policy, value):
    """An episode array: inline in JSON, or (as exported) an .npy file name in golden/."""
    return np.load(policy.folder / "golden" / value) if isinstance(value, str) else np.asarray(value)


def replay_episode(policy, case):
    m = policy.m
    sampler = m["sampler"] if case["sampler"] == "default" else m["samplers"][case["sampler"]]
    draws = Draws(array(policy, case["normal"]), array(policy, case["uniform"]))
    want = array(policy, case["actions"]).astype(np.float64)
    observations = array(policy, case["observations"])
    policy.reset()
    worst = 0.0
    for tick, frame in enumerate(observations):
        try:
            got = policy.act(frame, draws, sampler).astype(np.float64)
        except (Mismatch, ValueError) as err:
            raise Mismatch(f"case {case['name']}, tick {tick}: {err}")
        j = policy.last  # the difference is in units of the std that de-normalised it
        std = policy.act_std[j * policy.D:(j + 1) * policy.D].astype(np.float64)
        diff = np.abs(got - want[tick]) / std
        worst = max(worst, float(diff.max()))
        if not diff.max() <= TOL:
            v = int(np.argmax(diff))
            raise Mismatch(f"case {case['name']}, tick {tick}, value {v}: got {float(got[v])!r}, "
                           f"recorded {float(want[tick][v])!r} ({diff[v]:.3g} std > {TOL})")
    if len(observations) != case["ticks"] or want.shape != (case["ticks"], policy.D):
        raise Mismatch(f"case {case['name']}: observations {observations.shape}, actions {want.shape}, "
                       f"ticks {case['ticks']}")
    left = draws.leftover()
    if left != (0, 0):
        raise Mismatch(f"case {case['name']}: {left[0]} normal and {left[1]} uniform draws left unconsumed")
    return worst, draws.n, draws.u


def check_model(folder):
    """Replays everything; returns (summary, list of failures)."""
    policy = Policy(folder)
    failures, parts = [], []
    try:
        parts.append(f"index worst {replay_index(policy):.2e}")
    except Mismatch as err:
        failures.append(str(err))
    episodes = json.loads((policy.folder / "golden" / "episodes.json").read_text())
    for case in episodes["cases"]:
        try:
            worst, n, u = replay_episode(policy, case)
        except Mismatch as err:
            failures.append(str(err))
            parts.append(f"{case['name']}=FAIL")
            continue
        parts.append(f"{case['name']}={worst:.2e}")
        print(f"  {folder}: case {case['name']} ({case['sampler']}, {case['ticks']} ticks, "
              f"{n} normal + {u} uniform draws): worst {worst:.3e} std")
    return "; ".join(parts), failures


def main(argv):
    if not argv:
        print("usage: reference_client.py MODEL_DIR [MODEL_DIR ...]", file=sys.stderr)
        return 2
    failed = False
    for folder in argv:
        try:
            summary, failures = check_model(folder)
        except Exception as err:  # a broken folder: report it and go on
            summary, failures = "", [f"{type(err).__name__}: {err}"]
        for f in failures:
            print(f"  {folder}: FAIL {f}")
        print(f"{'FAIL' if failures else 'OK  '} {folder}: {summary}")
        failed |= bool(failures)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
