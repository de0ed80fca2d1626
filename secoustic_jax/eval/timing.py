"""Real-time factors (evaluation.md §4.9) and first-frame latency (§4.10).

Every entry point is timed on a 10.0 s input (220 500 samples, 861 mel frames), batch 1,
after one warm-up call with identical shapes (its time is reported as `compile_s`); the
median, min and max of `repeats` (>= 5) runs are reported, outputs are materialised
(`block_until_ready` / numpy conversion) inside the timed region. RTF = median / 10 s.
Wall times are not reproducible (±30 % on shared 2-core machines), so they live in their
own report section, outside the bit-stable metrics.

First-frame compute latency: with a freshly initialised streaming state, the first
streaming step computes exactly the offline graph restricted to the first hop block (the
causal layers have no history yet), so it is timed as one jitted function: front end on
the 640 (86 Hz) / 1408 (21.5 Hz) samples that must arrive first -> encode -> decode the
first token with a precomputed G. The steady-state per-step time needs the streaming
module's KV-ring state and is taken from `secoustic_jax.streaming`.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from secoustic_jax.audio.mel import log_mel
from secoustic_jax.streaming.codec_steps import decode_step, encode_step, init_state
from secoustic_jax.streaming.frontend import StreamingMel

SECONDS = 10.0
SR = 22050
N_SAMPLES = int(SECONDS * SR)  # 220 500


def time_fn(fn: Callable[[], object], repeats: int = 5) -> dict:
    """{compile_s (first call), median_s, min_s, max_s, cpu_median_s, runs} of fn() after
    one warm-up. cpu = process CPU seconds (all threads): robust to other processes on
    the cores, and wall ~ cpu / cores when XLA keeps every core busy on idle cores."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {"compile_s": first, "median_s": statistics.median(times), "min_s": min(times),
            "max_s": max(times), "cpu_median_s": statistics.median(cpus), "runs": repeats}


