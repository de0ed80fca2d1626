"""Streaming benchmark (issue 6): per-frame step latency and real-time concurrency.

    .venv/bin/python bench/bench_streaming.py [--presets 86hz 21_5hz] [--steps 200]

Full presets, random weights (fsq.project_in rescaled on speech so tokens are diverse,
model.md §7), CPU. For each preset and VARIANT (float32; bfloat16 kernels in the four
transformer stacks through the `secoustic_jax.kernels` mat-vec; the same plus bfloat16 KV
rings read by the kernels' ring calls; int8 kernels with per-column scales plus bfloat16
KV; float32 accumulation and FSQ throughout):
- encode_step, decode_step and the fused step at batch 1, one token per call, timed over
  `--steps` steps **after** 260 warm steps (the KV rings are full: beyond token 250);
  median / p90 / p99 in ms and RTF = step / token period;
- first-frame compute latency (evaluation.md §4.10): front end + encode + decode on a
  fresh state, after warm-up on another state;
- token change rate of each narrow variant vs float32 over the same speech, and on the
  trained tiny checkpoint of `make demo` (`--trained-ckpt`; recorded as skipped without);
- the fused step at growing batch, per variant, each sweep in a fresh process: the
  largest batch whose median step stays within the token period (real time).
Writes bench/results/streaming.json (with the machine description and load average).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN_MEL = ROOT.parent / "shared/reference/golden/codec_tiny_21_5hz_io.npz"
# label -> (transformer weight format, KV ring dtype, narrowed stacks: all or decoder side)
VARIANTS = {"float32": ("float32", "float32", "all"),
            "bfloat16_weights": ("bfloat16", "float32", "all"),
            "bfloat16_weights_kv": ("bfloat16", "bfloat16", "all"),
            "int8_weights_kv": ("int8", "bfloat16", "all"),
            "int8_decoder": ("int8", "float32", "decoder")}
TRAINED_CKPT = ROOT / "demo/work/train"  # the tiny run `make demo` trains
TRAINED_MANIFEST = ROOT / "cache/demo_corpus/test.jsonl"


def _cpuinfo(key: str, default: str = "") -> str:
    try:
        return next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                     if l.split(":", 1)[0].strip() == key), default)
    except OSError:
        return default


def describe_machine() -> dict:
    """The machine, including the CPU family: VMs named "AMD EPYC" were Zen 4 (family 25)
    and Zen 5 (family 26) on different days, with different speeds."""
    import jax
    flags = _cpuinfo("flags").split()
    return {"cpu": _cpuinfo("model name", platform.processor()),
            "cpu_family": _cpuinfo("cpu family"), "cpu_model": _cpuinfo("model"),
            "cpu_mhz": _cpuinfo("cpu MHz"),
            "isa": [f for f in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16") if f in flags],
            "cores": os.cpu_count(), "platform": platform.platform(),
            "python": sys.version.split()[0], "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()], "loadavg_start": os.getloadavg(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "nice": os.nice(0)}


def write_result(result: dict, out) -> None:
    """Stamps the end load average into result["machine"] and writes the JSON atomically
    (a crashed run never leaves a truncated result for run_all to collect)."""
    result["machine"]["loadavg_end"] = os.getloadavg()
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)
    print(f"wrote {out}")


def _speech(frames: int) -> np.ndarray:
    mel = np.load(GOLDEN_MEL)["mel_in"][0]
    mel = np.concatenate([mel, mel[::-1]])
    return mel[np.arange(frames) % len(mel)].astype(np.float32)


def _random_variables(cfg, seed=0):
    """Random weights by shape (no init compile): N(0, 1/fan_in) kernels, LN scale 1,
    LayerScale 0.01 (its init), BatchNorm var 1. Then project_in standardised on speech."""
    import jax
    import jax.numpy as jnp
    import flax.linen as nn
    from secoustic_jax.api import _init_inputs
    from secoustic_jax.model.codec import SecoustiCodec
    shapes = jax.eval_shape(lambda: nn.meta.unbox(SecoustiCodec(cfg).init(
        jax.random.PRNGKey(0), *_init_inputs(cfg), train=False)))
    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = jax.tree_util.keystr(path)
        if "layer_scale" in name:
            return np.full(s.shape, 0.01, s.dtype)
        if name.endswith("['scale']") or name.endswith("['var']"):
            return np.ones(s.shape, s.dtype)
        if s.dtype != np.float32 or len(s.shape) < 2:
            return np.zeros(s.shape, s.dtype)
        fan_in = int(np.prod(s.shape[:-1]))
        return (rng.standard_normal(s.shape, np.float32) / np.sqrt(fan_in)).astype(np.float32)

    v = jax.tree_util.tree_map_with_path(fill, shapes)
    mel = _speech(256)[None]
    u = np.asarray(jax.jit(lambda v, m: SecoustiCodec(cfg).apply(v, m, method="encode"))(
        v, mel).projected).reshape(-1, 8)
    scale = 0.818 / u.std(0)
    pin = v["params"]["fsq"]["project_in"]
    pin["kernel"] = pin["kernel"] * scale[None]
    pin["bias"] = scale * (pin["bias"] - u.mean(0))
    return jax.tree.map(jnp.asarray, {"params": v["params"]})


def _stats(ts, period_ms) -> dict:
    ms = np.asarray(ts) * 1e3
    med = float(np.median(ms))
    return {"median_ms": round(med, 3), "p90_ms": round(float(np.percentile(ms, 90)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "min_ms": round(float(ms.min()), 3),
            "steps": len(ms),
            "rtf": round(med / period_ms, 3)}


def _run_steps(step, state, frames, warm, steps):
    """Steps `warm` + `steps` tokens; returns (state, times of the last `steps`, outputs)."""
    import jax
    ts, outs = [], []
    for i in range(warm + steps):
        t0 = time.perf_counter()
        state, out = step(state, frames[i % len(frames)])
        jax.block_until_ready(out)
        if i >= warm:
            ts.append(time.perf_counter() - t0)
        outs.append(out)
    return state, ts, outs


def _variant(v32, label):
    """(variables, kv_dtype) of a VARIANTS entry."""
    from secoustic_jax.streaming import lowp
    fmt, kv, which = VARIANTS[label]
    if fmt == "float32":
        return v32, kv
    stacks = lowp.DECODER_STACKS if which == "decoder" else lowp.STACKS
    narrow = {"bfloat16": lowp.bf16_weights, "int8": lowp.int8_weights}[fmt]
    return narrow(v32, stacks), kv


def _trained_token_change(ckpt, manifest, utterances: int) -> dict:
    """Token change of each variant vs float32 on a trained checkpoint (random weights
    with a rescaled FSQ sit farther from the rounding boundaries than trained ones)."""
    from secoustic_jax.api import Codec
    from secoustic_jax.audio.io import load_audio
    from secoustic_jax.streaming import codec_steps as cs
    from secoustic_jax.streaming.server import fused_step
    from secoustic_jax.training.export import codec_variables_from_checkpoint
    found = codec_variables_from_checkpoint(ckpt) if pathlib.Path(ckpt).exists() else None
    if found is None or not pathlib.Path(manifest).exists():
        return {"skipped": f"no training checkpoint at {ckpt} or no manifest {manifest} "
                           "(run `make demo` first)"}
    cfg, v = found
    codec = Codec(cfg, v)
    rows = [json.loads(line) for line in open(manifest)][:utterances]
    g = np.zeros((1, cfg.transformer.d_model), np.float32)
    base = {"params": v["params"]}
    changed = {label: 0 for label in VARIANTS if label != "float32"}
    total = 0
    for r in rows:
        wav, sr = load_audio(pathlib.Path(manifest).parent / r["audio"])
        mel = np.asarray(codec.mel(wav, sr)).reshape(-1, cfg.mel.n_mels)[None]
        n = mel.shape[1] // cfg.hop
        toks = {}
        for label in VARIANTS:
            vv, kv = _variant(base, label)
            st, out = cs.init_state(vv, cfg, 1, kv_dtype=kv), []
            for i in range(n):
                st, t, _ = fused_step(vv, st, mel[:, i * cfg.hop:(i + 1) * cfg.hop], g)
                out.append(np.asarray(t)[0])
            toks[label] = np.concatenate(out)
        total += n
        for label in changed:
            changed[label] += int(np.sum(toks[label] != toks["float32"]))
    return {"checkpoint": str(ckpt), "config": cfg.variant, "utterances": len(rows),
            "tokens": total, "changed": changed,
            "change_rate": {k: round(c / total, 5) for k, c in changed.items()}}


def _bench_dtype(cfg, v, warm, steps, frames, g, kv="float32"):
    """Batch-1 encode / decode / fused latencies for one variant; returns (dict, tokens)."""
    from secoustic_jax.streaming import codec_steps as cs
    from secoustic_jax.streaming.server import fused_step
    period = 1000.0 / cfg.token_rate
    st = cs.init_state(v, cfg, 1, kv_dtype=kv)
    st, t_enc, toks = _run_steps(lambda s, m: cs.encode_step(v, s, m), st, frames, warm, steps)
    toks = [np.asarray(t) for t in toks]
    st, t_dec, _ = _run_steps(lambda s, t: cs.decode_step(v, s, t, g), st, toks, warm, steps)
    fused = lambda s, m: (lambda r: (r[0], r[1:]))(fused_step(v, s, m, g))  # noqa: E731
    st = cs.init_state(v, cfg, 1, kv_dtype=kv)
    st, t_fused, _ = _run_steps(fused, st, frames, warm, steps)
    return {"encode_step": _stats(t_enc, period), "decode_step": _stats(t_dec, period),
            "fused_step": _stats(t_fused, period)}, np.concatenate(toks, axis=1)[0]


def _first_frame(cfg, v, g, kv="float32", repeats=20):
    """Front end + encode + decode on a fresh state (warm executables), median ms."""
    from secoustic_jax.streaming import codec_steps as cs
    from secoustic_jax.streaming.frontend import StreamingMel
    need = cfg.hop * cfg.mel.hop_length + cfg.mel.pad  # algorithmic latency in samples
    wav = (0.1 * np.random.default_rng(0).standard_normal(need)).astype(np.float32)
    ts = []
    for _ in range(repeats + 2):
        st = cs.init_state(v, cfg, 1, kv_dtype=kv)
        fm = StreamingMel(cfg.mel, 1, cfg.hop)
        t0 = time.perf_counter()
        mel = fm.push(wav)
        st, tok = cs.encode_step(v, st, mel)
        st, out = cs.decode_step(v, st, tok, g)
        np.asarray(out)
        ts.append(time.perf_counter() - t0)
    return {"first_frame_ms": round(float(np.median(ts[2:])) * 1e3, 3),
            "algorithmic_ms": round(1000.0 * need / cfg.mel.sample_rate, 2)}


def _max_realtime_batch(cfg, v, batches, kv="float32", steps=60):
    """Fused step at batch B (ring cost does not depend on fill: fixed 250 slots)."""
    from secoustic_jax.streaming import codec_steps as cs
    from secoustic_jax.streaming.server import fused_step
    period = 1000.0 / cfg.token_rate
    rows, best = [], 0
    for b in batches:
        st = cs.init_state(v, cfg, b, kv_dtype=kv)
        mel = [np.asarray(_speech(cfg.hop * 8)[None].repeat(b, 0))[:, i * cfg.hop:(i + 1) * cfg.hop]
               for i in range(8)]
        g = np.zeros((b, cfg.transformer.d_model), np.float32)
        fused = lambda s, m: (lambda r: (r[0], r[1:]))(fused_step(v, s, m, g))  # noqa: E731
        st, ts, _ = _run_steps(fused, st, mel, 5, steps)
        row = {"batch": b, **_stats(ts, period)}
        rows.append(row)
        print(f"  batch {b}: {row}", flush=True)
        if row["median_ms"] <= period:
            best = b
        else:
            break
    return {"max_realtime_batch": best, "sweep": rows}


def _sweep_in_subprocess(preset: str, dtype: str, batches) -> dict:
    """`_max_realtime_batch` in a fresh process: run after the batch-1 measurements in the
    same process, the sweep read 20-40 % slower (batch 16 at 21.5 Hz: 55-68 ms in-process vs
    35-43 ms fresh, same hour; no page faults either way), so each sweep starts clean."""
    import subprocess
    cmd = [sys.executable, __file__, "--sweep", preset, dtype,
           "--batches", *[str(b) for b in batches]]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sweep {preset} {dtype} failed ({proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    *log, result = proc.stdout.rstrip().split("\n")
    print("\n".join(log), flush=True)
    return json.loads(result)


def _sweep_main(preset: str, label: str, batches) -> int:
    from secoustic_jax.config import codec_preset
    cfg = codec_preset(preset)
    v, kv = _variant(_random_variables(cfg), label)
    res = _max_realtime_batch(cfg, v, batches, kv)
    print(json.dumps(res))
    return 0


REFERENCE = {"86hz": "official PyTorch streaming: 46.5 ms per 11.61 ms frame (RTF 4.0)",
             "21_5hz": "official PyTorch streaming: 53.8 ms per 46.44 ms step (RTF 1.16)"}


def _table(result: dict) -> list[dict]:
    """README rows {what, value, reference, note} (bench/run_all.py format)."""
    rows = []
    for name, out in result["presets"].items():
        present = [label for label in VARIANTS if label in out]
        for label in present:
            f = out[label]["fused_step"]
            rows.append({"what": f"stream {name} encode+decode step, batch 1, {label}",
                         "value": f"{f['median_ms']} ms median (p90 {f['p90_ms']}, p99 "
                                  f"{f['p99_ms']}, min {f['min_ms']}); RTF {f['rtf']}",
                         "reference": REFERENCE[name],
                         "note": f"enc {out[label]['encode_step']['median_ms']} / dec "
                                 f"{out[label]['decode_step']['median_ms']} ms; first frame "
                                 f"{out[label]['first_frame_ms']} ms + algorithmic "
                                 f"{out[label]['algorithmic_ms']} ms"})
        for label in present[1:]:
            rows.append({"what": f"stream {name}: {label} token change vs float32",
                         "value": f"{out['token_change_rate'][label]:.2%}", "reference": "-",
                         "note": f"{out['distinct_tokens_f32']} distinct tokens (rescaled FSQ)"})
        for label in present:
            c = out["concurrency_" + label]
            rows.append({"what": f"stream {name}: concurrent real-time streams ({label})",
                         "value": str(c["max_realtime_batch"]),
                         "reference": ">= 16 (target, 21.5 Hz)" if name == "21_5hz" else "-",
                         "note": "largest batch whose median fused step <= token period"})
    trained = result.get("trained_token_change", {})
    for label, rate in trained.get("change_rate", {}).items():
        rows.append({"what": f"token change vs float32, {label}, trained {trained['config']}",
                     "value": f"{rate:.2%}", "reference": "-",
                     "note": f"{trained['tokens']} tokens, {trained['utterances']} utterances "
                             f"({trained['checkpoint']})"})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["86hz", "21_5hz"])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warm", type=int, default=260)
    ap.add_argument("--batches-86hz", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--batches-21_5hz", type=int, nargs="+", default=[1, 8, 16, 24, 32, 48])
    ap.add_argument("--out", default=str(ROOT / "bench/results/streaming.json"))
    ap.add_argument("--quick", action="store_true", help="50 timed steps, short batch sweep")
    ap.add_argument("--sweep", nargs=2, metavar=("PRESET", "VARIANT"),
                    help="internal: one concurrency sweep, JSON on the last line")
    ap.add_argument("--batches", type=int, nargs="+", default=[1])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                    help="variants to time (float32 is always included: the reference)")
    ap.add_argument("--trained-ckpt", default=str(TRAINED_CKPT),
                    help="training run whose token change per variant is measured")
    ap.add_argument("--trained-manifest", default=str(TRAINED_MANIFEST))
    ap.add_argument("--trained-utterances", type=int, default=8)
    args = ap.parse_args(argv)
    if args.sweep:
        return _sweep_main(*args.sweep, args.batches)
    if args.quick:
        args.steps, args.batches_86hz, args.batches_21_5hz = 50, [1, 2], [1, 16]
    import jax
    from secoustic_jax.config import codec_preset
    result = {"machine": describe_machine(), "command": " ".join(["bench/bench_streaming.py"] + (argv or sys.argv[1:])),
              "presets": {}}
    for name in args.presets:
        cfg = codec_preset(name)
        print(f"== {name}", flush=True)
        v32 = _random_variables(cfg)
        frames = [jax.numpy.asarray(f[None]) for f in
                  _speech(cfg.hop * (args.warm + args.steps)).reshape(-1, cfg.hop, 80)]
        g = np.zeros((1, cfg.transformer.d_model), np.float32)
        out = {"token_period_ms": round(1000.0 / cfg.token_rate, 3)}
        variants = ["float32"] + [x for x in args.variants if x != "float32"]
        tokens = {}
        for label in variants:
            v, kv = _variant(v32, label)
            res, tokens[label] = _bench_dtype(cfg, v, args.warm, args.steps, frames, g, kv)
            res["warm_steps"] = args.warm
            res.update(_first_frame(cfg, v, g, kv))
            out[label] = res
            print(f"  {label}: {res}", flush=True)
        t32 = tokens["float32"]
        out["token_change_rate"] = {label: round(float(np.mean(t32 != t)), 4)
                                    for label, t in tokens.items() if label != "float32"}
        out["tokens_compared"] = len(t32)
        out["distinct_tokens_f32"] = int(len(np.unique(t32)))
        batches = getattr(args, "batches_" + name)
        for label in variants:
            out["concurrency_" + label] = _sweep_in_subprocess(name, label, batches)
        result["presets"][name] = out
    print("== token change on a trained checkpoint", flush=True)
    result["trained_token_change"] = _trained_token_change(
        args.trained_ckpt, args.trained_manifest, args.trained_utterances)
    print(f"  {result['trained_token_change']}", flush=True)
    result["table"] = _table(result)
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
