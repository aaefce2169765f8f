"""One record's explanation page: the 12-lead printout with a map shaded and one strip per label.

:func:`explanation_figure` is the only picture of a model's explanation in xecg: ``xecg
explain``, ``xecg predict`` and the training callback's W&B images all draw it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xecg.classes import CLASS_INDEX, CLASSES
from xecg.explain.maps import default_methods, explain
from xecg.plots import WINDOW_S, MapStrip, plot_ecg

#: How each method's maps are named in titles and strips.
_SHADED = {"attention": "attention map A", "cam": "class response map R",
           "gradcam": "Grad-CAM", "ig": "Integrated Gradients (|attr| summed over leads)"}
_STRIP = {"attention": "R", "cam": "R", "gradcam": "Grad-CAM", "ig": "IG"}
#: The narrowest range a shared map (A, in [0, 1]) is shaded over.
MIN_SPAN = 0.1


def window_start(n: int, fs: float, start_s: float) -> float:
    """``start_s`` clamped so that the 10 s window lies in the record (0 for shorter ones)."""
    return float(min(max(0.0, start_s), max(0.0, (n - WINDOW_S * fs) / fs)))


def explanation_figure(module, signal: np.ndarray, fs: float, record_id: str,
                       true_labels: Sequence[str], method: str | None = None, *,
                       start_s: float = 0.0, evidence: Sequence[tuple[str, int, int]] = (),
                       out: dict | None = None, ig_steps: int = 32, title_note: str = ""):
    """The page of one record (``12 x N`` mV at the model's rate ``fs``) and its caption.

    ``method``: ``attention`` (A shaded, R_c in the strips), ``cam``, ``gradcam`` or ``ig``
    (the most probable shown label's map shaded, each label's map in its strip); default
    ``attention`` for xECGNet, ``gradcam`` for other models. Strips: every predicted or true
    label. ``out``: the record's ``module.predict_record`` result if already computed (its
    probabilities, those of the test stage, are the ones shown). ``evidence``: ``(label,
    start, end)`` sample intervals, marked in that label's strip. ``title_note``: said beside
    the predicted labels (where probabilities and maps come from, when not from one model).
    Returns (figure, caption).
    """
    signal = np.asarray(signal, dtype=np.float32)
    n = signal.shape[1]
    out = module.predict_record(signal) if out is None else out
    probs = out["probs"].float().cpu().numpy()
    predicted = [c for c, on in zip(CLASSES, out["labels"].cpu().numpy()) if on]
    true_labels = list(true_labels)
    shown = [c for c in CLASSES if c in predicted or c in true_labels]
    method = method or default_methods(module.net)[0]
    # The class whose map is shaded for class-map methods: the most probable shown label.
    ranked = sorted(shown, key=lambda c: -probs[CLASS_INDEX[c]]) or [CLASSES[probs.argmax()]]
    lead_class = ranked[0]
    ex = explain(module.net, module.model_input(signal), method,
                 [CLASS_INDEX[c] for c in {*shown, lead_class}], ig_steps=ig_steps)

    if ex.shared is not None:
        shade = ex.shared
        lo, hi = float(shade.min()), float(shade.max())
        # A is a sigmoid in [0, 1]: shaded over its own range, but never one narrower than
        # MIN_SPAN, so that a flat map (0.16-0.17) stays pale instead of looking decisive.
        shade_range = (lo, max(hi, lo + MIN_SPAN))
        span = (f"its range {lo:.2f}-{hi:.2f}" if hi - lo >= MIN_SPAN else
                f"{lo:.2f}-{lo + MIN_SPAN:.2f} (its range {lo:.2f}-{hi:.2f}: nearly flat)")
        shaded = (f"shaded: {_SHADED[method]}, light to dark over {span}"
                  f"  |  strips: R of each label, 0 to its max")
    else:
        shade = ex.classes[CLASS_INDEX[lead_class]]
        shade_range = (0.0, float(shade.max()))
        shaded = (f"shaded: {_SHADED[method]} of {lead_class} (most probable label shown), "
                  f"0 to its max  |  strips: the same for each label")
    if evidence:
        shaded += "  |  green: the label's evidence"

    strips = []
    for c in shown:
        values = ex.classes[CLASS_INDEX[c]]
        role = ", ".join(r for r, on in (("predicted", c in predicted),
                                         ("true", c in true_labels)) if on)
        note = (f"{_STRIP[method]}[{c}]  p {probs[CLASS_INDEX[c]]:.2f}  {role}  "
                f"max {float(values.max()):.3g}")
        strips.append(MapStrip(c, values, note,
                               [(a, b) for lab, a, b in evidence if lab == c]))

    t0 = window_start(n, fs, start_s)
    predicted_text = ", ".join(f"{c} {probs[CLASS_INDEX[c]]:.2f}" for c in predicted) or (
        f"none (highest {CLASSES[probs.argmax()]} {probs.max():.2f})")
    title = [f"{record_id}   {n / fs:.1f} s record, shown {t0:.1f}-{t0 + WINDOW_S:.1f} s   "
             f"25 mm/s, 10 mm/mV",
             f"predicted: {predicted_text}    true: {', '.join(true_labels) or 'unknown'}",
             shaded]
    if title_note:  # beside the labels it qualifies (the page has room for three lines)
        title[1] += f"    ({title_note})"
    fig = plot_ecg(signal, fs, start_s=t0, shade=shade, shade_range=shade_range, strips=strips,
                   title=title)
    likely = ", ".join(f"{c} {p:.2f}" for c, p in zip(CLASSES, probs) if p >= 0.1)
    caption = (f"{record_id}  true: {'+'.join(true_labels) or '-'}  "
               f"predicted: {'+'.join(predicted) or '-'}  ({likely})  [{method}]")
    return fig, caption
