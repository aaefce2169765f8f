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
tiny=()
if [[ $DEVICE != cuda ]]; then  # a check of the script: the smallest network, few records
    small=(--width 0.0625 --records 96 --start 2 --steps 2)
    tiny=(--width 0.0625 --length 972 --batch 4 --steps 2)
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
    # The window of 2026-11-27 (benchmarks/gpu-window-2026-11-27) measured the compiled padded
    # fit (Lightning, plain, loader threads, CUDA graphs) and the compiled bucketed fit; what
    # it left open comes first here.
    # 1. The network alone, compiled: do 2-D convolutions of height 1 with a static batch
    #    remove cuDNN's layout transposes (8 of a padded step's 30 kernel-ms on that day)?
    #    Inductor keeps only 2-D convolutions channels last, and none when a shape holds a
    #    symbol, as XECGModule's dynamic batch does. conv2d:static first, then xecg's own form.
    step 200 $PY tests/benchmarks/conv_layout.py --device "$DEVICE" "${tiny[@]}" \
        --variants conv2d:static conv1d:dynamic --out "$work/conv-layout.json"
    # 1b. Only where 1 found the transposes (nearly) gone with 2-D convolutions and a static
    #     batch: the compiled padded Lightning fit so (profile_fit.py --conv2d-static patches
    #     both in), against that evening's 36.0 ms a step. Saves a window's round trip.
    if [[ $DEVICE == cuda ]] && $PY -c '
import json, sys
r = {x["form"] + ":" + x["batch"]: x for x in json.load(open(sys.argv[1]))["results"]}
gone = r["conv2d:static"]["transpose_ms_per_step"] < 0.25 * r["conv1d:dynamic"]["transpose_ms_per_step"]
print("==== 2-D convolutions, static batch: transposes", "gone" if gone else "stay")
sys.exit(0 if gone else 1)' "$work/conv-layout.json"; then
        step 150 $PY tests/benchmarks/profile_fit.py --compile --conv2d-static --no-trace \
            "${small[@]}" --device "$DEVICE" --mode lightning --out "$work/profile-conv2d-static"
    fi
    # 2. The compiled bucketed Lightning fit with CUDA graphs (model.compile_mode
    #    reduce-overhead): that day its step took 32 ms against 9.5 ms of kernels, the host's
    #    24 ms setting the pace; one graph served every length (compiled in 138 s).
    [[ $DEVICE == cuda ]] && step 230 env TORCH_LOGS=recompiles $PY tests/benchmarks/profile_fit.py \
        --compile --compile-mode reduce-overhead --policy bucket --bucket-multiple 9720 \
        --mode lightning --no-trace "${small[@]}" --device "$DEVICE" \
        --out "$work/profile-bucket-cudagraphs"
    # 3. The eager bucketed fit (masked), Lightning and a plain loop, with buckets of 9,720 (8
    #    lengths) instead of 972 (74): that day, with 972, Lightning's step took 70 ms, 12 of
    #    them kernels, and each of its 23 convolution_backward calls 1.7 ms of host time (200 us
    #    compiled at one length), about what pytorch/pytorch#187212 measures for a cuDNN
    #    convolution's cold start (an unseen shape: 1.27 ms). Fewer shapes, fewer cold starts.
    step 90 $PY tests/benchmarks/profile_fit.py --policy bucket --bucket-multiple 9720 \
        --no-trace "${small[@]}" --device "$DEVICE" --out "$work/profile-bucket-eager"
    # 4. The network alone at 72,000 samples, with and without the padding mask, and the
    #    loader alone (eager, bf16): what the masked BatchNorm costs.
    [[ $DEVICE == cuda ]] && step 90 $PY tests/benchmarks/bench.py --gpu --only model_only \
        --out "$work/results-gpu-model-only.json"
    echo "==== done after $((SECONDS - start)) s"
} 2>&1 | tee "$OUT/window.log"
tar czf "$OUT/window.tgz" -C "$work" .
rm -rf "$work"
