"""Training logs: tensorboardX scalars/images/audio on process 0, codebook-usage windows,
a console progress bar, and a JSON-lines history (used by docs plots and tests).
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
from tqdm import tqdm

from secoustic_jax.atomic import write_text

ZERO_CODE_NAME = "codebook/zero_code_fraction"


def codebook_window_stats(counts: np.ndarray) -> dict[str, float]:
    """Usage statistics of a token histogram [K] pooled over a window of steps.

    usage = distinct codes / K; perplexity = exp(H) of the empirical distribution;
    max_freq = share of the most frequent code.
    """
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total <= 0:
        return {"codebook/usage": 0.0, "codebook/perplexity": 0.0, "codebook/max_freq": 0.0}
    p = counts[counts > 0] / total
    return {"codebook/usage": float((counts > 0).sum() / counts.size),
            "codebook/perplexity": float(math.exp(-(p * np.log(p)).sum())),
            "codebook/max_freq": float(p.max())}


class MetricWindow:
    """Running means of step metrics between two log points; code counts are summed."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.n = 0
        self.codes = None

    def add(self, metrics: dict) -> None:
        self.n += 1
        for k, v in metrics.items():
            if k == "code_counts":
                v = np.asarray(v, np.float64)
                self.codes = v if self.codes is None else self.codes + v
            else:
                self.sums[k] = self.sums.get(k, 0.0) + float(v)

    def summary(self) -> dict[str, float]:
        out = {k: v / max(self.n, 1) for k, v in self.sums.items()}
        if self.codes is not None:
            out.update(codebook_window_stats(self.codes))
        return out

    def reset(self) -> None:
        self.__init__()


class Logger:
    """tensorboardX + JSON lines + tqdm; silent on processes other than 0."""

    def __init__(self, workdir, *, enabled: bool, progress: bool, total_steps: int, initial: int):
        self.enabled = enabled
        self.writer = None
        self.bar = None
        self.history_path = pathlib.Path(workdir) / "history.jsonl"
        if not enabled:
            return
        from tensorboardX import SummaryWriter  # optional: tensorboardX (heavy)
        superseded = truncate_history(workdir, initial)
        # purge_step makes TensorBoard drop the superseded events of a killed run too.
        self.writer = SummaryWriter(str(pathlib.Path(workdir) / "tb"),
                                    purge_step=initial + 1 if superseded else None)
        if progress:
            self.bar = tqdm(total=total_steps, initial=initial, dynamic_ncols=True, unit="step")

    def scalars(self, step: int, values: dict, prefix: str = "train") -> None:
        if not self.enabled:
            return
        for k, v in values.items():
            self.writer.add_scalar(f"{prefix}/{k}", v, step)
        with self.history_path.open("a") as f:
            f.write(json.dumps({"step": step, "split": prefix,
                                **{k: float(v) for k, v in values.items()}}) + "\n")

    def progress(self, n: int, postfix: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: f"{v:.3g}" for k, v in postfix.items()}, refresh=False)

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """image [H, W, 3] uint8."""
        if self.enabled:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def audio(self, step: int, tag: str, wave: np.ndarray, sample_rate: int) -> None:
        """wave [L] float in [-1, 1] (tensorboardX wants (L,) or (L, C))."""
        if self.enabled:
            self.writer.add_audio(tag, np.asarray(wave, np.float32).reshape(-1), step,
                                  sample_rate=sample_rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def truncate_history(workdir, step: int) -> int:
    """Drops the history rows after `step` (logged by a run that was killed after its last
    checkpoint; the resumed run logs those steps again) -> rows dropped. Atomic."""
    rows = read_history(workdir)
    keep = [r for r in rows if r["step"] <= step]
    if len(keep) < len(rows):
        write_text(pathlib.Path(workdir) / "history.jsonl",
                   "".join(json.dumps(r) + "\n" for r in keep))
    return len(rows) - len(keep)


def read_history(workdir) -> list[dict]:
    p = pathlib.Path(workdir) / "history.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def plot_history(workdir, out_path, keys=("loss/mel", "loss/acoustic", "loss/contrastive",
                                           "contrastive/acc_s2p", "codebook/usage")) -> str:
    """Loss curves of a run (train solid, valid dots), one panel per key -> PNG path."""
    import matplotlib  # optional: matplotlib (heavy)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional: matplotlib (heavy)

    hist = read_history(workdir)
    last: dict[tuple[str, int], dict] = {}
    for h in hist:  # steps re-done after a resume overwrite the earlier entries
        last[(h["split"], h["step"])] = h
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8))
    for ax, key in zip(axes, keys):
        for split, style in (("train", "-"), ("valid", "o")):
            pts = sorted((s, h[key]) for (sp, s), h in last.items() if sp == split and key in h)
            if pts:
                ax.plot(*zip(*pts), style, label=split, ms=4)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if key.startswith("loss/mel"):
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return str(out_path)
