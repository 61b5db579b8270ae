#!/usr/bin/env bash
# burn-CUDA training and tract-cuda inference, checked on a GPU machine that
# has CUDA and PyTorch but no Rust toolchain and no network, in one run.
#
#   scripts/gpu-check.sh stage [DIR]     # here: build a stripped `diffbc`
#                                        # (--features cuda,tract-cuda) and stage
#                                        # it with the data into DIR (default
#                                        # gpu-stage/, git-ignored), < 64 MiB
#   scripts/gpu-check.sh run OUT [DIR]   # there (from the repository root, so
#                                        # models/ and scripts/ are at hand):
#                                        # writes OUT/gpu-check.json + .log
#   scripts/gpu-check.sh cpu-run OUT [DIR]  # the same run without a GPU (what
#                                        # can be tested here: the CPU rows,
#                                        # and tract-cuda's refusal)
#
# The run, each phase under its own time limit so one slow phase cannot eat
# the others, results merged into gpu-check.json after every phase:
#   1. nvidia-smi; the dynamic loader pointed at the pip CUDA libraries;
#   2. `diffbc verify` of every shipped model on tract-cuda and native: the
#      golden graph outputs and end-to-end episodes within 1e-4 (the bound
#      the CPU engines' tests assert);
#   3. `diffbc train` of the arm and claw configurations for STEPS steps on
#      --device cuda and cpu (same seed: the same initial network and
#      batches), and the PyTorch twin (scripts/gpu/torch_train.py) of the same
#      network and step on the same GPU;
#   4. `diffbc bench` of models/bench-sieve and models/claw on tract-cuda,
#      tract and native at batch 1 (DDPM) and KDE with 50 candidates.
set -uo pipefail

STEPS="${STEPS:-300}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    sed -n '2,15p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

stage() {
    local dir="${1:-gpu-stage}"
    set -e
    cd "$here"
    # The CUDA version cudarc binds is fixed here (the build machine has no
    # nvcc to ask): 13.0, what the GPU machine's driver and pip wheels carry.
    CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}" \
        cargo build --profile dist --features cuda,tract-cuda --bin diffbc
    rm -rf "$dir"
    mkdir -p "$dir/data"
    local bin=target/dist/diffbc
    xz -T0 -6 -c "$bin" >"$dir/diffbc.xz"
    # Plotting links fontconfig and freetype, which a GPU image may lack: the
    # shared libraries beyond the C and C++ runtimes travel too (used only
    # where the machine has none of its own).
    mkdir -p "$dir/lib"
    ldd "$bin" | awk '$3 ~ /^\// {print $3}' \
        | grep -Ev '/(libc|libm|libgcc_s|libstdc\+\+|libz|ld-linux[^/]*)\.so' \
        | xargs -r cp -L -t "$dir/lib"
    cp -r ../shared/data/claw "$dir/data/claw"
    "$bin" demos --task arm --episodes 200 --out "$dir/data/arm.demos" >/dev/null
    echo "staged into $dir:"
    du -ah "$dir" | sort -h | tail -5
    local total
    total=$(du -sb "$dir" | cut -f1)
    if ((total > 48 * 1024 * 1024)); then
        echo "the stage is $((total / 1024 / 1024)) MiB: with the repository it may pass the 64 MiB a run carries" >&2
        exit 1
    fi
}

# Merge the phase records into OUT/gpu-check.json.
merge() {
    python3 - "$out" "$work" <<'EOF'
import json, sys, pathlib
out, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
record = {}
for f in sorted(work.glob("*.json")):
    try:
        record[f.stem] = json.loads(f.read_text())
    except ValueError as e:
        record[f.stem] = {"unreadable": str(e)}
phases = work / "phases.txt"
if phases.exists():
    record["phases"] = [dict(zip(["name", "rc", "seconds"], l.split())) for l in phases.read_text().split("\n") if l]
(out / "gpu-check.json").write_text(json.dumps(record, indent=1) + "\n")
EOF
}

# phase NAME LIMIT_S COMMAND...: run with a time limit, log its exit and time.
phase() {
    local name="$1" limit="$2"
    shift 2
    echo
    echo "=== $name (limit ${limit}s): $*"
    local t0 t1 rc
    t0=$(date +%s.%N)
    timeout --kill-after=5 "$limit" "$@"
    rc=$?
    t1=$(date +%s.%N)
    echo "=== $name: exit $rc in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s"
    echo "$name $rc $(python3 -c "print(f'{$t1 - $t0:.1f}')")" >>"$work/phases.txt"
    merge
    return 0
}

