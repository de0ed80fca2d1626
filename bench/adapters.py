"""README rows for benches whose JSON predates the `table` convention of run_all.py.

Each adapter maps a bench's JSON to rows {what, value, reference, note}. Model FLOPs come
from `secoustic_jax.flops` where a bench does not report them, so every throughput in the
README stands beside its FLOP rate and its utilisation of the measured matmul peak.
References: the official PyTorch code on this machine kind (2 cores, torch 2.13 CPU, 10 s
input, medians; evaluation.md §8 and the issue): HiFT 4.3 s; streaming 46.5 ms per 86 Hz
frame (53.8 ms per 21.5 Hz token); train step batch 4 x 3 s 6.9 s (86 Hz), 1.8 s (21.5 Hz).
"""

from __future__ import annotations

HIFT_REF_S = 4.327
STREAM_REF_MS = {"86hz": 46.5, "21_5hz": 53.8}
TRAIN_REF_S = {"86hz": 6.9, "21_5hz": 1.8}
TARGET = 3.0


def _flops_note(flops: float | None, seconds: float, peak: float | None) -> str:
    if not flops or not seconds:
        return ""
    rate = flops / seconds
    util = f", {100 * rate / peak:.0f} % of matmul peak" if peak else ""
    return f"{rate / 1e9:.1f} GFLOP/s model{util}"


def vocoder_rows(res: dict, peak=None) -> list[dict]:
    rows = []
    for name, r in res.get("results", {}).items():
        hift = name.startswith("hift")
        row = {"what": f"vocoder {name}, {res.get('audio_seconds', 10):.0f} s, batch 1",
               "value": f"{r['median_s']:.2f} s (RTF {r['rtf_median']:.3f}; CPU {r.get('cpu_median_s', 0):.2f} s)",
               "note": "fallback, no reference" if not hift else
               f"target >= {TARGET:.0f}x: {'met' if HIFT_REF_S / r['median_s'] >= TARGET else 'NOT met'}; "
               "HiFT FLOPs not modelled in flops.py"
               + (f"; bf16 operands, SNR {r['snr_db_vs_float32']:.1f} dB vs float32"
                  if "snr_db_vs_float32" in r else "")}
        if hift:
            row["reference"] = f"{HIFT_REF_S:.1f} s ({HIFT_REF_S / r['median_s']:.1f}x)"
        rows.append(row)
    return rows


def _step_flops(preset: str) -> float | None:
    """Model FLOPs of one streaming token (encode + decode_tokens), from a long utterance."""
    from secoustic_jax import flops
    from secoustic_jax.config.model import codec_preset

    cfg = codec_preset(preset)
    frames = 4096 * cfg.hop
    f = flops.inference(cfg, frames)
    return (f["encode"] + f["decode_tokens"]) / cfg.num_tokens(frames)


def streaming_rows(res: dict, peak=None) -> list[dict]:
    rows = []
    for preset, p in res.get("presets", {}).items():
        for dtype in ("float32", "bfloat16_weights", "bfloat16_weights_kv", "int8_weights_kv"):
            r = p.get(dtype)
            if not r:
                continue
            fused = r["fused_step"]
            ref = STREAM_REF_MS.get(preset)
            rows.append({"what": f"streaming {preset} {dtype}, fused step, batch 1",
                         "value": f"{fused['median_ms']:.1f} ms (p90 {fused['p90_ms']:.1f}; RTF {fused['rtf']:.2f})",
                         "reference": f"{ref} ms ({ref / fused['median_ms']:.1f}x)" if ref else "",
                         "note": f"first frame {r.get('first_frame_ms', float('nan')):.1f} ms; "
                                 + _flops_note(_step_flops(preset), fused["median_ms"] / 1e3, peak)})
        for dtype in ("float32", "bfloat16_weights", "bfloat16_weights_kv", "int8_weights_kv"):
            conc = p.get("concurrency_" + dtype)
            if conc:
                rows.append({"what": f"streaming {preset} real-time streams ({dtype})",
                             "value": str(conc.get("max_realtime_batch")),
                             "note": "token change rate vs float32: "
                                     f"{p.get('token_change_rate', {}).get(dtype, 0.0)}"})
    return rows


def train_rows(res: dict, peak=None) -> list[dict]:
    from secoustic_jax import flops
    from secoustic_jax.config.model import codec_preset

    rows = []
    for r in res.get("runs", []):
        if "error" in r:
            rows.append({"what": f"train {r.get('preset')} stage {r.get('stage')}", "value": "failed",
                         "note": str(r["error"])[:120]})
            continue
        stage = {"acoustic": 1, "semantic": 2}.get(r["stage"], 3)
        f = flops.train_step(codec_preset(r["preset"]), stage, r["batch"], r["frames"])
        ref = TRAIN_REF_S.get(r["preset"])
        rows.append({"what": f"train step {r['preset']} {r['stage']}, batch {r['batch']} x {r['frames']} frames",
                     "value": f"{r['median_step_s']:.2f} s ({r['frames_per_s']:.0f} frames/s)",
                     "reference": f"{ref} s (official, full step)" if ref else "",
                     "note": f"peak RSS {r['peak_rss_gib']:.2f} GiB; "
                             + _flops_note(f, r["median_step_s"], peak) + " (codec FLOPs only)"})
    return rows


def profile_rows(res: dict, peak=None) -> list[dict]:
    groups = res.get("results", {})
    return [{"what": f"per-module profile ({', '.join(groups)})", "value": "see bench/results.json",
             "note": "interleaved wall + CPU medians, model and XLA FLOPs; bench/NOTES.md"}]


ADAPTERS = {"vocoder": vocoder_rows, "streaming": streaming_rows, "train": train_rows,
            "profile": profile_rows}
