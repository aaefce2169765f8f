#!/usr/bin/env bash
# 5-fold cross-validation on real records (default: the 100 shared CPSC records), from scratch vs
# fine-tuned from the synthetic pretraining of `make sim2real`; prints mean +- SD over folds of the
# test metrics and writes runs/finetune-cv/summary.md. Usage (or `make finetune-cv`):
#   experiments/finetune_cv.sh [CKPT] [REAL]
# CKPT: default the best checkpoint of runs/sim2real; REAL: ../shared/data/cpsc2018-wfdb-sample.
# Environment: PY, the Python with xecg (default .venv/bin/python); ARGS, extra xecg arguments;
# FOLDS (default 5); VARIANTS, the arms to run (default "scratch finetune"; the summary reads both).
set -euo pipefail
PY=${PY:-.venv/bin/python}
REAL=${2:-${REAL:-../shared/data/cpsc2018-wfdb-sample}}
CKPT=${1:-$("$PY" -c "import json; print(json.load(open('runs/sim2real/metrics.json'))['best_checkpoint'])")}
FOLDS=${FOLDS:-5}
VARIANTS=${VARIANTS:-scratch finetune}
OUT=runs/finetune-cv
[ -d "$REAL" ] || { echo "finetune-cv: no real records at $REAL (REAL=PATH)"; exit 2; }
[ -f "$CKPT" ] || { echo "finetune-cv: no checkpoint $CKPT (run make sim2real first)"; exit 2; }
echo "pretrained: $CKPT; data: $REAL; $FOLDS folds"
for fold in $(seq 0 $((FOLDS - 1))); do
  for variant in $VARIANTS; do
    init=()
    [ "$variant" = finetune ] && init=(--model.init_from "$CKPT")
    "$PY" -m xecg.cli train --config experiments/finetune.yaml --data.source "$REAL" \
      --data.folds "$FOLDS" --data.fold "$fold" --experiment.name "finetune-cv/$variant-fold$fold" \
      --experiment.wandb false --trainer.enable_progress_bar false --attention.num_records 0 \
      "${init[@]}" ${ARGS:-}
  done
done
"$PY" - "$OUT" "$CKPT" <<'PYEOF'
import json, re, statistics, sys
from pathlib import Path
out, ckpt = Path(sys.argv[1]), sys.argv[2]
keys = [("micro_f1", "micro-F1"), ("macro_f1", "macro-F1"), ("auroc", "macro AUROC"),
        ("cpsc_f1", "CPSC F1"), ("subset_acc", "subset acc")]
lines = [f"pretrained: {ckpt}", "",
         "| start | folds | " + " | ".join(n for _, n in keys) + " |",
         "| --- | --- |" + " --- |" * len(keys)]
for variant in ("scratch", "finetune"):
    runs = sorted(p for p in out.glob(f"{variant}-fold*/metrics.json")
                  if re.fullmatch(rf"{variant}-fold\d+", p.parent.name))  # not archived runs
    tests = [json.loads(p.read_text())["test"] for p in runs]
    cells = []
    for k, _ in keys:
        v = [t[k] for t in tests]
        sd = statistics.stdev(v) if len(v) > 1 else float("nan")
        cells.append(f"{statistics.mean(v):.3f} ± {sd:.3f}")
    lines.append(f"| {variant} | {len(tests)} | " + " | ".join(cells) + " |")
text = "\n".join(lines) + "\n"
(out / "summary.md").write_text(text)
print(text)
PYEOF
