#!/usr/bin/env python3
"""PyTorch twin of one diffbc training step, to time burn against PyTorch on one GPU.

Reads a diffbc checkpoint folder (`config.json` = TrainConfig, train/src/config.rs;
`meta.json` = CheckpointMeta, train/src/checkpoint.rs) and builds the same network
diffbc builds for it (train/src/model/mod.rs `PolicySpec::build`):

* encoder (train/src/model/encoder.rs): `mlp` = Linear -> LeakyReLU(0.01) -> Linear;
  `cnn` = patchifying convolutions (kernel = stride, no padding; diffbc writes them
  as reshape -> Linear, here nn.Conv2d) each followed by GELU, flattened, Linear.
  Every frame of the history (history + 1 frames) goes through the same encoder.
* denoiser: `mlp_sieve` (sieve.rs), `basic_mlp` (basic.rs) or `transformer`
  (transformer.rs), with the sin time embedding, LayerNorm eps 1e-5, exact GELU,
  the 1/sqrt(2) residual scaling and tokens [frames..., tau, a_tau] + position code.

and one step of train/src/train.rs `train`: batch rows drawn uniformly, each distinct
frame of the batch encoded once (`make_batch`/`batch_loss`), tau ~ U{1..T}, network
input tau/T, a_tau = sqrt(abar) a0 + sqrt(1-abar) eps with the linear-beta schedule of
runtime/src/schedule.rs, optional observation dropout, epsilon-MSE loss, backward,
burn's gradient clipping `GradientClippingConfig::Norm(c)` (applied per parameter
tensor, as burn-optim 0.21's OptimizerAdaptor does), Adam with burn 0.21's AdamConfig
defaults (betas 0.9/0.999, eps 1e-5, no weight decay), `learning_rate` (warm-up,
cosine), the EMA of the weights with decay min(ema_decay, (1+s)/(10+s)), and the
loss read back once per step. Unlike diffbc, the data set is random N(0,1) tensors
resident on the device and the per-step randomness is drawn there too.

`--dry-run` needs no torch: it parses the checkpoint and prints the layer plan
(names and shapes as diffbc stores them, [in, out]) and the parameter count.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:  # --dry-run works without torch
    torch = F = nn = None

Module = nn.Module if nn is not None else object
LEAKY_SLOPE = 0.01  # encoder.rs LEAKY_SLOPE
LAYER_NORM_EPS = 1e-5  # encoder.rs LAYER_NORM_EPS
ADAM = dict(betas=(0.9, 0.999), eps=1e-5)  # burn-optim 0.21 AdamConfig defaults
CLAW_SCENES = 7  # distinct images behind the claw task's samples (train/src/data.rs)


def fail(msg):
    sys.exit(f"torch_train.py: {msg}")


# ---------------------------------------------------------------- config (no torch)


def load_checkpoint(folder):
    d = Path(folder)
    try:
        config = json.loads((d / "config.json").read_text())
        meta = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError) as e:
        fail(f"{folder} is not a readable diffbc checkpoint folder: {e}")
    if config.get("method") != "diffusion":
        fail(f"config.method is {config.get('method')!r}; only 'diffusion' is mirrored")
    if config.get("mode_dropout", 0.0) > 0:
        fail("config.mode_dropout > 0 (mode-channel copies per batch) is not mirrored")
    return config, meta


def obs_len(obs):
    return obs["dim"] if obs["kind"] == "vector" else obs["channels"] * obs["height"] * obs["width"]


def linear(name, i, o, bias=True):
    return [(f"{name}.weight", (i, o))] + ([(f"{name}.bias", (o,))] if bias else [])


def layer_norm(name, d):
    return [(f"{name}.gamma", (d,)), (f"{name}.beta", (d,))]


def param_plan(config, meta):
    """Every float parameter diffbc builds, named and shaped as in its model.mpk."""
    enc, den, obs, a = config["encoder"], config["denoiser"], meta["obs"], meta["action_dim"]
    frames, e = config["history"] + 1, enc["embed"]
    plan = []
    if enc["kind"] == "mlp":
        plan += linear("encoder.Mlp.l1", obs_len(obs), enc["hidden"])
        plan += linear("encoder.Mlp.l2", enc["hidden"], e)
    elif enc["kind"] == "cnn":
        if obs["kind"] != "image":
            fail("encoder.kind cnn needs image observations (diffbc refuses this too)")
        c, h, w = obs["channels"], obs["height"], obs["width"]
        for i, l in enumerate(enc["layers"]):
            k = l["patch"]
            if h % k or w % k:
                fail(f"encoder.layers[{i}].patch {k} does not divide {h}x{w}")
            plan += linear(f"encoder.Cnn.convs.{i}.linear", c * k * k, l["channels"])
            c, h, w = l["channels"], h // k, w // k
        plan += linear("encoder.Cnn.proj", c * h * w, e)
    else:
        fail(f"unknown encoder.kind {enc['kind']!r}")
    kind, E = den["kind"], frames * e
    if kind == "mlp_sieve":
        s, hid, p = den["embed"], den["hidden"], "head.Sieve"
        plan += linear(f"{p}.action_in", a, s) + linear(f"{p}.action_out", s, s)
        plan += linear(f"{p}.time_freq", 1, s, bias=False) + linear(f"{p}.time_out", s, s)
        plan += linear(f"{p}.fc1", E + 2 * s, hid) + layer_norm(f"{p}.norm1", hid)
        plan += linear(f"{p}.fc2", hid + a + 1, hid) + linear(f"{p}.fc3", hid + a + 1, hid)
        plan += linear(f"{p}.fc4", hid + a + 1, a)
    elif kind == "basic_mlp":
        hid, p = den["hidden"], "head.Basic"
        for i in range(den["layers"]):
            plan += linear(f"{p}.hidden.{i}", a + E + 1 if i == 0 else hid, hid)
        plan += linear(f"{p}.out", hid, a)
    elif kind == "transformer":
        d, ff, p, tokens = den["d_model"], den["feed_forward"], "head.Transformer", frames + 2
        if d % den["heads"]:
            fail(f"denoiser.heads {den['heads']} does not divide d_model {d}")
        plan += linear(f"{p}.obs_in", e, d) + linear(f"{p}.action_in", a, d)
        plan += linear(f"{p}.time_freq", 1, d, bias=False) + linear(f"{p}.time_out", d, d)
        plan += [(f"{p}.position", (tokens, d))]
        for b in range(den["blocks"]):
            q = f"{p}.blocks.{b}"
            for n in ("query", "key", "value", "proj"):
                plan += linear(f"{q}.{n}", d, d)
            plan += layer_norm(f"{q}.norm1", d) + linear(f"{q}.ff1", d, ff)
            plan += linear(f"{q}.ff2", ff, d) + layer_norm(f"{q}.norm2", d)
        plan += linear(f"{p}.out", tokens * d, a)
    else:
        fail(f"unknown denoiser.kind {kind!r}")
    return plan


def learning_rate(optim, step):
    """train.rs `learning_rate`: linear warm-up, then cosine decay to lr_min."""
    lr, lr_min, warm = optim["lr"], optim["lr_min"], optim["warmup_steps"]
    if step < warm:
        return lr * (step + 1) / warm
    span = max(optim["steps"] - warm, 1)
    progress = min((step - warm) / span, 1.0)
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * progress))


def noise_tables(diffusion):
    """schedule.rs: linear beta over T steps, abar = prod(1 - beta), in f64;
    returns (sqrt(abar_tau), sqrt(1 - abar_tau)) for tau = 1..T."""
    T, lo, hi = diffusion["steps"], diffusion["beta_min"], diffusion["beta_max"]
    betas = [lo if T == 1 else lo + (hi - lo) * i / (T - 1) for i in range(T)]
    acc, sa, sn = 1.0, [], []
    for b in betas:
        acc *= 1.0 - b
        sa.append(math.sqrt(acc))
        sn.append(math.sqrt(1.0 - acc))
    return sa, sn


# ---------------------------------------------------------------- networks (torch)


class MlpEncoder(Module):
    def __init__(self, frame_len, hidden, embed):
        super().__init__()
        self.l1, self.l2 = nn.Linear(frame_len, hidden), nn.Linear(hidden, embed)

    def forward(self, x):
        return self.l2(F.leaky_relu(self.l1(x), LEAKY_SLOPE))


class CnnEncoder(Module):
    def __init__(self, obs, layers, embed):
        super().__init__()
        c, h, w = obs["channels"], obs["height"], obs["width"]
        self.input = (c, h, w)
        self.convs = nn.ModuleList()
        for l in layers:
            k = l["patch"]
            self.convs.append(nn.Conv2d(c, l["channels"], kernel_size=k, stride=k))
            c, h, w = l["channels"], h // k, w // k
        self.proj = nn.Linear(c * h * w, embed)

    def forward(self, x):
        x = x.view(x.shape[0], *self.input)
        for conv in self.convs:
            x = F.gelu(conv(x))
        return self.proj(x.flatten(1))


def time_frequencies(width, bound):
    """The bias-free Linear(1, width) before sin, uniform in +-time_frequency."""
    lin = nn.Linear(1, width, bias=False)
    nn.init.uniform_(lin.weight, -bound, bound)
    return lin


class Sieve(Module):
    def __init__(self, E, a, cfg):
        super().__init__()
        s, h = cfg["embed"], cfg["hidden"]
        self.action_in, self.action_out = nn.Linear(a, s), nn.Linear(s, s)
        self.time_freq, self.time_out = time_frequencies(s, cfg["time_frequency"]), nn.Linear(s, s)
        self.fc1, self.norm1 = nn.Linear(E + 2 * s, h), nn.LayerNorm(h, eps=LAYER_NORM_EPS)
        self.fc2, self.fc3 = nn.Linear(h + a + 1, h), nn.Linear(h + a + 1, h)
        self.fc4 = nn.Linear(h + a + 1, a)

    def forward(self, emb, act, t):
        ea = self.action_out(F.leaky_relu(self.action_in(act), LEAKY_SLOPE))
        et = self.time_out(torch.sin(self.time_freq(t)))
        s = math.sqrt(0.5)
        h1 = F.gelu(self.norm1(self.fc1(torch.cat([emb, ea, et], 1)))) * s
        h2 = (F.gelu(self.fc2(torch.cat([h1, act, t], 1))) + h1) * s
        h3 = F.gelu(self.fc3(torch.cat([h2, act, t], 1))) + h2
        return self.fc4(torch.cat([h3, act, t], 1))


class BasicMlp(Module):
    def __init__(self, E, a, cfg):
        super().__init__()
        h = cfg["hidden"]
        self.hidden = nn.ModuleList(
            nn.Linear(a + E + 1 if i == 0 else h, h) for i in range(cfg["layers"])
        )
        self.out = nn.Linear(h, a)

    def forward(self, emb, act, t):
        x = torch.cat([act, emb, t], 1)
        for lin in self.hidden:
            x = F.gelu(lin(x))
        return self.out(x)


class Block(Module):
    """Post-norm block; each residual sum scaled by 1/sqrt(2) before its LayerNorm."""

    def __init__(self, d, heads, ff):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.proj = (nn.Linear(d, d) for _ in range(4))
        self.norm1, self.norm2 = nn.LayerNorm(d, eps=LAYER_NORM_EPS), nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x):
        n, tok, d = x.shape
        split = lambda y: y.view(n, tok, self.heads, d // self.heads).transpose(1, 2)
        att = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)))
        s = math.sqrt(0.5)
        x = self.norm1((x + self.proj(att.transpose(1, 2).reshape(n, tok, d))) * s)
        return self.norm2((x + self.ff2(F.gelu(self.ff1(x)))) * s)


class Transformer(Module):
    def __init__(self, frames, e, a, cfg):
        super().__init__()
        d, self.frames = cfg["d_model"], frames
        self.obs_in, self.action_in = nn.Linear(e, d), nn.Linear(a, d)
        self.time_freq, self.time_out = time_frequencies(d, cfg["time_frequency"]), nn.Linear(d, d)
        self.position = nn.Parameter(torch.randn(frames + 2, d) * 0.02)
        self.blocks = nn.ModuleList(
            Block(d, cfg["heads"], cfg["feed_forward"]) for _ in range(cfg["blocks"])
        )
        self.out = nn.Linear((frames + 2) * d, a)

    def forward(self, emb, act, t):
        n = emb.shape[0]
        obs = self.obs_in(emb.view(n, self.frames, -1))
        time_tok = self.time_out(torch.sin(self.time_freq(t))).unsqueeze(1)
        x = torch.cat([obs, time_tok, self.action_in(act).unsqueeze(1)], 1) + self.position
        for b in self.blocks:
            x = b(x)
        return self.out(x.flatten(1))


class Policy(Module):
    """Encoder + denoiser; `forward` is train.rs `batch_loss` up to the prediction."""

    def __init__(self, config, meta):
        super().__init__()
        enc, den, obs, a = config["encoder"], config["denoiser"], meta["obs"], meta["action_dim"]
        self.frames, e = config["history"] + 1, enc["embed"]
        if enc["kind"] == "mlp":
            self.encoder = MlpEncoder(obs_len(obs), enc["hidden"], e)
        else:
            self.encoder = CnnEncoder(obs, enc["layers"], e)
        E = self.frames * e
        self.head = {
            "mlp_sieve": lambda: Sieve(E, a, den),
            "basic_mlp": lambda: BasicMlp(E, a, den),
            "transformer": lambda: Transformer(self.frames, e, a, den),
        }[den["kind"]]()

    def forward(self, distinct_frames, slot, noisy, t, keep):
        # Each distinct frame once, then gathered per (sample, frame slot).
        emb = self.encoder(distinct_frames)[slot.reshape(-1)].reshape(slot.shape[0], -1)
        if keep is not None:
            emb = emb * keep
        return self.head(emb, noisy, t)


# ---------------------------------------------------------------- training step


class Twin:
    def __init__(self, config, meta, args, device):
        self.config, self.device = config, device
        o = config["optim"]
        self.batch, self.clip, self.ema_decay = o["batch_size"], o["grad_clip"], o["ema_decay"]
        self.dropout = config["obs_dropout"]
        self.T = config["diffusion"]["steps"]
        torch.manual_seed(args.seed)
        self.model = Policy(config, meta).to(device)
        self.params = [p for p in self.model.parameters()]
        self.ema = [p.detach().clone() for p in self.params]
        self.opt = torch.optim.Adam(self.params, lr=o["lr"], fused=args.fused_adam or None, **ADAM)
        sa, sn = noise_tables(config["diffusion"])  # f64 sqrt, then f32 as schedule.rs
        self.sqrt_ab = torch.tensor(sa, dtype=torch.float32, device=device)
        self.sqrt_1mab = torch.tensor(sn, dtype=torch.float32, device=device)
        # Data set resident on the device: normalised frames and actions ~ N(0, 1).
        g = torch.Generator(device=device).manual_seed(args.seed + 1)
        hist, fl, a = config["history"] + 1, obs_len(meta["obs"]), meta["action_dim"]
        split = config["data"]
        self.samples = args.samples or round(split["samples"] * (1 - split["test_fraction"]))
        image = meta["obs"]["kind"] == "image"
        self.n_frames = args.frames or (CLAW_SCENES if image else self.samples)
        self.frames = torch.randn(self.n_frames, fl, generator=g, device=device)
        self.actions = torch.randn(self.samples, a, generator=g, device=device)
        if self.n_frames >= self.samples:  # a trajectory: frame s and the ones before it
            s = torch.arange(self.samples, device=device).unsqueeze(1)
            lag = torch.arange(hist - 1, -1, -1, device=device).unsqueeze(0)
            self.frame_index = (s - lag).clamp(min=0)
        else:  # a table of scenes (claw): any frame for any slot
            self.frame_index = torch.randint(
                self.n_frames, (self.samples, hist), generator=g, device=device
            )
        self.gen = torch.Generator(device=device).manual_seed(args.seed)
        self.step_index = 0

    def step(self, forward):
        g, dev, n = self.gen, self.device, self.batch
        rows = torch.randint(self.samples, (n,), generator=g, device=dev)
        ids, slot = torch.unique(self.frame_index[rows], return_inverse=True)
        clean = self.actions[rows]
        tau = torch.randint(1, self.T + 1, (n,), generator=g, device=dev)
        noise = torch.randn(clean.shape, generator=g, device=dev)
        noisy = self.sqrt_ab[tau - 1, None] * clean + self.sqrt_1mab[tau - 1, None] * noise
        t = (tau.to(torch.float32) / self.T).unsqueeze(1)
        keep = None
        if self.dropout > 0:
            keep = (torch.rand(n, 1, generator=g, device=dev) >= self.dropout).float()
        loss = F.mse_loss(forward(self.frames[ids], slot, noisy, t, keep), noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip is not None:  # burn clips each parameter tensor's norm on its own
            grads = [p.grad for p in self.params]
            norms = torch.stack(torch._foreach_norm(grads))
            coef = (self.clip / (norms + torch.finfo(torch.float32).tiny)).clamp_(max=1.0)
            torch._foreach_mul_(grads, list(coef.unbind(0)))
        s = self.step_index
        for group in self.opt.param_groups:
            group["lr"] = learning_rate(self.config["optim"], s)
        self.opt.step()
        d = min(self.ema_decay, (1.0 + s) / (10.0 + s))
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, [p.detach() for p in self.params], 1.0 - d)
        self.step_index += 1
        value = loss.item()
        if not math.isfinite(value):
            fail(f"loss became {value} at step {s}")
        return value


def timed(twin, forward, warmup, steps):
    """Seconds for `steps` steps after `warmup` untimed ones, and every loss."""
    sync = torch.cuda.synchronize if twin.device.type == "cuda" else lambda: None
    losses = [twin.step(forward) for _ in range(warmup)]
    sync()
    t0 = time.perf_counter()
    losses += [twin.step(forward) for _ in range(steps)]
    sync()
    return time.perf_counter() - t0, losses


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a diffbc checkpoint folder")
    p.add_argument("--steps", type=int, default=300, help="timed steps (default 300)")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (default 20)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the result here")
    p.add_argument("--expect-params", type=int, help="fail unless the network has this many")
    p.add_argument("--samples", type=int, help="training samples (default: config data split)")
    p.add_argument("--frames", type=int, help="frame table size (default: 7 scenes for images, one per sample for vectors)")
    p.add_argument("--compile", action="store_true", help="also time a torch.compile'd forward")
    p.add_argument("--fused-adam", action="store_true", help="torch.optim.Adam(fused=True)")
    p.add_argument("--dry-run", action="store_true", help="print the layer plan; needs no torch")
    args = p.parse_args()

    config, meta = load_checkpoint(args.checkpoint)
    plan = param_plan(config, meta)
    expected = sum(math.prod(shape) for _, shape in plan)
    summary = dict(
        task=config["task"], method=config["method"], encoder=config["encoder"]["kind"],
        denoiser=config["denoiser"]["kind"], obs=meta["obs"], action_dim=meta["action_dim"],
        history=config["history"], chunk=config.get("chunk", {"horizon": 1, "execute": 1}),
        diffusion_steps=config["diffusion"]["steps"], obs_dropout=config["obs_dropout"],
        grad_clip=config["optim"]["grad_clip"], ema_decay=config["optim"]["ema_decay"],
    )
    if args.expect_params is not None and args.expect_params != expected:
        fail(f"the network has {expected} parameters, expected {args.expect_params}: not the same network")
    if args.dry_run:
        for name, shape in plan:
            print(f"{name} {list(shape)} {math.prod(shape)}")
        print(f"{config['task']} {summary['encoder']}+{summary['denoiser']}: {expected} parameters")
        return
    if torch is None:
        fail("torch is not installed (only --dry-run works without it)")
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda but torch sees no CUDA device")
    device = torch.device(args.device)
    twin = Twin(config, meta, args, device)
    params = sum(p.numel() for p in twin.params)
    if params != expected:  # the torch modules and the plan must describe one network
        fail(f"internal mismatch: torch modules have {params} parameters, the plan {expected}")

    seconds, losses = timed(twin, twin.model, args.warmup, args.steps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = dict(
        framework="pytorch", torch_version=torch.__version__, device=name, parameters=params,
        batch_size=twin.batch, steps=args.steps, warmup_steps=args.warmup, seconds=seconds,
        steps_per_second=args.steps / seconds, first_loss=losses[0],
        final_loss=sum(losses[-20:]) / len(losses[-20:]), samples=twin.samples,
        frames=twin.n_frames, seed=args.seed, fused_adam=args.fused_adam,
        matmul_precision=torch.get_float32_matmul_precision(),
        cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
        config=summary, compile=None,
    )
    print(
        f"pytorch {torch.__version__} on {name}: {config['task']} {summary['denoiser']}, "
        f"{params:,} params, batch {twin.batch}: {args.steps} steps in {seconds:.2f} s = "
        f"{result['steps_per_second']:.1f} steps/s (loss {losses[0]:.4f} -> {result['final_loss']:.4f})"
    )
    if args.compile:
        compiled = torch.compile(twin.model)
        t_c0 = time.perf_counter()
        c_seconds, c_losses = timed(twin, compiled, args.warmup, args.steps)
        result["compile"] = dict(
            seconds=c_seconds, steps_per_second=args.steps / c_seconds,
            warmup_seconds=time.perf_counter() - t_c0 - c_seconds,
            final_loss=sum(c_losses[-20:]) / len(c_losses[-20:]),
        )
        print(f"  torch.compile: {args.steps} steps in {c_seconds:.2f} s = "
              f"{result['compile']['steps_per_second']:.1f} steps/s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