# train TASK DATA: the task's default configuration on every device, then
# the PyTorch twin of the network the CUDA run trained.
train() {
    local task="$1" data="$2" device
    for device in "${devices[@]}"; do
        phase "train-$task-$device" "$([[ $device == cuda ]] && echo 150 || echo 60)" "$bin" train --task "$task" --data "$data" \
            --steps "$STEPS" --device "$device" --force \
            --out "$work/ck-$task-$device" --json "$work/train-$task-$device.json"
    done
    [[ -n "$gpu" ]] || return 0
    # The twin reads the network from a checkpoint (the CPU one if CUDA failed).
    local from=cuda params
    [[ -f "$work/ck-$task-cuda/config.json" ]] || from=cpu
    params=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['outcome']['parameters'])" \
        "$work/train-$task-$from.json" 2>/dev/null || echo 0)
    local twin=(python3 scripts/gpu/torch_train.py --checkpoint "$work/ck-$task-$from"
        --steps "$STEPS" --device cuda --json "$work/torch-$task.json")
    [[ $params != 0 ]] && twin+=(--expect-params "$params")
    phase "torch-$task" 60 "${twin[@]}"
}

# bench MODEL: batch 1 (DDPM) and KDE over 50 candidates, one thread.
bench() {
    phase "bench-$1" 45 "$bin" bench "models/$1" "${engines[@]}" --threads 1 \
        --weights f32 --sampler ddpm --sampler kde --candidates 50 --seconds 1 \
        --json "$work/bench-$1.json"
}

run() {
    out="$1"
    dir="${2:-gpu-stage}" gpu="$3"
    mkdir -p "$out"
    out="$(cd "$out" && pwd)"
    work="$(mktemp -d)"
    exec > >(tee -a "$out/gpu-check.log") 2>&1
    cd "$here"
    echo "gpu-check $(date -u +%FT%TZ) on $(hostname), $(nproc) CPUs, steps $STEPS"
    if [[ -n "$gpu" ]]; then
        nvidia-smi || echo "nvidia-smi failed"
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
            | python3 -c "import json,sys; n,d,m=[s.strip() for s in sys.stdin.read().split(',')]; print(json.dumps({'name':n,'driver':d,'memory':m}))" \
            >"$work/gpu.json" || true
        # The pip CUDA libraries (cudart, NVRTC, cuBLAS, cuDNN) of PyTorch's environment.
        local sp libs
        sp=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        libs=$(find "$sp/nvidia" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
        export LD_LIBRARY_PATH="${libs}:/usr/local/nvidia/lib64:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
        # cubecl (burn's CUDA backend) compiles with NVRTC against the toolkit's headers.
        # tract-cuda does too, and needs the CCCL headers beside them.
        if [[ -z "${CUDA_PATH:-}" ]] && command -v nvcc >/dev/null; then
            CUDA_PATH="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
        fi
        export CUDA_PATH="${CUDA_PATH:-/usr/local/cuda}"
        export CUDA_HOME="${CUDA_HOME:-$CUDA_PATH}"
        # burn's CUDA backend tunes each matrix product's kernel on first use
        # (10-20 s per shape at cubecl's default level on an H200): the least
        # effort keeps the check inside its budget.
        export CUBECL_AUTOTUNE_LEVEL="${CUBECL_AUTOTUNE_LEVEL:-minimal}"
        echo "CUBECL_AUTOTUNE_LEVEL=$CUBECL_AUTOTUNE_LEVEL"
        echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
        echo "CUDA_PATH=$CUDA_PATH CUDA_HOME=$CUDA_HOME"
        nvcc --version | tail -2 || true
        ls -d "$CUDA_PATH/include/cuda_fp16.h" "$CUDA_PATH"/include/cccl/cuda/std/cstdint \
            "$CUDA_PATH"/targets/*/include/cccl/cuda/std/cstdint 2>&1 | head -4
        for lib in libcuda.so.1 libcudart.so.13 libnvrtc.so.13 libcublas.so.13 libcudnn.so.9; do
            printf '%s: %s\n' "$lib" "$(ldconfig -p | grep -m1 "$lib" | awk '{print $NF}')$(find ${LD_LIBRARY_PATH//:/ } -maxdepth 1 -name "$lib" 2>/dev/null | head -1)"
        done
    fi
    [[ -d "$dir/lib" ]] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$(cd "$dir/lib" && pwd)"
    bin="$work/diffbc"
    if [[ -x "$dir/diffbc" ]]; then
        cp "$dir/diffbc" "$bin"
    else
        python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" \
            "$dir/diffbc.xz" "$bin"
    fi
    chmod +x "$bin"
    # tract-cuda beside the CPU engines of the same binary (without a GPU,
    # verify's tract-cuda rows show the error a user would get).
    engines=(--engine native --engine tract)
    devices=(cpu)
    [[ -n "$gpu" ]] && engines=(--engine tract-cuda "${engines[@]}") && devices=(cuda cpu)

    # In order of what matters if the run is cut short.
    phase verify 100 "$bin" verify models/arm models/bench-sieve models/claw models/pusht-state \
        --engine tract-cuda --engine native --engine tract --json "$work/verify.json"
    train arm "$dir/data/arm.demos"
    bench bench-sieve
    train claw "$dir/data/claw"
    bench claw
    merge
    echo
    echo "results: $out/gpu-check.json"
}

case "${1:-}" in
    stage) stage "${2:-}" ;;
    run) [[ $# -ge 2 ]] || usage; run "$2" "${3:-gpu-stage}" gpu ;;
    cpu-run) [[ $# -ge 2 ]] || usage; run "$2" "${3:-gpu-stage}" "" ;;
    *) usage ;;
esac
