"""The fused window-attention kernel against XLA's attention, on this host's kernel build.

    .venv/bin/python bench/bench_window_kernel.py [--repeats 5] \
        [--out bench/results/window_kernel_<host>.json]

The ops seam stages `kernels.window_attention` only where the library was built with its
AVX-512 path (`kernels.has_vector_window_attention`); this benchmark times both choices on
whatever build this host makes, by forcing `ops.cpu.has_window_kernel` either way:

- offline entry points on 10 s (861 frames, batch 1): `encode_tokens`, `decode_tokens`
  and `decode_acoustic` of the `tiny` config's codec (configs/tiny.py, as `make demo`
  trains it) and `encode_tokens` of the full 86 Hz preset, random weights;
- one `finetune` train step of configs/tiny.py at its own shape (3 x 344 frames, banded
  attention), synthetic batches.

Each (case, choice) runs in its own subprocess; medians of `repeats` runs after one
warm-up call with identical shapes, min and max beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
CASES = ("tiny_codec", "86hz_encode", "tiny_finetune_step")
CHOICES = {"kernel": True, "xla": False}


def _timed(fn, repeats: int) -> dict:
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times),
            "max_ms": 1e3 * max(times), "first_call_s": first, "runs": repeats}


def _codec_cases(preset: str, repeats: int, names) -> dict:
    """{entry point: timing} on 10 s of seeded noise, random weights of `preset`."""
    import numpy as np

    from secoustic_jax.api import Codec
    from secoustic_jax.audio.mel import log_mel
    from secoustic_jax.config.model import codec_preset
    from secoustic_jax.config.train import load_experiment
    from secoustic_jax.eval.timing import ten_second_input

    cfg = (load_experiment(REPO / "configs/tiny.py").codec if preset == "tiny"
           else codec_preset(preset))
    codec = Codec.init(cfg, seed=0)
    mel = np.asarray(log_mel(ten_second_input()[None], cfg.mel))
    enc = codec.encode_mel(mel)
    g = codec.prompt_embedding(mel)
    fns = {"encode_tokens": lambda: codec.encode_mel(mel).tokens,
           "decode_tokens": lambda: codec.decode_tokens(enc.tokens, g),
           "decode_acoustic": lambda: codec.decode_acoustic(enc.acoustic)}
    return {n: _timed(fns[n], repeats) for n in names}


def _finetune_step(repeats: int) -> dict:
    """One stage-3 step of configs/tiny.py at its crop shape (3 x 344 frames)."""
    import jax

    from secoustic_jax.config.train import load_experiment
    from secoustic_jax.training import runtime as rtm, sharding as shd
    from secoustic_jax.training.data import SyntheticSource
    from secoustic_jax.training.loop import resolve_config
    from secoustic_jax.training.model import TrainNet

    cfg, _ = resolve_config(load_experiment(REPO / "configs/tiny.py", {"data.kind": "synthetic"}))
    stage = cfg.stages.finetune
    net = TrainNet(cfg)
    mesh = shd.make_mesh(cfg.mesh, jax.devices()[:1])
    shapes = rtm.model_shapes(net, mesh, cfg)
    params, stats = rtm.init_variables(net, mesh, cfg, shapes, jax.random.PRNGKey(0))
    rt = rtm.build_stage(net, mesh, cfg, shapes, 2)
    box = {"state": rtm.start_state(rt, params, stats, step=0, key=jax.random.PRNGKey(1))}
    src = SyntheticSource(cfg, stage.batch_size, stage.segment_frames)
    batches = [shd.global_batch(mesh, next(src)) for _ in range(2)]

    def step():
        box["state"], m = rt.train_step(box["state"], batches[0])
        return m

    return {"finetune_step": _timed(step, repeats)}


def one(case: str, choice: str, repeats: int) -> dict:
    """Times `case` in this process with the kernel forced on or off."""
    from secoustic_jax import kernels
    from secoustic_jax.ops import cpu

    cpu.has_window_kernel = lambda: CHOICES[choice]
    if case == "tiny_codec":
        out = _codec_cases("tiny", repeats, ("encode_tokens", "decode_tokens", "decode_acoustic"))
    elif case == "86hz_encode":
        out = _codec_cases("86hz", repeats, ("encode_tokens",))
    else:
        out = _finetune_step(repeats)
    return {"case": case, "choice": choice, "build_vectorised": kernels.has_vector_window_attention(),
            "timings": out}


def machine() -> dict:
    import jax

    from secoustic_jax.eval.report import cpu_description
    return {"cpu": cpu_description(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "jax": jax.__version__,
            "loadavg_start": os.getloadavg()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--out", default=None, help="JSON path (default: print only)")
    p.add_argument("--one", nargs=2, metavar=("CASE", "CHOICE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.repeats < 1:
        p.error("--repeats must be >= 1")
    if a.one:
        print("RESULT" + json.dumps(one(a.one[0], a.one[1], a.repeats)))
        return 0
    results = {"machine": machine(), "runs": []}
    for case in a.cases:
        for choice in CHOICES:  # each case's two choices back to back: same host state
            cmd = [sys.executable, __file__, "--one", case, choice, "--repeats", str(a.repeats)]
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                               env=dict(os.environ, JAX_PLATFORMS="cpu"))
            if r.returncode:
                print(r.stderr[-3000:], file=sys.stderr)
                return r.returncode
            res = json.loads([x for x in r.stdout.splitlines() if x.startswith("RESULT")][-1][6:])
            results["runs"].append(res)
            for name, t in res["timings"].items():
                print(f"{case:19s} {choice:6s} {name:16s} median {t['median_ms']:8.1f} ms "
                      f"(min {t['min_ms']:.1f}, max {t['max_ms']:.1f})", flush=True)
    results["machine"]["loadavg_end"] = os.getloadavg()
    if a.out:
        out = pathlib.Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
