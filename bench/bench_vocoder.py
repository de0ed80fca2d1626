"""Vocoder real-time factor on CPU: 10 s of mel (861 frames) through the full default HiFT
(random PyTorch-default weights; speed does not depend on the values), pinned to N cores;
on a CPU with AVX512_BF16 also the opt-in bf16 decoder convs (`hift_bf16conv`) with their
waveform SNR against float32 (deterministic source, same weights and mel).

    .venv/bin/python bench/bench_vocoder.py [--cores 2] [--repeats 5] [--seconds 10]
        [--no-griffin-lim] [--out bench/results/vocoder.json]

Reports the median, min and max wall time over `repeats` timed calls after one warm-up
call (compilation), RTF = time / audio seconds, and a description of the machine. The
official PyTorch HiFT takes about 4.3 s for 10 s on 2 cores (issue 5).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time


def _pin(cores: int) -> list[int]:
    """Restricts this process (and XLA's thread pool, created later) to `cores` CPUs."""
    avail = sorted(os.sched_getaffinity(0))
    if cores > len(avail):
        sys.exit(f"bench_vocoder: asked for {cores} cores, only {len(avail)} available")
    chosen = avail[:cores]
    os.sched_setaffinity(0, chosen)
    return chosen


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _time_calls(fn, repeats: int) -> dict:
    """One warm-up call, then `repeats` timed calls: wall and process CPU seconds (the CPU
    time is robust to other processes competing for the cores; wall >= cpu / cores)."""
    t0 = time.perf_counter()
    fn()
    warmup = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"warmup_s": warmup, "times_s": times, "median_s": statistics.median(times),
            "min_s": min(times), "max_s": max(times), "cpu_s": cpu,
            "cpu_median_s": statistics.median(cpu)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--no-griffin-lim", dest="griffin_lim", action="store_false",
                    help="skip timing the Griffin-Lim fallback (timed by default, so that "
                         "`make bench` covers every README row)")
    ap.add_argument("--out", default="bench/results/vocoder.json")
    args = ap.parse_args(argv)
    cores = _pin(args.cores)
    load_before = os.getloadavg()

    import jax
    import numpy as np

    from secoustic_jax.config.hift import HiFTConfig
    from secoustic_jax.vocoder import Vocoder

    frames = int(args.seconds * 22050) // 256  # mel front end: T = floor(N / 256)
    audio_s = frames * 256 / 22050
    mel = np.random.default_rng(0).normal(-6.0, 2.0, (frames, 80)).astype(np.float32)
    voc = Vocoder.init_random(HiFTConfig(), seed=0)
    results = {"hift": _time_calls(lambda: voc(mel, seed=0), args.repeats)}
    from secoustic_jax import kernels

    if kernels.has_bf16_conv():  # the opt-in bf16 decoder convs, and what they change
        vb = Vocoder(voc.config, voc.variables, voc.name, conv_dtype="bfloat16")
        results["hift_bf16conv"] = _time_calls(lambda: vb(mel, seed=0), args.repeats)
        a, b = voc(mel, deterministic=True), vb(mel, deterministic=True)
        results["hift_bf16conv"]["snr_db_vs_float32"] = float(
            10 * np.log10(np.sum(a.astype(np.float64) ** 2) / np.sum((a - b).astype(np.float64) ** 2)))
    if args.griffin_lim:
        gl = Vocoder.griffin_lim()
        results["griffin-lim-32"] = _time_calls(lambda: gl(mel, seed=0), max(1, args.repeats // 2))
    for r in results.values():
        r["rtf_median"] = r["median_s"] / audio_s
    report = {
        "benchmark": "vocoder", "mel_frames": frames, "audio_seconds": audio_s,
        "batch": 1, "repeats": args.repeats, "results": results,
        "machine": {"cpu": _cpu_model(), "cores_pinned": cores, "cores_total": os.cpu_count(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "jax": jax.__version__, "backend": jax.default_backend(),
                    "matmul_precision": str(jax.config.jax_default_matmul_precision)},
        "command": "bench/bench_vocoder.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: {"median_s": round(v["median_s"], 3), "rtf": round(v["rtf_median"], 4),
                          "cpu_median_s": round(v["cpu_median_s"], 3),
                          **({"snr_db": round(v["snr_db_vs_float32"], 1)}
                             if "snr_db_vs_float32" in v else {})}
                      for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
