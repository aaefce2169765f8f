"""``xecg sweep SWEEP.yaml``: an Optuna study over experiment settings (``make sweep``).

The modules, each using only those before it: :mod:`~xecg.sweep.spec` (the sweep file),
:mod:`~xecg.sweep.storage` (journal or database), :mod:`~xecg.sweep.study` (sampler, pruner,
counts, dead workers), :mod:`~xecg.sweep.reports` (trials.csv, best.yaml, plots, W&B summary),
:mod:`~xecg.sweep.trials` (one trial: its command line, fit and objective) and
:mod:`~xecg.sweep.command` (the command and its worker processes).

A sweep file names the experiment (``--config`` files), fixed ``overrides``, a ``search_space``
of dotted config keys, trials to ``enqueue`` first, the ``objective`` (one metric or several),
``n_trials``, the ``sampler`` and the ``pruner`` (format: ``sweeps/README.md``). Every trial is
:func:`xecg.lightning_cli.fit_and_test` in the worker process, on one device, with its own run
folder ``OUT/trials/trial-NNNN`` and W&B run (group: the study, job type ``trial``).

Design:

- **Storage**: a journal file ``OUT/study.journal`` by default (``JournalFileBackend`` with its
  default ``JournalFileSymlinkLock``, which also works on NFS; ``JournalFileOpenLock`` on
  Windows), or any SQLAlchemy URL (``--storage sqlite:///...`` / ``postgresql://...``). Passwords
  of URLs are masked in everything printed or written; workers get the URL through the
  environment, not their command line.
- **Workers**: ``--workers K`` starts K processes running this command in worker mode; each calls
  ``study.optimize`` on the shared storage (no scheduler of our own) and gets one GPU through
  ``CUDA_VISIBLE_DEVICES`` (round-robin over the visible ones). A worker stops when the finished
  (COMPLETE or PRUNED) plus running trials reach N (``MaxTrialsCallback`` counting RUNNING too),
  and waits while other workers finish the last ones, so the study ends with N finished trials
  and no extra ones; if a running trial fails meanwhile, a waiting worker runs another.
- **Dead workers**: Optuna's heartbeat (RDB storages; Optuna 5's ``JournalStorage`` has none, so
  :class:`JournalHeartbeatStorage` adds one) marks a RUNNING trial whose heartbeat is older than
  the grace period FAIL, and re-queues its parameters once (``RetryHeartbeatStaleTrialCallback``).
  A trial whose worker process on this machine is gone is marked FAIL at once, without waiting
  for the grace period. Finished trials are never repeated.
- **Enqueued values outside the search space** (gamma 0 below a log range): Optuna 5 cannot
  record them as parameters of the log distribution (``suggest_float`` raises), so such a trial
  runs with the value as given, records it in its ``params`` user attribute and is hidden from
  the sampler (the sampler's model covers the search space only; the trial stays in the study,
  its table, plots and the pruner's medians).
- **Objective**: ``test/X`` is metrics.json["test"][X] (the best checkpoint's test); ``val/X`` is
  the value logged by the validation of the best checkpoint after the fit, so
  ``val/micro_f1_best`` is the best validation micro-F1 of the fit's epochs (the checkpoint's
  score) and ``val/micro_f1`` the best checkpoint's, or else metrics.json["val"][X]: the
  explanation scores ``val/expl_*`` that ``ExplanationScores`` writes there (of the best
  checkpoint; not logged to the trainer, so no pruning on them); ``train/X`` is the fit's last
  logged value.
- **Pruning**: optuna-integration's ``PyTorchLightningPruningCallback`` reports a per-epoch
  validation metric every validation epoch: the objective's metric without ``_best`` (and
  ``val/`` for ``test/``), e.g. ``val/micro_f1`` for ``val/micro_f1_best``.
"""

from xecg.sweep.command import main
from xecg.sweep.reports import write_reports
from xecg.sweep.spec import SweepSpec, load_sweep
from xecg.sweep.study import open_study

__all__ = ["SweepSpec", "load_sweep", "main", "open_study", "write_reports"]
