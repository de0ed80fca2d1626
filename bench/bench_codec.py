"""Offline codec speed: encode / decode real-time factors on 10 s (both full presets, random
weights) and long-form encode+decode of 10 min and 1 h of 86 Hz mel (time and memory).

    .venv/bin/python bench/bench_codec.py --out bench/results/codec.json [--quick] [--repeats 5]

Every case runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its
own. Timings are medians of >= 5 runs after one warm-up call with identical shapes (the
warm-up is reported as `first_call_s`, compile included); min/max are reported too.
Model FLOPs (secoustic_jax.flops) stand beside every throughput, with utilisation against
the measured float32 matmul peak of this machine. Reference: the official PyTorch code on
this machine kind (2 cores, torch 2.13 CPU, 10 s input, medians; evaluation.md §8).

Long-form: `offline` is the api's one-shot call on the whole utterance; its compiled
temporary memory is estimated first (compile only) and the run is skipped, with the
estimate recorded, when it would exceed --max-gb. `chunked` runs the same network through
`secoustic_jax.streaming` with 1024-token chunks (outputs equal the offline ones; memory
independent of length). --quick skips the 1 h cases.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

FRAMES_10S = 861  # 10.0 s at 22.05 kHz / hop 256
# Official PyTorch, 2 cores, torch 2.13 CPU, 10 s input, medians (s) (evaluation.md §8).
REFERENCE_S = {"86hz": {"front_end": 0.009, "encode_tokens": 0.954, "prompt_embedding": 0.007,
                        "decode_tokens": 0.960, "decode_acoustic": 0.509},
               "21_5hz": {"front_end": 0.008, "encode_tokens": 0.287, "prompt_embedding": 0.012,
                          "decode_tokens": 0.271, "decode_acoustic": 0.135}}
TARGET_SPEEDUP = 3.0
CHUNK_TOKENS = 1024


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _mel_input(frames: int, seed: int = 0):
    """A speech-like log-mel [1, frames, 80]: the mel of 10 s of seeded noise, tiled."""
    import numpy as np

    from secoustic_jax.audio.mel import log_mel

    rng = np.random.default_rng(seed)
    wav = (0.1 * rng.standard_normal(FRAMES_10S * 256 + 384)).astype(np.float32)
    base = np.asarray(log_mel(wav))[:FRAMES_10S]
    reps = -(-frames // FRAMES_10S)
    return np.tile(base, (reps, 1))[:frames][None]


def case_offline(preset: str, repeats: int) -> dict:
    """10 s, batch 1: every entry point of `api.Codec` with random weights."""
    import numpy as np

    from secoustic_jax import flops
    from secoustic_jax.api import Codec
    from secoustic_jax.audio.mel import log_mel
    from secoustic_jax.config.model import codec_preset
    from secoustic_jax.eval.timing import time_fn

    cfg = codec_preset(preset)
    codec = Codec.init(cfg, seed=0)
    wav = (0.1 * np.random.default_rng(0).standard_normal((1, 220500))).astype(np.float32)
    mel = np.asarray(log_mel(wav, cfg.mel))
    enc = codec.encode_mel(mel)
    g = codec.prompt_embedding(mel)
    fns = {"front_end": lambda: log_mel(wav, cfg.mel),
           "encode_tokens": lambda: codec.encode_mel(mel).tokens,
           "prompt_embedding": lambda: codec.prompt_embedding(mel),
           "decode_tokens": lambda: codec.decode_tokens(enc.tokens, g),
           "decode_acoustic": lambda: codec.decode_acoustic(enc.acoustic)}
    model_flops = flops.inference(cfg, FRAMES_10S)
    peak = flops.measure_matmul_peak()
    out = {"preset": preset, "frames": FRAMES_10S, "matmul_peak_flops": peak, "stages": {},
           "loadavg_start": os.getloadavg()}
    for name, fn in fns.items():
        t = time_fn(fn, repeats)
        t["first_call_s"] = t.pop("compile_s")
        t["rtf"] = t["median_s"] / 10.0
        ref = REFERENCE_S[preset][name]
        t.update(reference_s=ref, speedup=ref / t["median_s"])
        if name in model_flops:
            t.update(model_flops=model_flops[name], flops_per_s=model_flops[name] / t["median_s"],
                     utilisation=model_flops[name] / t["median_s"] / peak)
        out["stages"][name] = t
    st = out["stages"]
    both = st["encode_tokens"]["median_s"] + st["decode_tokens"]["median_s"]
    ref = REFERENCE_S[preset]["encode_tokens"] + REFERENCE_S[preset]["decode_tokens"]
    out["encode_decode"] = {"median_s": both, "reference_s": ref, "speedup": ref / both,
                            "target_speedup": TARGET_SPEEDUP, "meets_target": ref / both >= TARGET_SPEEDUP}
    out["peak_rss_mb"] = _rss_mb()
    out["loadavg_end"] = os.getloadavg()
    return out


def _offline_estimate_gb(codec, mel) -> float:
    """Compiled temp + argument + output bytes of encode and of decode_tokens (max), GB."""
    import jax
    import jax.numpy as jnp

    from secoustic_jax.api import _entry_point, bucket_length

    cfg = codec.config
    t = cfg.hop * bucket_length(cfg.num_tokens(mel.shape[1]))
    best = 0.0
    for method, args in (("encode", (jax.ShapeDtypeStruct((1, t, 80), jnp.float32),
                                     jax.ShapeDtypeStruct((1,), jnp.int32))),
                         ("decode_tokens", (jax.ShapeDtypeStruct((1, t // cfg.hop), jnp.int32),
                                            jax.ShapeDtypeStruct((1, cfg.transformer.d_model), jnp.float32)))):
        m = _entry_point(cfg, method).lower(codec.variables, *args).compile().memory_analysis()
        total = m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
        best = max(best, total / 1e9)
    return best


def _run_chunked(codec, mel, g):
    """encode_step + decode_step over CHUNK_TOKENS-token chunks -> (tokens, mel frames)."""
    import jax

    from secoustic_jax.streaming.codec_steps import decode_step, encode_step, init_state

    cfg = codec.config
    state = init_state(codec.variables, cfg, 1, chunk_tokens=CHUNK_TOKENS)
    step = CHUNK_TOKENS * cfg.hop
    n_tok = frames = 0
    for lo in range(0, mel.shape[1] - mel.shape[1] % step, step):
        state, tok = encode_step(codec.variables, state, mel[:, lo:lo + step])
        state, out = decode_step(codec.variables, state, tok, g)
        jax.block_until_ready(out)
        n_tok += tok.shape[1]
        frames += out.shape[1]
    return n_tok, frames


def case_longform(minutes: float, mode: str, max_gb: float) -> dict:
    """Encode + decode_tokens of `minutes` of 86 Hz mel, one call (offline) or chunked."""

    from secoustic_jax import flops
    from secoustic_jax.api import Codec
    from secoustic_jax.config.model import codec_preset

    cfg = codec_preset("86hz")
    codec = Codec.init(cfg, seed=0)
    frames = int(round(minutes * 60 * 22050 / 256))
    if mode == "chunked":
        frames -= frames % (CHUNK_TOKENS * cfg.hop)
    mel = _mel_input(frames)
    g = codec.prompt_embedding(mel[:, :300])  # [1, d]
    out = {"minutes": minutes, "mode": mode, "frames": frames, "preset": "86hz",
           "loadavg_start": os.getloadavg()}
    model = flops.inference(cfg, frames)
    out["model_flops"] = model["encode"] + model["decode_tokens"]
    if mode == "offline":
        est = _offline_estimate_gb(codec, mel)
        out["estimated_peak_gb"] = est
        if est > max_gb:
            out["skipped"] = f"compiled memory estimate {est:.1f} GB > --max-gb {max_gb}"
            out["peak_rss_mb"] = _rss_mb()
            return out
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "offline":
        enc = codec.encode_mel(mel)
        codec.decode_tokens(enc.tokens, g)
    else:
        _run_chunked(codec, mel, g)
    out["wall_s"] = time.perf_counter() - t0
    out["cpu_s"] = time.process_time() - c0
    out["rtf"] = out["wall_s"] / (minutes * 60)
    out["flops_per_s"] = out["model_flops"] / out["wall_s"]
    out["peak_rss_mb"] = _rss_mb()
    return out


def _subprocess(args: list[str]) -> dict:
    """Runs one case in a fresh interpreter; returns its JSON (or the error)."""
    cmd = [sys.executable, __file__, "--case"] + args
    t0 = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"case": args, "error": f"exit {res.returncode}: {res.stderr.strip()[-2000:]}",
                "wall_s": time.time() - t0}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _rows(offline: dict, longform: list[dict]) -> list[dict]:
    """README rows: what, measured, reference, note."""
    rows = []
    for preset, r in offline.items():
        if "error" in r:
            rows.append({"what": f"codec {preset} offline", "value": "failed", "note": r["error"][:120]})
            continue
        for stage in ("encode_tokens", "decode_tokens", "decode_acoustic"):
            t = r["stages"][stage]
            rows.append({"what": f"{preset} {stage}, 10 s, batch 1",
                         "value": f"{t['median_s'] * 1e3:.0f} ms (RTF {t['rtf']:.4f}; CPU {t['cpu_median_s'] * 1e3:.0f} ms)",
                         "reference": f"{t['reference_s'] * 1e3:.0f} ms ({t['speedup']:.1f}x)",
                         "note": f"{t.get('flops_per_s', 0) / 1e9:.1f} GFLOP/s model, "
                                 f"{100 * t.get('utilisation', 0):.0f} % of matmul peak"})
        ed = r["encode_decode"]
        rows.append({"what": f"{preset} encode + decode_tokens, 10 s", "value": f"{ed['median_s']:.3f} s",
                     "reference": f"{ed['reference_s']:.3f} s ({ed['speedup']:.1f}x)",
                     "note": f"target >= {TARGET_SPEEDUP:.0f}x: {'met' if ed['meets_target'] else 'NOT met'}; "
                             f"peak RSS {r['peak_rss_mb']:.0f} MB"})
    for r in longform:
        what = f"86hz long-form {r.get('minutes', '?'):g} min, {r.get('mode', '?')}"
        if "error" in r or "skipped" in r:
            rows.append({"what": what, "value": "skipped" if "skipped" in r else "failed",
                         "note": (r.get("skipped") or r.get("error", ""))[:160]})
            continue
        rows.append({"what": what, "value": f"{r['wall_s']:.1f} s (RTF {r['rtf']:.4f})",
                     "note": f"peak RSS {r['peak_rss_mb'] / 1024:.2f} GB"
                             + (f", estimate {r['estimated_peak_gb']:.1f} GB" if "estimated_peak_gb" in r else "")})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="JSON output path")
    ap.add_argument("--quick", action="store_true", help="skip the 1 h long-form cases")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--presets", default="86hz,21_5hz")
    ap.add_argument("--max-gb", type=float, default=8.0, help="skip one-shot long-form runs above this")
    ap.add_argument("--case", nargs="+", default=None, help=argparse.SUPPRESS)  # internal
    args = ap.parse_args(argv)
    if args.case:
        kind, *rest = args.case
        res = (case_offline(rest[0], args.repeats) if kind == "offline"
               else case_longform(float(rest[0]), rest[1], args.max_gb))
        print(json.dumps(res))
        return 0
    offline = {}
    for preset in args.presets.split(","):
        print(f"== codec offline {preset} (10 s, {args.repeats} repeats)", flush=True)
        offline[preset] = _subprocess(["offline", preset, "--repeats", str(args.repeats)])
        print(json.dumps(offline[preset].get("encode_decode", offline[preset]))[:400], flush=True)
    longform = []
    for minutes in ((10.0,) if args.quick else (10.0, 60.0)):
        for mode in ("offline", "chunked"):
            print(f"== long-form {minutes:g} min {mode}", flush=True)
            longform.append(_subprocess(["longform", str(minutes), mode, "--max-gb", str(args.max_gb)]))
            print(json.dumps(longform[-1])[:400], flush=True)
    result = {"bench": "codec", "offline": offline, "longform": longform,
              "quick": args.quick, "table": _rows(offline, longform)}
    if args.out:
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
