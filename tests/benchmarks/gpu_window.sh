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
layout=(--width 0.25 --length 2916 --batch 8 --steps 5)
# the forms of steps 1 and 1b, each compiled anew (about half a minute on a GPU): :nocudnn is
# the form without cuDNN, with torch's own CUDA kernels (conv2d_cl, its input and weight made
# channels-last, left the window on 2026-11-28 to make room for it and for step 2)
fp32_forms=(conv1d:static conv2d:static conv2d:static:nocudnn)
bf16_forms=(conv1d:static conv2d:static conv2d:static:nocudnn)
ops=()
if [[ $DEVICE != cuda ]]; then  # a check of the script: the smallest network, few records
    small=(--width 0.0625 --records 96 --start 2 --steps 2)
    layout=(--width 0.0625 --length 972 --batch 4 --steps 2)
    fp32_forms=(conv1d:static conv2d:static)
    bf16_forms=(conv1d:static conv2d:static)
    ops=(--batch 4 --channels 16 --length 972)
fi
{
    date -u
    nvidia-smi -L 2>/dev/null
    $PY -c "import torch, lightning; print('torch', torch.__version__, 'cuDNN', torch.backends.cudnn.version(), 'lightning', lightning.__version__)"
    git log --oneline -1 2>/dev/null
    # 0. pad_on_device's packed batches rebuilt on the GPU as on the CPU, and a compiled masked
    #    network's gradients equal to eager's under this image's torch (2.11 gave them zero until
    #    the masked norm stopped returning an in-place output under dynamo). Seconds; needs pytest.
    $PY -c "import pytest" 2>/dev/null && step 60 $PY -m pytest -q -p no:cacheprovider \
        tests/test_datamodule.py tests/test_compile.py -k "gpu_as_on_the_cpu or one_traced_graph"
    # The windows of 2026-11-27 (benchmarks/gpu-window-2026-11-27 and -night) found that 2-D
    # convolutions of height 1 with a static batch remove cuDNN's layout transposes (network
    # alone 23.6 against 30.4 ms a step; Lightning padded fit 26.8 against 36.0 ms), but that
    # form's fits ended their second epoch at a training loss of 0.871-0.881 where xecg's own
    # layers gave 0.820-0.827, and its compiled bf16 gradients failed a comparison with eager
    # (bf16 gradients of this network differ from float32's by 40-70% in eager too, so that
    # comparison said little). Is the 2-D form exact? The same question in float32, TF32 off:
    # 1. The network alone (width 0.25, batch 8, 2,916 samples), each form's compiled gradients
    #    against an eager float32 copy, xecg's layers first (the floor; 1e-5 on this CPU); also
    #    the 2-D form with channels-last inputs and weights. Each form's 12 training steps on
    #    one fixed batch print their losses: an exact form follows xecg's layers step by step
    #    (to 1e-5 on this CPU). Without cuDNN as well: if only cuDNN's 2-D form falls behind,
    #    its kernels are the cause (cuDNN 9.8-9.10 computed some bf16 convolutions wrongly,
    #    pytorch/pytorch#163539; the header above names this card's version).
    step 200 $PY tests/benchmarks/conv_layout.py --device "$DEVICE" --fp32 "${layout[@]}" \
        --variants "${fp32_forms[@]}" --out "$work/conv-layout-fp32.json"
    # 1b. The same 12 steps in bf16, as the fits train: the loss gap of the fits, if the 2-D
    #    form's kernels cause it, shows here as a 2-D trajectory above xecg's layers' (on this
    #    CPU the two differ by bf16 rounding: 1.0713 against 1.0743 at step 12, 0.3%).
    step 140 $PY tests/benchmarks/conv_layout.py --device "$DEVICE" "${layout[@]}" \
        --variants "${bf16_forms[@]}" --out "$work/conv-layout-bf16.json"
    # 1c. Which op, if one is wrong: a block's ops (2-D convolution of height 1, BatchNorm,
    #    ReLU, max-pooling, and all four chained) on contiguous and channels-last tensors,
    #    eager and compiled, with and without cuDNN, against float64 on the CPU, in float32 and
    #    bf16 (CUDA has had channels-last backward kernels that are silently wrong:
    #    pytorch/pytorch#188344, #197888). Seconds.
    step 90 $PY tests/benchmarks/layout_ops.py --device "$DEVICE" "${ops[@]}" \
        --out "$work/layout-ops.json"
    # 2. The compiled padded Lightning fit with xecg's layers and with the 2-D form, one after
    #    the other: do the training losses after two epochs differ again (0.82 against 0.88 in
    #    the progress bar)? Each epoch's mean training loss is printed and in epoch_loss.
    #    With xecg's layers a plain loop follows (the compiled graph reused: seconds). Steps of
    #    33-36 ms whose kernels take 30 and whose host 22-25 leave the GPU idle 3-6 ms a step:
    #    does the host wait for it? --sync-sites counts the ops that make it wait over the
    #    profiled steps, and names where (syncs_per_step, sync_sites in each summary).
    for form in native conv2d-static; do
        flag=(--mode lightning plain); [[ $form == conv2d-static ]] && flag=(--conv2d-static \
            --mode lightning)
        step 150 $PY tests/benchmarks/profile_fit.py --compile "${flag[@]}" --no-trace \
            --sync-sites "${small[@]}" --device "$DEVICE" --out "$work/profile-pad-$form"
    done
    # 3. The compiled bucketed fit with CUDA graphs in a plain loop beside Lightning: the
    #    night's Lightning step took 16.8 ms on an H100 (32 ms without CUDA graphs) and a plain
    #    loop's 17.2 ms on an H200; compiling took 127-145 s.
    [[ $DEVICE == cuda ]] && step 330 env TORCH_LOGS=recompiles $PY tests/benchmarks/profile_fit.py \
        --compile --compile-mode reduce-overhead --policy bucket --bucket-multiple 9720 \
        --mode lightning plain --no-trace --sync-sites "${small[@]}" --device "$DEVICE" \
        --out "$work/profile-bucket-cudagraphs"
    echo "==== done after $((SECONDS - start)) s"
    # the answers in a page, last: the end of the call's output carries them whatever comes back
    $PY tests/benchmarks/window_summary.py "$work"
} 2>&1 | tee "$OUT/window.log"
tar czf "$OUT/window.tgz" -C "$work" .
rm -rf "$work"
