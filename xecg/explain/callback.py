"""``ExplanationScores``: explanation scores of the validation split at the end of training.

After the fit (``on_fit_end``; not under ``xecg train``, which validates the best checkpoint
next and scores it then) and after a separate validation (``xecg validate``, and that of
``xecg train``), if the store has evidence intervals, rank zero scores the
maps of the validation records (:func:`xecg.explain.evaluate.evaluate_maps`) and adds the flat
``expl_*`` keys to the ``val`` section of ``RUN/metrics.json`` (and to the module's
``last_metrics["val"]``, which :class:`xecg.callbacks.MetricsReport` writes there, whichever of
the two callbacks runs first), and logs them to W&B as ``val/expl_*``.
"""

from __future__ import annotations

import json

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from xecg.atomic import write_atomic
from xecg.callbacks import _run_dir, _wandb


class ExplanationScores(L.Callback):
    """Scores the validation split's maps against its evidence at the end of training.

    Args:
        methods: maps to score (``attention``, ``cam``, ``gradcam``, ``ig``); None: every one
            the model has except ``ig`` (attention, cam and gradcam for xECGNet, gradcam for the
            CNN baseline).
        randomised: also score a randomly initialised copy (``expl_randomised_*`` keys).
        max_records: score at most this many validation records (None: all).
        ig_steps: Integrated Gradients steps, if ``ig`` is among the methods.
    """

    def __init__(self, methods: list[str] | None = None, randomised: bool = False,
                 max_records: int | None = None, ig_steps: int = 16):
        self.methods = list(methods) if methods else None
        self.randomised = randomised
        self.max_records = max_records
        self.ig_steps = ig_steps
        self.last_scores: dict[str, float] = {}
        # False where a validation follows the fit (xecg.lightning_cli.fit_and_test): the
        # scores are then those of the model it validates, computed once, there.
        self.score_at_fit_end = True

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        """Methods the model cannot give (``attention`` of the CNN baseline) stop the run here,
        before it trains, not when it is scored at the end (:class:`MapUnavailable`)."""
        if self.methods:
            from xecg.explain.maps import check_methods

            check_methods(pl_module.net, self.methods)

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module) -> None:
        if self.score_at_fit_end:
            self._score(trainer, pl_module)

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "validate":
            return  # during a fit, on_fit_end scores the final model once (if asked)
        self._score(trainer, pl_module)

    def _score(self, trainer: L.Trainer, pl_module) -> None:
        from xecg.explain.evaluate import evaluate_maps

        dm = trainer.datamodule
        store = getattr(dm, "raw_store", None)  # as recorded: the maps band-pass it
        indices = getattr(dm, "indices", {}).get("val")
        if store is None or indices is None or not len(indices):
            return
        if not store.evidence:
            return  # real data: nothing to score against
        indices = list(indices)[:self.max_records] if self.max_records else list(indices)
        scores = evaluate_maps(pl_module, store, indices, self.methods, self.randomised,
                               self.ig_steps)
        if not scores:
            return
        self.last_scores = scores
        pl_module.last_metrics.setdefault("val", {}).update(scores)
        path = _run_dir(trainer) / "metrics.json"
        data = json.loads(path.read_text()) if path.is_file() else {}
        data.setdefault("val", {}).update(scores)
        write_atomic(path, json.dumps(data, indent=2) + "\n")
        logger = _wandb(trainer)
        if logger is not None:
            logger.log_metrics({f"val/{k}": v for k, v in scores.items()})
