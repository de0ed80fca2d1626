"""`secoustic stream IN.wav --ckpt DIR --out OUT.wav --chunk-ms N`: a simulated live stream.

The input is cut into blocks of N ms (rounded to whole tokens), pushed through the
streaming mel front end, encode_step and decode_step (token path; G computed once from a
prompt), and the decoded mel is vocoded in windows with look-ahead (HiFT) as it arrives.
Prints the first-packet latency (algorithmic + compute) and per-step latency percentiles.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

from secoustic_jax.audio.io import load_audio, save_wav
from secoustic_jax.precision import Precision, cli_type


def register(subparsers) -> None:
    p = subparsers.add_parser("stream", help="simulate a live stream: wav -> tokens -> wav")
    p.add_argument("input", help="input audio file (any rate; resampled to 22.05 kHz)")
    p.add_argument("--ckpt", required=True, help="codec directory (see import-torch)")
    p.add_argument("--out", required=True, help="output wav")
    p.add_argument("--chunk-ms", type=float, default=11.61,
                   help="audio per step in ms, rounded to whole tokens (11.61 / 46.44 ms)")
    p.add_argument("--prompt", help="prompt audio for G (default: the input's first "
                   "--prompt-seconds, taken once up front)")
    p.add_argument("--prompt-seconds", type=float, default=3.0)
    p.add_argument("--vocoder", default="griffin-lim",
                   help="hift.pt / saved vocoder dir (streams), or griffin-lim (offline at end)")
    p.add_argument("--vocoder-block", type=int, default=16, help="HiFT window core, frames")
    p.add_argument("--precision", type=cli_type, default=Precision(),
                   help="precision policy (secoustic_jax/precision.py): exact (default), fast "
                        "(bf16 weights and KV rings, ~25 %% faster per step at batch 1 on "
                        "CPU), serve-int8 (int8 weights with per-column scales, bf16 KV), "
                        "or overrides such as fast,stream_stacks=decoder (narrow only the "
                        "stacks after the tokens, so tokens equal float32's)")
    p.add_argument("--official-streaming", action="store_true",
                   help="emulate the official 249-key streaming attention (model.md 16.2)")
    p.set_defaults(func=run)


def _prompt_g(codec, wav, args, sr):
    if args.prompt:
        pw, psr = load_audio(args.prompt, target_sr=None)  # peak checked as read
        return codec.prompt_embedding(codec.mel(pw, psr))[None]
    # A window of the input, already checked and resampled: log-mel it directly (Codec.mel
    # would check its resampled peak again).
    from secoustic_jax.audio.mel import log_mel  # CLI: imported when the command runs
    pw = wav[: max(int(args.prompt_seconds * sr), 1024)]
    return codec.prompt_embedding(np.asarray(log_mel(pw[None], codec.config.mel))[0])[None]


def _stream(codec, wav, g, m, args):
    """Runs the stream; returns (mel [T', 80] list, step times s, first-step time s)."""
    from secoustic_jax.streaming import codec_steps as cs  # CLI: imported when the command runs
    from secoustic_jax.streaming.frontend import StreamingMel  # CLI: imported when the command runs
    cfg, v = codec.config, codec.variables
    prec = args.precision
    if prec.stream_weights != "float32":
        from secoustic_jax.streaming import lowp  # CLI: imported when the command runs
        stacks = lowp.DECODER_STACKS if prec.stream_stacks == "decoder" else lowp.STACKS
        narrow = lowp.bf16_weights if prec.stream_weights == "bfloat16" else lowp.int8_weights
        v = narrow(v, stacks)
    hop = cfg.hop
    state = cs.init_state(v, cfg, 1, chunk_tokens=m,
                          official_streaming=args.official_streaming,
                          kv_dtype=prec.kv if prec.kv != "float32" else None)
    fm = StreamingMel(cfg.mel, 1, m * hop)
    block = m * hop * cfg.mel.hop_length
    mels, times = [], []

    def run_chunks(mel, timed):
        nonlocal state
        for lo in range(0, (mel.shape[1] // hop) * hop, m * hop):
            t0 = time.perf_counter()
            state, tok = cs.encode_step(v, state, mel[:, lo:lo + m * hop])
            state, out = cs.decode_step(v, state, tok, g)
            mels.append(np.asarray(out)[0])
            if timed:
                times.append(time.perf_counter() - t0)
        return (mel.shape[1] // hop) * hop

    for lo in range(0, len(wav), block):
        t0 = time.perf_counter()
        mel = fm.push(wav[None, lo:lo + block])
        front = time.perf_counter() - t0
        if mel.shape[1]:
            run_chunks(mel, True)
            times[-1] += front
    tail = fm.flush()
    done = run_chunks(tail, False)
    if done < tail.shape[1]:  # 21.5 Hz: fewer than hop frames left
        state, tok = cs.encode_flush(v, state, tail[:, done:])
        state, out = cs.decode_step(v, state, tok, g)
        mels.append(np.asarray(out)[0])
    return mels, times


def run(args) -> int:
    from secoustic_jax.api import Codec  # CLI: imported when the command runs
    from secoustic_jax.streaming.frontend import lookahead_ms  # CLI: imported when the command runs
    from secoustic_jax.vocoder import (  # CLI: imported when the command runs
        fit_length, load_vocoder)
    if not args.chunk_ms > 0:  # before loading anything; also catches NaN
        raise ValueError(f"--chunk-ms must be positive (a token is 11.61 ms at 86 Hz, 46.44 "
                         f"ms at 21.5 Hz), got {args.chunk_ms}")
    codec = Codec.load(args.ckpt)
    cfg = codec.config
    sr = cfg.mel.sample_rate
    wav, _ = load_audio(args.input)
    if len(wav) < 1024:
        raise ValueError(f"{args.input}: {len(wav)} samples is too short to stream")
    period = 1000.0 / cfg.token_rate
    m = max(1, int(round(args.chunk_ms / period)))
    g = _prompt_g(codec, wav, args, sr)
    mels, times = _stream(codec, wav, g, m, args)
    mel = np.concatenate(mels)[None]
    voc = load_vocoder(args.vocoder)
    voc_note = "offline at the end (Griffin-Lim cannot stream)"
    if voc.is_fallback:
        out = voc(mel)[0]
    else:
        from secoustic_jax.streaming.vocode import (  # CLI: imported when the command runs
            StreamingVocoder, added_latency_ms)
        sv = StreamingVocoder(voc, 1, args.vocoder_block)
        parts = [sv.push(mel[:, i:i + m * cfg.hop]) for i in range(0, mel.shape[1], m * cfg.hop)]
        out = np.concatenate(parts + [sv.flush()], axis=1)[0]
        lat = added_latency_ms(voc, args.vocoder_block)
        voc_note = f"+{lat['steady_ms']:.1f} ms steady, +{lat['first_ms']:.1f} ms first block"
    save_wav(pathlib.Path(args.out), fit_length(out, len(wav)), sr)
    ms = np.asarray(times) * 1e3
    algo = 1000.0 * m * cfg.hop * cfg.mel.hop_length / sr + lookahead_ms(cfg.mel)
    prec = args.precision
    print(f"stream: {cfg.variant}, {m} token(s) per step ({m * period:.2f} ms), precision "
          f"{prec} ({prec.stream_weights} weights"
          f"{' (decoder stacks only)' if prec.stream_stacks == 'decoder' else ''}, "
          f"{prec.kv} KV), {len(ms)} steps, wrote {args.out}")
    print(f"first packet: algorithmic {algo:.1f} ms + compute {ms[0]:.1f} ms "
          f"(first step, includes compilation) = {algo + ms[0]:.1f} ms")
    if len(ms) > 1:
        warm = ms[1:]
        print(f"per-step latency (front end + encode + decode): p50 {np.median(warm):.2f} ms, "
              f"p90 {np.percentile(warm, 90):.2f} ms, p99 {np.percentile(warm, 99):.2f} ms; "
              f"RTF {np.median(warm) / (m * period):.3f}")
    print(f"vocoder {voc.name}: {voc_note}")
    return 0