def ten_second_input(wavs=(), seed: int = 0) -> np.ndarray:
    """[220500] float32: test-set speech tiled to 10 s, or seeded noise if none given."""
    wavs = [np.asarray(w, np.float32) for w in wavs if len(w)]
    if not wavs:
        return (0.1 * np.random.default_rng(seed).standard_normal(N_SAMPLES)).astype(np.float32)
    x = np.concatenate(wavs)
    reps = -(-N_SAMPLES // x.shape[0])
    return np.tile(x, reps)[:N_SAMPLES].copy()


def measure_rtf(codec, vocoder, wav: np.ndarray, repeats: int = 5) -> dict:
    """Per-stage timings on a 10 s waveform `wav [220500]` (batch 1) -> {stage: timing}."""
    if wav.shape != (N_SAMPLES,):
        raise ValueError(f"RTF input must be [{N_SAMPLES}] samples (10 s at 22.05 kHz), got {wav.shape}")
    cfg = codec.config
    batch = wav[None]
    mel = np.asarray(log_mel(batch, cfg.mel))
    enc = codec.encode_mel(mel)
    g = codec.prompt_embedding(mel)
    mel_tok = codec.decode_tokens(enc.tokens, g)
    stages = {
        "front_end": lambda: log_mel(batch, cfg.mel),
        "encode_tokens": lambda: codec.encode_mel(mel).tokens,
        "prompt_embedding": lambda: codec.prompt_embedding(mel),
        "decode_tokens": lambda: codec.decode_tokens(enc.tokens, g),
        "decode_acoustic": lambda: codec.decode_acoustic(enc.acoustic),
        "vocoder": lambda: vocoder(mel_tok[0], seed=0),
    }

    out = {}
    for name, fn in stages.items():
        t = time_fn(fn, repeats)
        t["rtf"] = t["median_s"] / SECONDS
        out[name] = t
    # The token pipeline is the chain of the stages above, so its time is their sum (as in
    # evaluation.md §8); timing it separately would re-run the slow vocoder 6 more times.
    chain = ("front_end", "encode_tokens", "prompt_embedding", "decode_tokens", "vocoder")
    total = {k: sum(out[c][k] for c in chain) for k in ("median_s", "min_s", "max_s", "cpu_median_s")}
    out["end_to_end_token"] = dict(total, compile_s=sum(out[c]["compile_s"] for c in chain),
                                   runs=repeats, rtf=total["median_s"] / SECONDS,
                                   method="sum of the stage timings")
    return out


def algorithmic_latency(cfg) -> dict:
    """Audio that must arrive before the first token: hop blocks + the front end's
    384-sample look-ahead (29.0 ms at 86 Hz, 63.9 ms at 21.5 Hz)."""
    samples = cfg.samples_per_token + cfg.mel.pad
    return {"samples": samples, "ms": 1000.0 * samples / cfg.mel.sample_rate}


def first_frame(codec, g: np.ndarray, repeats: int = 20) -> dict:
    """Compute latency of the first token + its hop mel frames, batch 1 (module doc)."""
    cfg = codec.config
    n = algorithmic_latency(cfg)["samples"]
    module = codec.module

    def step(variables, wav, g):
        mel = log_mel(wav, cfg.mel)[:, : cfg.hop]  # [1, hop, 80]: the first hop block
        enc = module.apply(variables, mel, method="encode")
        return module.apply(variables, enc.tokens[:, :1], g, method="decode_tokens")

    fn = jax.jit(step)
    wav = jnp.asarray(0.1 * np.random.default_rng(0).standard_normal((1, n)), jnp.float32)
    gg = jnp.asarray(np.asarray(g, np.float32).reshape(1, -1))
    t = time_fn(lambda: fn(codec.variables, wav, gg), repeats)
    period = 1000.0 * cfg.samples_per_token / cfg.mel.sample_rate
    return {"first_frame_ms": 1000.0 * t["median_s"], "min_ms": 1000.0 * t["min_s"],
            "max_ms": 1000.0 * t["max_s"], "runs": repeats, "token_period_ms": period,
            "method": "jitted offline graph on the first hop block (equals a fresh streaming step)"}


def _stream_step(codec, state, fe, samples, g):
    """One streaming step: front end on new samples, encode the ready tokens, decode them."""
    mel = fe.push(samples)
    if mel.shape[1] == 0:
        return state, None
    state, tokens = encode_step(codec.variables, state, mel)
    state, out = decode_step(codec.variables, state, tokens, g)
    jax.block_until_ready(out)
    return state, out


def streaming_latency(codec, g: np.ndarray, steps: int = 200, warm_tokens: int = 250,
                      first_repeats: int = 10) -> dict:
    """§4.10 with `secoustic_jax.streaming` (batch 1): first-frame compute latency (median
    over `first_repeats` freshly initialised states, after a warm-up on another state) and
    the steady-state step time, median and p90 over `steps` steps beyond token
    `warm_tokens` (KV ring full)."""
    cfg = codec.config
    block = cfg.samples_per_token
    first = algorithmic_latency(cfg)["samples"]
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(first + block * (warm_tokens + steps))).astype(np.float32)
    gg = np.asarray(g, np.float32).reshape(1, -1)

    def fresh():
        return init_state(codec.variables, cfg, 1), StreamingMel(cfg.mel, 1, frames_per_call=cfg.hop)

    state, fe = fresh()  # warm-up stream: compiles every executable
    _stream_step(codec, state, fe, wav[:first], gg)
    firsts = []
    for _ in range(first_repeats):  # each on a freshly initialised state
        state, fe = fresh()
        t0 = time.perf_counter()
        state, out = _stream_step(codec, state, fe, wav[:first], gg)
        firsts.append(1000.0 * (time.perf_counter() - t0))
    first_ms = statistics.median(firsts)
    if out is None or out.shape[1] != cfg.hop:
        raise RuntimeError(f"streaming: first step produced {None if out is None else out.shape}")
    times, pos = [], first
    for k in range(warm_tokens + steps):
        t0 = time.perf_counter()
        state, out = _stream_step(codec, state, fe, wav[pos:pos + block], gg)
        if k >= warm_tokens:
            times.append(1000.0 * (time.perf_counter() - t0))
        pos += block
    period = 1000.0 * block / cfg.mel.sample_rate
    med = statistics.median(times)
    return {"status": "measured", "first_frame_ms": first_ms, "step_median_ms": med,
            "step_p90_ms": float(np.percentile(times, 90)), "steps": steps,
            "after_token": warm_tokens, "token_period_ms": period, "step_rtf": med / period,
            "real_time": med < period}


def streaming_steps(codec, g) -> dict:
    """The report's streaming latencies: `streaming_latency` with its defaults."""
    return streaming_latency(codec, g)


def timing_section(codec, vocoder, wavs, g, repeats: int = 5) -> dict:
    """The report's `timing` section: RTF per stage, latencies, device and threads."""
    wav = ten_second_input(wavs)
    return {
        "input": {"seconds": SECONDS, "samples": N_SAMPLES, "batch": 1, "repeats": repeats},
        "device": str(jax.devices()[0]), "platform": jax.default_backend(),
        "precision": str(jax.config.jax_default_matmul_precision or "default"),
        "cpu_count": os.cpu_count(), "vocoder": vocoder.name,
        "rtf": measure_rtf(codec, vocoder, wav, repeats),
        "latency": {"algorithmic": algorithmic_latency(codec.config),
                    "compute": first_frame(codec, g, max(repeats, 20)),
                    "streaming": streaming_steps(codec, g)},
        "note": "wall-clock times: not bit-reproducible (±30 % on shared 2-core machines)",
    }
