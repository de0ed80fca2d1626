"""DNSMOS (P.835 SIG/BAK/OVRL and P.808), the non-intrusive MOS codec papers report.

The ONNX models ship inside the `speechmos` wheel (0.0.1.1, pinned in the eval extra), so
the score runs offline on onnxruntime. We use its `DNSMOS` class (its 9.01 s windows with
a 1 s hop, shorter clips repeated to 9.01 s, the P.835 polynomial fit) with single-thread
sessions: scoring workers run side by side, and a fixed thread count keeps the numbers
identical whatever the worker count.

Input: 16 kHz mono float (the evaluator's resampled signal, soxr VHQ from 22.05 kHz).
DNSMOS refuses samples outside [-1, 1]; a decoded output can overshoot, so samples are
clipped to [-1, 1] first (recorded as `dnsmos_clipped`, the fraction clipped).
"""

from __future__ import annotations

import functools
import os

import numpy as np

SR = 16000
VERSION = "speechmos 0.0.1.1 (DNSMOS P.835 sig_bak_ovr.onnx + P.808 model_v8.onnx)"
METRICS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")


@functools.lru_cache(maxsize=1)
def _model():
    import onnxruntime as ort  # optional: onnxruntime (with piper-tts)
    from speechmos import dnsmos as sm  # optional: speechmos (eval extra)

    root = os.path.join(os.path.dirname(sm.__file__), "dnsmos_models")
    primary, p808 = os.path.join(root, "sig_bak_ovr.onnx"), os.path.join(root, "model_v8.onnx")
    model = sm.DNSMOS.__new__(sm.DNSMOS)  # its __init__ opens default (all-core) sessions
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    cpu = ["CPUExecutionProvider"]
    model.primary_model_path = primary
    model.onnx_sess = ort.InferenceSession(primary, opts, providers=cpu)
    model.p808_onnx_sess = ort.InferenceSession(p808, opts, providers=cpu)
    return model


def dnsmos(signal16) -> dict[str, float]:
    """signal [N] at 16 kHz -> {dnsmos_sig, dnsmos_bak, dnsmos_ovrl, dnsmos_p808,
    dnsmos_clipped}. Raises ValueError for empty or non-finite input."""
    x = np.asarray(signal16, np.float64).reshape(-1)
    if x.size == 0 or not np.isfinite(x).all():
        raise ValueError("DNSMOS needs a non-empty, finite signal")
    clipped = float(np.mean(np.abs(x) > 1.0))
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    r = _model()(x, SR, False)
    return {"dnsmos_sig": float(r["sig_mos"]), "dnsmos_bak": float(r["bak_mos"]),
            "dnsmos_ovrl": float(r["ovrl_mos"]), "dnsmos_p808": float(r["p808_mos"]),
            "dnsmos_clipped": clipped}
