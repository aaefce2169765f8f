"""The record every reader returns and every store holds, and the error a bad one raises."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xecg.classes import names_of
from xecg.errors import XECGError


class RecordError(XECGError):
    """A record that cannot be used; the message names the file and the problem on one line."""

    def __init__(self, path: str, problem: str):
        # One line, whatever a library's message embedded in the problem holds.
        problem = " ".join(line.strip() for line in str(problem).splitlines() if line.strip())
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass
class Record:
    """One 12-lead ECG.

    signal: float32 ``12 x N`` in millivolts, leads in :data:`xecg.classes.LEADS` order.
    labels: multi-hot float32 ``(9,)`` over :data:`xecg.classes.CLASSES`.
    evidence: ``(class name, start, end)`` sample intervals where a label shows (synthetic data).
    """

    id: str
    signal: np.ndarray
    fs: float
    labels: np.ndarray
    age: float | None = None
    sex: str | None = None
    source: str = ""
    ignored_codes: list[str] = field(default_factory=list)
    evidence: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def length(self) -> int:
        return int(self.signal.shape[1])

    @property
    def label_names(self) -> list[str]:
        return names_of(self.labels)
