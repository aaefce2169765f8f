"""The 12-lead figure a cardiologist checks an explanation with, and the PNG writer.

:func:`plot_ecg` draws the standard printout on ECG paper: 3 rows x 4 columns of 2.5 s leads
(I/aVR/V1/V4, II/aVL/V2/V5, III/aVF/V3/V6) and a 10 s lead II rhythm strip, at 25 mm/s and
10 mm/mV (minor grid 1 mm = 0.04 s / 0.1 mV, major 5 mm), a 1 mV calibration pulse before each
row, and a map shaded over time; below, one strip per label with that label's map. Each trace
is clipped to its own 30 mm row (3 mV), as on printouts, so an artefact stays in its lead. The
page is A4 landscape (297 x 210 mm, 1169 x 827 px at :data:`ECG_DPI`) whatever the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")  # headless: training machines and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from xecg.classes import LEADS  # noqa: E402

#: The page: A4 landscape, in mm, and the resolution it is saved at (1 mm = 3.9 px).
PAGE_MM = (297.0, 210.0)
ECG_DPI = 100
MM_PER_S = 25.0
MM_PER_MV = 10.0
WINDOW_S = 10.0
COLUMN_S = 2.5
LEAD_IN_S = 0.4  # room for the calibration pulse before each row
ROW_MV = 3.0  # height of a lead row: 30 mm
#: The standard layout: rows of (lead names), each row 4 columns of 2.5 s.
LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
RHYTHM_LEAD = "II"

GRID_MINOR = "#f6c9c9"
GRID_MAJOR = "#e58a8a"
SHADE_RGB = (0.10, 0.36, 0.85)
EVIDENCE_COLOR = "#1a8a3a"
#: Transparent to blue: the grid stays visible where the map is low.
SHADE_CMAP = LinearSegmentedColormap.from_list(
    "xecg_shade", [(*SHADE_RGB, 0.0), (*SHADE_RGB, 0.55)])


@dataclass
class MapStrip:
    """A strip under the leads: ``values`` (one per sample of the whole record) drawn over the
    window, scaled to ``[lo, hi]`` (default ``[0, max]``), named ``name`` with a ``note``
    (probability, predicted or true), and ``evidence`` sample intervals marked in green."""

    name: str
    values: np.ndarray
    note: str = ""
    evidence: Sequence[tuple[int, int]] = field(default_factory=tuple)
    lo: float | None = None
    hi: float | None = None


def _scaled(values: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    lo = 0.0 if lo is None else lo
    hi = float(np.max(values)) if hi is None and values.size else (hi or 0.0)
    if hi - lo <= 1e-12:
        return np.zeros_like(values) if hi <= 0 else np.full_like(values, 0.5)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0)


def _axes(fig: plt.Figure, x_mm: float, y_mm: float, w_mm: float, h_mm: float) -> plt.Axes:
    """Axes at a position on the page given in mm from its bottom-left corner."""
    W, H = PAGE_MM
    ax = fig.add_axes((x_mm / W, y_mm / H, w_mm / W, h_mm / H))
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    return ax


def _lines(lo: float, hi: float, step: float) -> np.ndarray:
    """Multiples of ``step`` in ``[lo, hi]`` (grid positions anchored at 0, as on ECG paper)."""
    k = np.arange(np.ceil(lo / step - 1e-6), np.floor(hi / step + 1e-6) + 1)
    return k * step


def _paper(ax: plt.Axes, x0: float, x1: float, y0: float, y1: float,
           horizontal: bool = True) -> None:
    """ECG paper over ``[x0, x1] s x [y0, y1] mV``: 1 mm and 5 mm lines. Drawn as two line
    collections, not as tick grids (thousands of tick objects made a page take 15 s)."""
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xticks([])
    ax.set_yticks([])
    for mm, color, width in ((1, GRID_MINOR, 0.35), (5, GRID_MAJOR, 0.7)):
        xs = _lines(x0, x1, mm / MM_PER_S)
        segs = [((x, y0), (x, y1)) for x in xs]
        if horizontal:
            segs += [((x0, y), (x1, y)) for y in _lines(y0, y1, mm / MM_PER_MV)]
        ax.add_collection(LineCollection(segs, colors=color, linewidths=width, zorder=0.5))


def _shade(ax: plt.Axes, shade: np.ndarray | None, a: int, b: int, fs: float,
           y0: float, y1: float) -> None:
    if shade is None or b <= a:
        return
    ax.imshow(shade[None, a:b], aspect="auto", cmap=SHADE_CMAP, vmin=0.0, vmax=1.0,
              extent=(a / fs, b / fs, y0, y1), interpolation="nearest", zorder=0.6)


def _pulse(ax: plt.Axes, t0: float) -> None:
    """1 mV x 0.2 s calibration pulse ending ``0.04`` s before ``t0``."""
    x = t0 - np.array([0.36, 0.32, 0.32, 0.12, 0.12, 0.04])
    ax.plot(x, [0, 0, 1, 1, 0, 0], color="black", linewidth=0.9, zorder=3)


def _trace(ax: plt.Axes, signal: np.ndarray, a: int, b: int, fs: float) -> None:
    """The lead over samples ``[a, b)``, baseline at the panel's middle, clipped to its panel
    as on a printout: an artefact of several mV would cross the title and the other rows."""
    if b <= a:
        return
    y = signal[a:b]
    ax.plot(np.arange(a, b) / fs, y - np.median(y), color="black", linewidth=0.7, zorder=3,
            clip_on=True)


def plot_ecg(signal: np.ndarray, fs: float, *, start_s: float = 0.0,
             shade: np.ndarray | None = None, shade_range: tuple[float, float] | None = None,
             strips: Sequence[MapStrip] = (), title: Sequence[str] | str = "") -> plt.Figure:
    """The 12-lead page of ``signal`` (``12 x N`` mV at ``fs``, leads in :data:`LEADS` order)
    from ``start_s`` for 10 s, with ``shade`` (one value per sample, e.g. a map at input
    resolution) shaded behind the leads scaled to ``shade_range`` (default ``[0, max]``) and
    one :class:`MapStrip` per label below. Axes: 12 lead panels, the rhythm strip, one per
    strip, in that order. ``title``: lines above the leads."""
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 2 or signal.shape[0] != len(LEADS):
        raise ValueError(f"signal must be {len(LEADS)} x N, got {signal.shape}")
    n = signal.shape[1]
    first = int(round(start_s * fs))
    t0 = first / fs
    shade_n = None
    if shade is not None:
        lo, hi = shade_range if shade_range is not None else (None, None)
        shade_n = _scaled(np.asarray(shade).reshape(-1)[:n], lo, hi)

    W, H = PAGE_MM
    # Whole pixels at ECG_DPI (1169 x 827), so the PNG is exactly the page.
    # Not through pyplot: no global figure registry to fill (or to forget to close).
    fig = Figure(figsize=(round(W / 25.4 * ECG_DPI) / ECG_DPI,
                          round(H / 25.4 * ECG_DPI) / ECG_DPI), dpi=ECG_DPI)
    lead_in_mm = LEAD_IN_S * MM_PER_S
    col_mm = COLUMN_S * MM_PER_S
    width_mm = lead_in_mm + WINDOW_S * MM_PER_S
    left = (W - width_mm) / 2
    row_mm = ROW_MV * MM_PER_MV
    top = H - 22.0  # below three title lines
    half = ROW_MV / 2

    for r, names in enumerate(LAYOUT + ((RHYTHM_LEAD,),)):
        y = top - (r + 1) * row_mm
        rhythm = len(names) == 1
        for c, name in enumerate(names):
            lead = LEADS.index(name)
            seconds = WINDOW_S if rhythm else COLUMN_S
            c0 = t0 + c * COLUMN_S  # first second of this panel
            x_mm = left if c == 0 else left + lead_in_mm + c * col_mm
            w_mm = seconds * MM_PER_S + (lead_in_mm if c == 0 else 0.0)
            ax = _axes(fig, x_mm, y, w_mm, row_mm)
            _paper(ax, c0 - (LEAD_IN_S if c == 0 else 0.0), c0 + seconds, -half, half)
            a = min(n, max(0, first + int(round(c * COLUMN_S * fs))))
            b = min(n, first + int(round((c * COLUMN_S + seconds) * fs)))
            _shade(ax, shade_n, a, b, fs, -half, half)
            _trace(ax, signal[lead], a, b, fs)
            if c == 0:
                _pulse(ax, c0)
            else:  # the lead-change mark of ECG printouts
                ax.plot([c0, c0], [-0.35, 0.35], color="black", linewidth=0.9, zorder=3)
            ax.text(c0 + 0.05, half - 0.12, name, fontsize=9, fontweight="bold", va="top",
                    ha="left", zorder=4)

    strips = list(strips)
    bottom = 9.0
    space = top - 4 * row_mm - 3.0 - bottom
    if strips:
        h = min(20.0, space / len(strips))
        gap = min(1.5, h * 0.12)
        for k, strip in enumerate(strips):
            y = top - 4 * row_mm - 3.0 - (k + 1) * h
            ax = _axes(fig, left, y + gap / 2, width_mm, h - gap)
            _strip(ax, strip, first, n, fs, t0)
            if k == len(strips) - 1:
                _time_labels(ax, t0)
    else:
        _time_labels(fig.axes[-1], t0)
    lines = [title] if isinstance(title, str) else list(title)
    for k, line in enumerate(lines[:3]):
        fig.text(left / W, 1 - (4.0 + 5.5 * k) / H, line,
                 fontsize=10 if k == 0 else 8.5, fontweight="bold" if k == 0 else "normal",
                 ha="left", va="top")
    return fig


def _strip(ax: plt.Axes, strip: MapStrip, first: int, n: int, fs: float, t0: float) -> None:
    _paper(ax, t0 - LEAD_IN_S, t0 + WINDOW_S, 0.0, 1.0, horizontal=False)
    b = min(n, first + int(round(WINDOW_S * fs)))
    values = np.asarray(strip.values, dtype=np.float64).reshape(-1)[:n]
    v = _scaled(values, strip.lo, strip.hi)[first:b]
    t = np.arange(first, b) / fs
    ax.fill_between(t, 0, v * 0.8, color=SHADE_RGB, alpha=0.45, linewidth=0, zorder=2)
    ax.plot(t, v * 0.8, color=SHADE_RGB, linewidth=0.8, zorder=2)
    for a_ev, b_ev in strip.evidence:
        lo_t, hi_t = max(a_ev, first) / fs, min(b_ev, b) / fs
        if hi_t > lo_t:
            ax.fill_between([lo_t, hi_t], 0.86, 1.0, color=EVIDENCE_COLOR, alpha=0.8,
                            linewidth=0, zorder=3)
    ax.text(t0 - LEAD_IN_S + 0.03, 0.5, strip.name, fontsize=8.5, fontweight="bold",
            va="center", ha="left", zorder=4)
    if strip.note:
        ax.text(t0 + WINDOW_S - 0.03, 0.80, strip.note, fontsize=7, va="top", ha="right",
                zorder=4, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75,
                                "pad": 0.6})


def _time_labels(ax: plt.Axes, t0: float) -> None:
    """Seconds of the record under the bottom panel, every second."""
    y0 = ax.get_ylim()[0]
    for s in range(int(np.ceil(t0)), int(np.floor(t0 + WINDOW_S)) + 1):
        ax.text(s, y0, f"{s} s", fontsize=7, ha="center", va="top", transform=ax.transData,
                clip_on=False)


def save_figure(fig: plt.Figure, path, dpi: float = 80, writer: str | None = None) -> None:
    """Write a PNG and free the figure (long runs plot hundreds). ``writer``: the command that
    writes it (``xecg predict``), kept in the PNG's ``Software`` text (:func:`page_writer`), so
    that its next run into the same folder knows its pages from the user's files."""
    fig.savefig(path, dpi=dpi, metadata={"Software": writer} if writer else None)
    plt.close(fig)


def page_writer(path) -> str | None:
    """The ``writer`` a PNG was saved with by :func:`save_figure` (``xecg predict``), or None:
    another PNG, another file, or one that cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:  # reads the chunks before the pixels only
            if image.format != "PNG":
                return None
            software = image.info.get("Software")
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return software if isinstance(software, str) and software.startswith("xecg ") else None
