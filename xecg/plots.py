"""Attention over the 12 leads: the picture a cardiologist checks an explanation with."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: training machines and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from xecg.classes import LEADS  # noqa: E402


def upsample(values: np.ndarray, length: int) -> np.ndarray:
    """Stretch a pooled map ``T'`` to ``length`` samples (each pooled step covers T / T')."""
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    if values.size == 0:
        return np.zeros(length, dtype=np.float32)
    centres = (np.arange(values.size) + 0.5) * length / values.size
    return np.interp(np.arange(length), centres, values).astype(np.float32)


def plot_attention(
    signal: np.ndarray,
    fs: float,
    attention: np.ndarray | None,
    response_maps: dict[str, np.ndarray] | None = None,
    title: str = "",
    evidence: Sequence[tuple[str, int, int]] = (),
) -> plt.Figure:
    """Figure of a record's 12 leads with the attention map A shaded behind them.

    signal: ``12 x T`` (mV); attention: ``T'`` or ``1 x T'`` in [0, 1] (None for models without
    one); response_maps: class name -> ``T'`` class response map R_c (drawn in a bottom panel);
    evidence: ``(label, start, end)`` sample intervals, marked on the time axis.
    """
    signal = np.asarray(signal)
    n_leads, length = signal.shape
    t = np.arange(length) / fs
    rows = n_leads + (1 if response_maps else 0)
    fig, axes = plt.subplots(rows, 1, figsize=(14, 0.85 * rows + 1.2), sharex=True,
                             gridspec_kw={"hspace": 0.05, "left": 0.04, "right": 0.99,
                                          "top": 0.945, "bottom": 0.05})
    axes = np.atleast_1d(axes)
    att = upsample(attention, length) if attention is not None else None
    if att is not None:
        # A often spans a narrow band (e.g. 0.7-0.9): shade it over its own range so that where
        # the model looks stands out, and state the range in the title.
        a_lo, a_hi = float(att.min()), float(att.max())
        title = f"{title}\nattention A in [{a_lo:.2f}, {a_hi:.2f}], shaded over that range"
        att = (att - a_lo) / (a_hi - a_lo) if a_hi - a_lo > 1e-6 else np.full_like(att, 0.5)
    for lead in range(n_leads):
        ax = axes[lead]
        y = signal[lead]
        lo, hi = float(np.min(y)), float(np.max(y))
        pad = 0.1 * (hi - lo + 1e-3)
        if att is not None:
            ax.imshow(att[None, :], aspect="auto", cmap="Reds", vmin=0.0, vmax=1.0, alpha=0.45,
                      extent=(0, length / fs, lo - pad, hi + pad), interpolation="nearest")
        ax.plot(t, y, color="black", linewidth=0.6)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_ylabel(LEADS[lead] if n_leads == len(LEADS) else str(lead), rotation=0,
                      ha="right", va="center", fontsize=8)
        ax.set_yticks([])
        ax.tick_params(axis="x", which="both", bottom=False, labelbottom=False)
        for _label, start, end in evidence:
            ax.axvspan(start / fs, end / fs, ymin=0.92, ymax=1.0, color="tab:blue", alpha=0.5,
                       linewidth=0)
    if response_maps:
        ax = axes[-1]
        for name, r in response_maps.items():
            ax.plot(t, upsample(r, length), linewidth=1.2, label=f"R[{name}]")
        if att is not None:
            ax.plot(t, att * max((float(np.max(r)) for r in response_maps.values()), default=1.0),
                    color="tab:red", linestyle="--", linewidth=1.0, label="A (range-scaled)")
        ax.legend(loc="upper right", fontsize=7, ncol=len(response_maps) + 1)
        ax.set_ylabel("maps", rotation=0, ha="right", va="center", fontsize=8)
        ax.set_yticks([])
    axes[-1].tick_params(axis="x", which="both", bottom=True, labelbottom=True)
    axes[-1].set_xlabel("time (s)")
    if title:
        fig.suptitle(title, fontsize=10, y=0.998)
    return fig


def save_figure(fig: plt.Figure, path) -> None:
    """Write a PNG and free the figure (long runs plot hundreds)."""
    fig.savefig(path, dpi=80)
    plt.close(fig)
