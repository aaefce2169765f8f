#!/bin/bash
# usage: run_full.sh NAME SEED STORE [extra args]: make sim2real's protocol (experiments/sim2real.yaml)
cd /work/wt-s2r8; PY=/work/main/.venv/bin/python; export PYTHONPATH=$PWD OMP_NUM_THREADS=1
arm=$1; s=$2; store=$3; shift 3
name=s2r-$arm-seed$s
start=$(date +%s)
$PY -m xecg train --config experiments/sim2real.yaml --data.store $store \
  --experiment.name $name --seed_everything $s --trainer.enable_progress_bar false "$@" \
  > /work/logs/$name.train.log 2>&1 || { echo FAIL $name; exit 1; }
ck=$(ls runs/$name/checkpoints/best-*.ckpt | tail -1)
$PY -m xecg evaluate --ckpt $ck ../shared/data/cpsc2018-wfdb-sample --out runs/$name/real > /work/logs/$name.eval.log 2>&1
echo done $name $ck $(python3 -c "import json;d=json.load(open('runs/$name/real/metrics.json'))['evaluate'];print(round(d['micro_f1'],3),round(d['auroc'],3))") $(( $(date +%s)-start ))s $(date +%T)
