"""PNG plots for the evaluation report (matplotlib Agg, no pyplot global state).

Figures are built with `matplotlib.figure.Figure` + the Agg canvas directly, so they never
touch the user's interactive backend and are safe in worker processes.
"""

from __future__ import annotations

import pathlib
import re
from typing import Mapping, Sequence

import numpy as np

from secoustic_jax.eval.codebook import ZERO_CODE


def safe_name(*parts: str) -> str:
    """File-system-safe stem from name parts ("E1", "token", "a/b c") -> "E1_token_a_b_c"."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(parts)).strip("_") or "unnamed"


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional: matplotlib (heavy)
    from matplotlib.figure import Figure  # optional: matplotlib (heavy)

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # No timestamps or software tag in the PNG metadata: reruns give identical files.
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def plot_metric_distribution(metric: str, groups: Mapping[str, Sequence[float]],
                             path: pathlib.Path) -> pathlib.Path | None:
    """Overlaid histograms of one metric, one series per "set/condition" label.
    Returns None (no file) when no group has a finite value."""
    finite = {k: np.asarray([v for v in vals if v is not None and np.isfinite(v)], np.float64)
              for k, vals in groups.items()}
    finite = {k: v for k, v in finite.items() if v.size}
    if not finite:
        return None
    lo = min(v.min() for v in finite.values())
    hi = max(v.max() for v in finite.values())
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
    fig = _new_figure(6.0, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    for label, v in sorted(finite.items()):
        ax.hist(v, bins=bins, alpha=0.5, label=f"{label} (n={v.size}, mean={v.mean():.3f})")
    ax.set_xlabel(metric)
    ax.set_ylabel("utterances")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_token_histogram(counts, title: str, path: pathlib.Path) -> pathlib.Path:
    """Token-frequency plots of a pooled histogram `counts [K]`: rank–frequency (log y)
    with the zero code marked, and a histogram of per-code frequencies of used codes."""
    c = np.asarray(counts, np.float64)
    if c.ndim != 1 or c.sum() <= 0:
        raise ValueError("plot_token_histogram needs a non-empty 1-D histogram")
    freq = c / c.sum()
    order = np.argsort(-c, kind="stable")
    fig = _new_figure(9.0, 3.5)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    used = freq[order][freq[order] > 0]
    ax1.semilogy(np.arange(1, used.size + 1), used, lw=1)
    if c.size > ZERO_CODE and c[ZERO_CODE] > 0:
        rank = int(np.nonzero(order == ZERO_CODE)[0][0]) + 1
        ax1.plot([rank], [freq[ZERO_CODE]], "rx", label=f"zero code {ZERO_CODE}")
        ax1.legend(fontsize=7)
    ax1.set_xlabel("rank")
    ax1.set_ylabel("frequency")
    ax1.set_title(f"{title}: {used.size}/{c.size} codes used, M={int(c.sum())}", fontsize=8)
    ax2.hist(np.log10(used), bins=40)
    ax2.set_xlabel("log10 frequency of used codes")
    ax2.set_ylabel("codes")
    return _save(fig, path)


def plot_mel_comparison(ref_mel, deg_mel, title: str, path: pathlib.Path) -> pathlib.Path:
    """Input log-mel `[T, 80]`, decoded log-mel `[T2 ≥ T, 80]` (first T frames) and their
    difference, stacked, with a shared colour scale for the two mels."""
    x, y = np.asarray(ref_mel, np.float64), np.asarray(deg_mel, np.float64)
    if x.ndim != 2 or y.ndim != 2 or y.shape[0] < x.shape[0] or x.shape[1] != y.shape[1]:
        raise ValueError(f"mel comparison needs [T, M] and [T2 >= T, M], got {x.shape}, {y.shape}")
    y = y[: x.shape[0]]
    vmin, vmax = min(x.min(), y.min()), max(x.max(), y.max())
    lim = float(np.abs(x - y).max()) or 1.0
    fig = _new_figure(8.0, 7.0)
    panels = (("input", x, "magma", vmin, vmax), ("decoded", y, "magma", vmin, vmax),
              ("decoded − input", y - x, "coolwarm", -lim, lim))
    for i, (name, m, cmap, lo, hi) in enumerate(panels):
        ax = fig.add_subplot(3, 1, i + 1)
        im = ax.imshow(m.T, origin="lower", aspect="auto", cmap=cmap, vmin=lo, vmax=hi,
                       interpolation="nearest")
        ax.set_title(f"{title}: {name}" if i == 0 else name, fontsize=8)
        ax.set_ylabel("mel bin")
        fig.colorbar(im, ax=ax)
    ax.set_xlabel("frame")
    return _save(fig, path)
