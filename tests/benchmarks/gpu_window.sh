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

# 1,024 records, 32 steps an epoch: the second epoch (steps 33-64) runs whole and unprofiled,
# a padded or bucketed epoch of the paper's 5,225 records is 164 such steps, and steps 67-76
# are profiled in the third. Each epoch's seconds are printed as it ends.
small=(--start 66 --steps 10)
if [[ $DEVICE != cuda ]]; then  # a check of the script: the smallest network, few records
    small=(--width 0.0625 --records 96 --start 2 --steps 2)
fi
{
    date -u
    nvidia-smi -L 2>/dev/null
    $PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
    git log --oneline -1 2>/dev/null
    # 0. pad_on_device's packed batches rebuilt on the GPU as on the CPU, and a compiled masked
    #    network's gradients equal to eager's under this image's torch (2.11 gave them zero until
    #    the masked norm stopped returning an in-place output under dynamo). Seconds; needs pytest.
    $PY -c "import pytest" 2>/dev/null && step 60 $PY -m pytest -q -p no:cacheprovider \
        tests/test_datamodule.py tests/test_compile.py -k "gpu_as_on_the_cpu or one_traced_graph"
    # 1. Where a compiled padded step's time goes (Lightning and a plain loop, x as bf16).
    step 180 $PY tests/benchmarks/profile_fit.py --compile --no-trace "${small[@]}" \
        --device "$DEVICE" --out "$work/profile-half"
    # 2. The Lightning fit of 1 with loader threads (data.worker_kind thread): batches built in
    #    pinned memory, nothing for the main process to receive or copy.
    step 100 $PY tests/benchmarks/profile_fit.py --compile --no-trace "${small[@]}" \
        --device "$DEVICE" --worker-kind thread --mode lightning --out "$work/profile-threads"
    # 3. A compiled bucketed Lightning fit (buckets of 9,720 samples, as bench.py compiles
    #    them): its step, and why torch compiled again (the goal of a bucketed epoch in 1.5 s;
    #    on 2026-11-27 bench.py's compiled bucket case ran past 280 s). On a CPU each compile
    #    takes minutes.
    [[ $DEVICE == cuda ]] && step 200 env TORCH_LOGS=recompiles $PY tests/benchmarks/profile_fit.py \
        --compile --policy bucket --bucket-multiple 9720 --mode lightning --no-trace \
        "${small[@]}" --device "$DEVICE" --out "$work/profile-bucket"
    # 4. The Lightning fit of 1 with CUDA graphs (model.compile_mode reduce-overhead): one
    #    launch for a step's kernels.
    step 110 $PY tests/benchmarks/profile_fit.py --compile --compile-mode reduce-overhead \
        --no-trace "${small[@]}" --device "$DEVICE" --mode lightning --out "$work/profile-cudagraphs"
    # 5. Where an eager bucketed step's time goes (buckets of 972, masked), Lightning and a plain
    #    loop, in the second epoch: 60-65 ms a step on the H100 (2026-11-26/27) against SPEC's
    #    plain bucketed epoch of 1.64 s on an H200 (10 ms a step). Wall against GPU-kernel
    #    milliseconds says whether the host sets the pace; a masked step dispatches 1,604 ops
    #    under bf16 against 565 unmasked (masked_step.py --bf16), and each new length may cost
    #    kernel set-up (ops by host time).
    step 90 $PY tests/benchmarks/profile_fit.py --policy bucket --no-trace "${small[@]}" \
        --device "$DEVICE" --out "$work/profile-bucket-eager"
    # 6. The network alone at 72,000 samples, with and without the padding mask, and the
    #    loader alone (eager, bf16): what the masked BatchNorm costs since it writes its output
    #    zero at padding and works in place (0.46x of the unmasked network on 2026-11-26).
    [[ $DEVICE == cuda ]] && step 90 $PY tests/benchmarks/bench.py --gpu --only model_only \
        --out "$work/results-gpu-model-only.json"
    echo "==== done after $((SECONDS - start)) s"
} 2>&1 | tee "$OUT/window.log"
tar czf "$OUT/window.tgz" -C "$work" .
rm -rf "$work"
