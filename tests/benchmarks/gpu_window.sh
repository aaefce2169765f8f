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
    # 0. pad_on_device's packed batches rebuilt on the GPU as on the CPU, a compiled masked
    #    network's gradients equal to eager's under this image's torch (2.11 gave them zero until
    #    the masked norm stopped returning an in-place output under dynamo), and inductor's
    #    channels-last code for the conv2d form as eager. Seconds; needs pytest.
    $PY -c "import pytest" 2>/dev/null && step 90 $PY -m pytest -q -p no:cacheprovider \
        tests/test_datamodule.py tests/test_compile.py \
        -k "gpu_as_on_the_cpu or one_traced_graph or on_a_gpu_as_eager"
    # The windows of 2026-11-27 (benchmarks/gpu-window-2026-11-27 and -night) measured the
    # compiled padded fit, the compiled bucketed fit with and without CUDA graphs, the eager
    # bucketed fit and 2-D convolutions with a static batch (conv_layout.py), which xecg then
    # made its compiled form for one length on a GPU (models.backbone.compiled_form).
    # 1. The compiled padded fit as xecg now runs it (2-D convolutions of height 1, static
    #    training batches), Lightning and a plain loop: the evening's 36.0 and 33.2 ms a step,
    #    the night's 26.8 ms with the same form patched into Lightning alone.
    step 200 $PY tests/benchmarks/profile_fit.py --compile --no-trace "${small[@]}" \
        --device "$DEVICE" --mode lightning plain --out "$work/profile-pad-conv2d"
    # 2. The compiled bucketed fit with CUDA graphs in a plain loop beside Lightning: the night's
    #    Lightning step took 16.8 ms (32 ms without CUDA graphs); compiling took 127 s.
    [[ $DEVICE == cuda ]] && step 330 env TORCH_LOGS=recompiles $PY tests/benchmarks/profile_fit.py \
        --compile --compile-mode reduce-overhead --policy bucket --bucket-multiple 9720 \
        --mode plain lightning --no-trace "${small[@]}" --device "$DEVICE" \
        --out "$work/profile-bucket-cudagraphs"
    echo "==== done after $((SECONDS - start)) s"
} 2>&1 | tee "$OUT/window.log"
tar czf "$OUT/window.tgz" -C "$work" .
rm -rf "$work"
