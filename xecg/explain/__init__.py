"""Explanations that can be seen and scored: ``xecg explain``.

- :mod:`xecg.explain.maps`: the maps (A, R, Grad-CAM, Integrated Gradients) at input resolution;
- :mod:`xecg.explain.scores`: RMA, RRA, pointing game, coverage, AOPC, chance levels, summaries;
- :mod:`xecg.explain.evaluate`: scoring a store's records (``evaluate_maps``);
- :mod:`xecg.explain.figure`: the 12-lead page every explanation image uses;
- :mod:`xecg.explain.callback`: ``ExplanationScores``, the scores at the end of training;
- :mod:`xecg.explain.cli`: the command.

Submodules are imported on use, so that importing this package (the callbacks do) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ExplanationScores": "xecg.explain.callback",
    "evaluate_maps": "xecg.explain.evaluate",
    "score_store": "xecg.explain.evaluate",
    "NoEvidenceError": "xecg.explain.evaluate",
    "explanation_figure": "xecg.explain.figure",
    "METHODS": "xecg.explain.maps",
    "MapUnavailable": "xecg.explain.maps",
    "explain": "xecg.explain.maps",
    "to_input_resolution": "xecg.explain.maps",
}

__all__ = [*_EXPORTS, "main"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    """``xecg explain``; see :mod:`xecg.explain.cli`."""
    from xecg.explain.cli import main as run

    return run(argv)
