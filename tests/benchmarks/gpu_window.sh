#!/usr/bin/env bash
# One call on a lent GPU machine (a 15-minute lease: start, this call, a spare minute): the open
# speed questions of README "Benchmarks", most valuable first, each step stopped at its limit and
# all of them by DEADLINE seconds, so that the call ends with its files. Writes $OUT/window.log
# (everything printed) and $OUT/window.tgz (the profiles and bench results).
#
#     bash tests/benchmarks/gpu_window.sh                  # on the GPU machine, from the repo root
#     DEVICE=cpu bash tests/benchmarks/gpu_window.sh       # the same steps, tiny, on a CPU
set -u
OUT=${OUT:-benchmarks/gpu-window}
DEVICE=${DEVICE:-cuda}
DEADLINE=${DEADLINE:-560}
PY=${PY:-python3}
mkdir -p "$OUT"
work=$(mktemp -d)
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
start=$SECONDS

step() {  # step LIMIT COMMAND...: run it for at most LIMIT seconds and what is left before DEADLINE
    local limit=$1 left=$((DEADLINE - (SECONDS - start)))
    shift
    ((left < limit)) && limit=$left
    if ((limit < 20)); then
        echo "==== skipped (out of time): $*"
        return
    fi
    echo "==== $* (limit ${limit} s)"
    timeout "$limit" "$@"
    echo "==== exit $? after $((SECONDS - start)) s"
}

small=()
if [[ $DEVICE != cuda ]]; then  # a check of the script: the smallest network, few records
    small=(--width 0.0625 --records 96 --start 2 --steps 2)
fi
{
    date -u
    nvidia-smi -L 2>/dev/null
    $PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
    git log --oneline -1 2>/dev/null
    # 1. Where a compiled padded step's time goes (Lightning and a plain loop, x as bf16).
    step 200 $PY tests/benchmarks/profile_fit.py --compile --no-trace "${small[@]}" \
        --device "$DEVICE" --out "$work/profile-half"
    # 2. The same Lightning fit with x moved as float32: what data.half_transfer changed.
    step 100 $PY tests/benchmarks/profile_fit.py --compile --no-trace "${small[@]}" \
        --device "$DEVICE" --half-transfer off --mode lightning --out "$work/profile-float32"
    if [[ $DEVICE == cuda ]]; then  # (on a CPU each takes minutes: tests run them apart)
        # 3. A compiled bucketed fit: its graphs, why torch compiled again, its epochs.
        step 270 env TORCH_LOGS=recompiles $PY tests/benchmarks/bench.py --gpu --records 2048 \
            --only bucket_vs_pad_compiled --case-timeout 250 \
            --out "$work/results-gpu-compiled.json"
        # 4. Whether CUDA graphs remove the fixed cost of a short step.
        step 150 $PY tests/benchmarks/compile_lengths.py --mode reduce-overhead \
            --lengths 9720 19440 --batches 32 9
    fi
    echo "==== done after $((SECONDS - start)) s"
} 2>&1 | tee "$OUT/window.log"
tar czf "$OUT/window.tgz" -C "$work" .
rm -rf "$work"
