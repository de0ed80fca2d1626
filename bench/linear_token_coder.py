"""A linear coder with the official token format: how far 8 ternary digits a frame go.

    python bench/linear_token_coder.py --corpus cache/demo_corpus_default \
        --out bench/results/linear_token_coder.json

The codec's tokens are 8 digits of 3 levels at 86 Hz (12.68 bits a frame) plus one global
vector G. This bench codes the same log-mel frames with a *linear* closed-loop predictive
coder (DPCM) held to that format, to put a number beside the trained token path's mel MSE:
- side information: the utterance's per-bin mean (80 floats; G's role), subtracted first;
- prediction: x_hat_t = W [x_hat_{t-1}, ..., x_hat_{t-order}, 1], fitted by least squares
  on true past frames of the training split, applied to the decoder's own past outputs;
- the residual r_t = x_t - prediction goes through its top-8 principal directions, each
  quantised to 3 levels with the Lloyd-Max quantiser of a Gaussian (thresholds +-0.612
  sigma, outputs 0 and +-1.224 sigma): 3^8 codes a frame, the official codebook size.
The residual's covariance depends on the coder's own errors, so the principal directions
are re-estimated from the closed-loop residuals of the training split `--iterations`
times. Also reported: the same coder without the utterance mean, and the Gaussian
rate-distortion value of the closed-loop residual at 12.68 bits a frame (reverse
water-filling: an ideal vector quantiser, not reachable frame by frame).
The MSE is over all 80 bins and every frame of the first `--limit` utterances of a split
(sorted by id), the score bench/ab_recipe.py reports as `mel_token`.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import platform
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ab_recipe import _utterances, write_json  # noqa: E402  (bench/ is not a package)

LLOYD_MAX_3 = (0.6120, 1.2240)  # threshold, output level of the 3-level Gaussian quantiser
BITS_3_8 = 8 * math.log2(3)


def lagged(x: np.ndarray, order: int) -> np.ndarray:
    """x [T, C] -> [T, order * C + 1]: frames t-1 .. t-order (zeros before 0) and a 1."""
    t, c = x.shape
    cols = [np.concatenate([np.zeros((k, c)), x[:t - k]]) for k in range(1, order + 1)]
    return np.concatenate(cols + [np.ones((t, 1))], axis=1)


def fit_predictor(utts: list[np.ndarray], order: int) -> np.ndarray:
    """Least squares W [order * C + 1, C] on true past frames."""
    x = np.concatenate([lagged(u, order) for u in utts])
    y = np.concatenate(utts)
    return np.linalg.lstsq(x, y, rcond=None)[0]


def lloyd_max_3(y: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Each column of y [.., K] quantised to {-1.224, 0, 1.224} sigma_k."""
    thr, out = LLOYD_MAX_3
    z = y / sigma
    return np.where(z > thr, out, np.where(z < -thr, -out, 0.0)) * sigma


def code(x: np.ndarray, w: np.ndarray, order: int, basis: np.ndarray, sigma: np.ndarray):
    """Closed-loop DPCM of x [T, C] -> (x_hat [T, C], residuals r [T, C])."""
    t, c = x.shape
    hat = np.zeros((t + order, c))
    res = np.zeros((t, c))
    for i in range(t):
        past = np.concatenate([hat[order + i - k] for k in range(1, order + 1)] + [np.ones(1)])
        pred = past @ w
        res[i] = x[i] - pred
        hat[order + i] = pred + lloyd_max_3(res[i] @ basis, sigma) @ basis.T
    return hat[order:], res


def directions(res: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Top `dims` principal directions [C, dims] of res [N, C] and their std [dims]."""
    lam, vec = np.linalg.eigh(np.cov(res.T, bias=True))
    order = np.argsort(lam)[::-1][:dims]
    return vec[:, order], np.sqrt(lam[order])


def water_filling(lam: np.ndarray, bits: float) -> float:
    """Per-component mean distortion of a Gaussian with eigenvalues lam at `bits` a vector."""
    lo, hi = 1e-12, float(lam.max())
    for _ in range(200):
        theta = math.sqrt(lo * hi)
        rate = float(np.sum(np.maximum(0.0, 0.5 * np.log2(lam / theta))))
        lo, hi = (theta, hi) if rate > bits else (lo, theta)
    return float(np.mean(np.minimum(theta, lam)))


def train_coder(train: list[np.ndarray], order: int, dims: int, iterations: int):
    """Predictor, then principal directions re-estimated from closed-loop residuals."""
    w = fit_predictor(train, order)
    res = np.concatenate([u - lagged(u, order) @ w for u in train])  # open loop to start
    for _ in range(iterations):
        basis, sigma = directions(res, dims)
        res = np.concatenate([code(u, w, order, basis, sigma)[1] for u in train])
    basis, sigma = directions(res, dims)
    return w, basis, sigma, np.linalg.eigvalsh(np.cov(res.T, bias=True))


def evaluate(utts: list[np.ndarray], coder, order: int) -> float:
    w, basis, sigma, _ = coder
    err = [np.sum((code(u, w, order, basis, sigma)[0] - u) ** 2) for u in utts]
    return float(np.sum(err) / sum(u.size for u in utts))


def run(corpus: pathlib.Path, limit: int, order: int, dims: int, iterations: int) -> dict:
    splits = {s: [m.astype(np.float64) for _, m in _utterances(corpus, s, limit)]
              for s in ("train", "valid", "test_unseen")}
    out = {}
    for side in ("utterance_mean", "none"):
        centre = (lambda u: u - u.mean(axis=0)) if side == "utterance_mean" else (lambda u: u)
        data = {s: [centre(u) for u in us] for s, us in splits.items()}
        coder = train_coder(data["train"], order, dims, iterations)
        out[side] = {"mse": {s: evaluate(data[s], coder, order) for s in ("valid", "test_unseen")},
                     "gaussian_rd_at_12.68_bits": water_filling(coder[3], BITS_3_8),
                     "residual_sigma": [float(s) for s in coder[2]]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--limit", type=int, default=60, help="utterances per split")
    ap.add_argument("--order", type=int, default=2)
    ap.add_argument("--dims", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    res = {"corpus": args.corpus, "limit": args.limit, "order": args.order, "dims": args.dims,
           "levels": 3, "iterations": args.iterations, "machine": platform.machine(),
           "results": run(pathlib.Path(args.corpus), args.limit, args.order, args.dims,
                          args.iterations)}
    write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
