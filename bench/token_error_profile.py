"""Where the token path's mel error lies: spectral envelope or fine structure, loud or quiet
frames, low or high bins, and how it compares with the acoustic path.

    python bench/token_error_profile.py reports/small/work/train --corpus cache/demo_corpus \
        --out bench/results/token_error_profile.json

For the first `--limit` utterances of each split (sorted by id), with the utterance's own G,
the error e = mel_hat - mel [T, 80] of each path is split four ways; every split is exact
(its parts sum to the path's MSE):
- `quefrency`: e through an orthonormal DCT-II over the 80 bins, its energy in coefficient
  bands [0, 1) (level), [1, 6) (spectral tilt and formant envelope), [6, 20) (finer envelope)
  and [20, 80) (harmonics and bin-to-bin detail). An error mostly in the high bands is
  detail a mean-square regression blurs; one in the low bands is the envelope (phones).
- `bins`: by mel band [0, 20), [20, 40), [40, 60), [60, 80).
- `loudness`: by the frame's mean log-mel in the utterance's bottom third (pauses, onsets)
  or top two thirds.
- `temporal`: e over time through a DFT per bin, its energy at modulation frequencies
  below 4 Hz (slow drifts, level over words), 4-16 Hz (syllables and phones) and above
  16 Hz (frame-to-frame detail), at the 86.13 Hz frame rate.
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ab_recipe import _utterances, write_json  # noqa: E402  (bench/ is not a package)

QUEFRENCY_BANDS = ((0, 1), (1, 6), (6, 20), (20, 80))
MODULATION_HZ = (("below_4hz", 0.0, 4.0), ("4_to_16hz", 4.0, 16.0), ("above_16hz", 16.0, 1e9))
BIN_BANDS = ((0, 20), (20, 40), (40, 60), (60, 80))


def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II [n, n]: rows are basis vectors, so sum((D e)^2) = sum(e^2)."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    d = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    d[0] /= np.sqrt(2.0)
    return d


def profile(err: np.ndarray, mel: np.ndarray, frame_hz: float) -> dict:
    """err, mel [T, 80] -> {split: {part: sum of squared error}} (sums, not means, so the
    parts of several utterances add before normalising)."""
    t, c = err.shape
    q = err @ dct_matrix(c).T
    loud = mel.mean(axis=1)
    quiet = loud <= np.quantile(loud, 1 / 3)
    # Parseval over the full DFT: sum |F|^2 / T = sum e^2, each frequency counted once.
    spec = np.abs(np.fft.fft(err, axis=0)) ** 2 / t
    hz = np.abs(np.fft.fftfreq(t, d=1.0 / frame_hz))
    return {
        "total": float(np.sum(err ** 2)), "count": float(t * c),
        "quefrency": {f"{a}-{b}": float(np.sum(q[:, a:b] ** 2)) for a, b in QUEFRENCY_BANDS},
        "bins": {f"{a}-{b}": float(np.sum(err[:, a:b] ** 2)) for a, b in BIN_BANDS},
        "loudness": {"quiet_third": float(np.sum(err[quiet] ** 2)),
                     "loud_two_thirds": float(np.sum(err[~quiet] ** 2))},
        "temporal": {name: float(np.sum(spec[(hz >= lo) & (hz < hi)]))
                     for name, lo, hi in MODULATION_HZ},
    }


def summarise(parts: list[dict]) -> dict:
    """Profiles of several utterances -> MSE and each split's shares of the squared error."""
    total = sum(p["total"] for p in parts)
    out = {"mse": total / sum(p["count"] for p in parts)}
    for split in ("quefrency", "bins", "loudness", "temporal"):
        out[split] = {k: sum(p[split][k] for p in parts) / total for k in parts[0][split]}
    return out


def path_profiles(codec, utts) -> dict:
    """{"acoustic": summary, "token": summary} over the utterances."""
    hop = codec.config.hop
    frame_hz = codec.config.mel.sample_rate / codec.config.mel.hop_length
    acc, tok = [], []
    for _, mel in utts:
        mel = mel[: mel.shape[0] // hop * hop]
        t = mel.shape[0]
        enc = codec.encode_mel(mel[None])
        g = codec.prompt_embedding(mel[None])
        acc.append(profile(codec.decode_acoustic(enc.acoustic)[0, :t] - mel, mel, frame_hz))
        tok.append(profile(codec.decode_tokens(enc.tokens, g)[0, :t] - mel, mel, frame_hz))
    return {"acoustic": summarise(acc), "token": summarise(tok)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt", help="training workdir or exported checkpoint")
    ap.add_argument("--corpus", default="cache/demo_corpus")
    ap.add_argument("--split", action="append", default=None,
                    help="manifest split(s) (default: valid and test_unseen)")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from secoustic_jax.eval.checkpoints import load_codec

    codec, _ = load_codec(pathlib.Path(args.ckpt))
    res = {"ckpt": args.ckpt, "corpus": args.corpus, "limit": args.limit,
           "machine": platform.processor() or platform.machine(), "splits": {}}
    for split in args.split or ["valid", "test_unseen"]:
        utts = _utterances(pathlib.Path(args.corpus), split, args.limit)
        res["splits"][split] = {"utterances": len(utts), **path_profiles(codec, utts)}
    write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
