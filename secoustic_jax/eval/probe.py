"""Disentanglement probe (evaluation.md §6): tokens should carry content, G the speaker.

A linear probe (standardisation + multinomial logistic regression, C = 1, lbfgs,
max_iter 2000) is cross-validated with GroupKFold so the test folds hold unseen groups:
- speaker probe: predict the voice, grouped by sentence (test sentences are unseen);
- content probe: predict the sentence, grouped by voice (test voices are unseen).
The scaler is fitted inside each training fold so no test statistics leak into training.
Accuracy is pooled over folds (correct / N); chance = 1 / number of classes.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

PROBE_C = 1.0
PROBE_MAX_ITER = 2000
DEFAULT_SPLITS = 5


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    accuracy: float  # pooled over all folds
    chance: float  # 1 / n_classes
    n_classes: int
    n_samples: int
    n_splits: int
    fold_accuracies: tuple[float, ...]


def _check_inputs(features, labels, groups, n_splits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(features, np.float64)
    y, g = np.asarray(labels), np.asarray(groups)
    if x.ndim != 2:
        raise ValueError(f"probe features must be [N, D], got {x.shape}")
    if y.shape != (x.shape[0],) or g.shape != (x.shape[0],):
        raise ValueError(f"labels {y.shape} and groups {g.shape} must both be [N={x.shape[0]}]")
    if not np.isfinite(x).all():
        raise ValueError("probe features contain NaN or Inf")
    if np.unique(y).size < 2:
        raise ValueError("probe needs at least 2 classes")
    if np.unique(g).size < n_splits:
        raise ValueError(f"GroupKFold({n_splits}) needs ≥ {n_splits} groups, got {np.unique(g).size}")
    return x, y, g


def probe_accuracy(features, labels, groups, n_splits: int = DEFAULT_SPLITS) -> ProbeResult:
    """Cross-validated linear-probe accuracy of `labels [N]` from `features [N, D]`, with
    folds from GroupKFold(n_splits) over `groups [N]`. Deterministic (no shuffling)."""
    from sklearn.linear_model import LogisticRegression  # optional: scikit-learn (eval extra)
    from sklearn.model_selection import GroupKFold  # optional: scikit-learn (eval extra)
    from sklearn.pipeline import make_pipeline  # optional: scikit-learn (eval extra)
    from sklearn.preprocessing import StandardScaler  # optional: scikit-learn (eval extra)

    x, y, g = _check_inputs(features, labels, groups, n_splits)
    correct = 0
    folds = []
    for train, test in GroupKFold(n_splits=n_splits).split(x, y, g):
        # lbfgs on >2 classes is the multinomial model (sklearn ≥ 1.5 has no multi_class).
        clf = make_pipeline(StandardScaler(),
                            LogisticRegression(C=PROBE_C, solver="lbfgs", max_iter=PROBE_MAX_ITER))
        clf.fit(x[train], y[train])
        hits = int(np.sum(clf.predict(x[test]) == y[test]))
        correct += hits
        folds.append(hits / test.size)
    n_classes = int(np.unique(y).size)
    return ProbeResult(correct / x.shape[0], 1.0 / n_classes, n_classes, int(x.shape[0]),
                       n_splits, tuple(folds))


def speaker_probe(features, voices, sentences, n_splits: int = DEFAULT_SPLITS) -> ProbeResult:
    """Predict the voice `[N]` from `features [N, D]`; folds grouped by sentence `[N]`."""
    return probe_accuracy(features, voices, sentences, n_splits)


def content_probe(features, voices, sentences, n_splits: int = DEFAULT_SPLITS) -> ProbeResult:
    """Predict the sentence `[N]` from `features [N, D]`; folds grouped by voice `[N]`."""
    return probe_accuracy(features, sentences, voices, n_splits)


def merge_voices(voices: Sequence[str], same_speaker: Mapping[str, str]) -> np.ndarray:
    """Relabels voices that share an underlying speaker (e.g. {"flite_slt": "festival_slt"})
    so the speaker probe does not count them as different classes (§6)."""
    return np.asarray([same_speaker.get(v, v) for v in voices])


def bag_of_tokens(tokens, num_codes: int = 6561) -> np.ndarray:
    """Feature (a): L1-normalised token histogram `[num_codes]` of one utterance's tokens `[T']`."""
    t = np.asarray(tokens)
    if t.ndim != 1 or t.size == 0 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"bag_of_tokens expects a non-empty integer [T'] array, got {t.shape} {t.dtype}")
    if t.min() < 0 or t.max() >= num_codes:
        raise ValueError(f"token indices outside [0, {num_codes})")
    h = np.bincount(t, minlength=num_codes).astype(np.float64)
    return h / h.sum()


def run_probes(features: Mapping[str, np.ndarray], voices, sentences,
               n_splits: int = DEFAULT_SPLITS) -> dict[str, dict[str, dict]]:
    """Both probes for every named feature set (e.g. "tokens", "semantic", "G").

    Returns {feature: {"speaker": ProbeResult as dict, "content": ...}} for report.json.
    """
    out: dict[str, dict[str, dict]] = {}
    for name, x in features.items():
        out[name] = {
            "speaker": dataclasses.asdict(speaker_probe(x, voices, sentences, n_splits)),
            "content": dataclasses.asdict(content_probe(x, voices, sentences, n_splits)),
        }
    return out
