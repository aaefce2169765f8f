"""The nine CPSC 2018 classes: the one place that knows their names, codes and order.

Canonical order is the paper's (alphabetical by abbreviation). Everything else in xecg (readers,
stores, metrics, plots) takes names, codes and indices from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

#: Class abbreviations in canonical (paper) order; index i is column i of every label matrix.
CLASSES: tuple[str, ...] = ("AF", "I-AVB", "LBBB", "Normal", "PAC", "PVC", "RBBB", "STD", "STE")
NUM_CLASSES = len(CLASSES)
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

#: Classes that one beat makes (a premature beat): a record has them when any part of it shows
#: one, so its windows are combined by their maximum (``window_aggregation: episodic``).
EPISODIC: tuple[str, ...] = ("PAC", "PVC")

#: Full names, for captions and reports.
CLASS_DESCRIPTIONS: dict[str, str] = {
    "AF": "atrial fibrillation",
    "I-AVB": "first-degree atrioventricular block",
    "LBBB": "left bundle branch block",
    "Normal": "normal sinus rhythm",
    "PAC": "premature atrial contraction",
    "PVC": "premature ventricular contraction",
    "RBBB": "right bundle branch block",
    "STD": "ST-segment depression",
    "STE": "ST-segment elevation",
}

#: CPSC 2018's own label codes as used in REFERENCE.csv.
CPSC_CODES: dict[int, str] = {
    1: "Normal", 2: "AF", 3: "I-AVB", 4: "LBBB", 5: "RBBB", 6: "PAC", 7: "PVC", 8: "STD", 9: "STE",
}

#: A CPSC code as a REFERENCE.csv spells it: ``2``, or ``2.0`` where pandas wrote a label column
#: that has blanks (a float column) back out.
_CPSC_CODE = re.compile(r"([1-9]\d*)(?:\.0*)?")

#: SNOMED-CT codes (Challenge 2020 v1.0.2 headers), equivalents included.
SNOMED_CODES: dict[str, str] = {
    "426783006": "Normal",
    "164889003": "AF",
    "270492004": "I-AVB",
    "164909002": "LBBB",
    "59118001": "RBBB", "713427006": "RBBB",
    "284470004": "PAC", "63593006": "PAC",
    "164884008": "PVC", "427172004": "PVC",
    "429622005": "STD",
    "164931005": "STE",
}

#: Standard 12-lead order of every signal in xecg (rows of a 12 x N array).
LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF",
                          "V1", "V2", "V3", "V4", "V5", "V6")
NUM_LEADS = len(LEADS)
_LEAD_ALIASES = {name.upper(): name for name in LEADS}

#: Groups the official CPSC scorer reports besides the per-class F1.
CPSC_SCORER_GROUPS: dict[str, tuple[str, ...]] = {
    "Faf": ("AF",),
    "Fblock": ("I-AVB", "LBBB", "RBBB"),
    "Fpc": ("PAC", "PVC"),
    "Fst": ("STD", "STE"),
}


def canonical_lead(name: str) -> str | None:
    """Standard spelling of a lead name (``avr`` -> ``aVR``), or None if it is not one of the 12."""
    return _LEAD_ALIASES.get(name.strip().upper())


def class_of_token(token: str) -> str | None:
    """Class name for one diagnosis token: an abbreviation, a SNOMED code or a CPSC code 1-9
    (``2`` or ``2.0``).

    Returns None for anything outside the nine classes (e.g. other SNOMED codes).
    """
    token = token.strip()
    if token in CLASS_INDEX:
        return token
    if token in SNOMED_CODES:
        return SNOMED_CODES[token]
    code = _CPSC_CODE.fullmatch(token)
    if code and int(code.group(1)) in CPSC_CODES:
        return CPSC_CODES[int(code.group(1))]
    by_upper = {c.upper(): c for c in CLASSES}
    return by_upper.get(token.upper())


def parse_labels(tokens: Iterable[str]) -> tuple[np.ndarray, list[str]]:
    """Multi-hot vector (9,) float32 for diagnosis tokens, plus the tokens outside the nine classes.

    Duplicates count once (CPSC's ``A0953`` is labelled ``6,6``).
    """
    y = np.zeros(NUM_CLASSES, dtype=np.float32)
    unknown: list[str] = []
    for token in tokens:
        token = token.strip()
        if not token:
            continue
        name = class_of_token(token)
        if name is None:
            unknown.append(token)
        else:
            y[CLASS_INDEX[name]] = 1.0
    return y, unknown


def multi_hot(names: Iterable[str]) -> np.ndarray:
    """Multi-hot (9,) float32 from class names; raises KeyError on an unknown name."""
    y = np.zeros(NUM_CLASSES, dtype=np.float32)
    for name in names:
        y[CLASS_INDEX[name]] = 1.0
    return y


def names_of(y: np.ndarray | Iterable[float]) -> list[str]:
    """Class names present in a multi-hot vector (values > 0.5), in canonical order."""
    return [CLASSES[i] for i, v in enumerate(y) if v > 0.5]
