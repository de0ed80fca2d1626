"""Input-pipeline feed rate per host core (audio-seconds per second) beside what a chip eats.

    .venv/bin/python bench/bench_pipeline.py --corpus cache/demo_corpus --out bench/results/pipeline.json

Each source is measured in a child process pinned to ONE core (`os.sched_setaffinity`),
in-process grain (worker_count 0, one read thread), so its rate is per host core:
  wav         the manifest source reading raw audio and computing the mel on the host;
  npy         the manifest source with a warm per-utterance feature cache;
  packed_f16  packed ArrayRecord shards, float16 log-mel (`secoustic data pack`);
  packed_f32  the same, float32 (bit-exact with the manifest pipeline);
  packed_wave packed int16 waveforms, `pipeline.features="waveform"`: the host cuts
              waveform windows and the mel is computed on the accelerator
              (data/device_mel.py), so only the host's share is timed here; the front
              end's FLOPs per frame are printed beside the model's.
"Audio-seconds" counts the crop each example covers, so a rate compares directly with what
a training step consumes (global batch x crop seconds per step). The median of --repeats
timed runs is reported. The consumption table gives the paper steps of both presets
(stage 1: 32 x 256 frames, stage 2: 32 x 344) at 40 % MFU on H200, TPU v5e and v5p, from
the model FLOPs of secoustic_jax/flops.py (training-only heads left out, so consumption is
slightly overstated), and the host cores each chip needs from each source.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

HOP, SR = 256, 22050
# bf16 dense peak FLOP/s per chip (vendor figures).
CHIPS = {"H200": 989e12, "TPU v5e": 197e12, "TPU v5p": 459e12}
MFU = 0.40
PAPER_STEPS = {1: (32, 256), 2: (32, 344)}  # stage -> (batch, frames), training.md §7


def _iterator(source: str, root: pathlib.Path, packed: dict, cache: pathlib.Path,
              segment: int, batch: int):
    from secoustic_jax.config.data import PipelineConfig
    from secoustic_jax.data.packed_source import make_packed_train_iterator
    from secoustic_jax.data.phones import PhoneInventory
    from secoustic_jax.data.pipeline import make_train_iterator

    cfg = PipelineConfig(segment_frames=segment, worker_count=0, num_threads=1,
                         feature_cache=str(cache) if source == "npy" else None,
                         features="waveform" if source == "packed_wave" else "mel")
    if source.startswith("packed"):
        return make_packed_train_iterator(packed[source], "train", cfg, seed=0,
                                          global_batch_size=batch)
    return make_train_iterator([root / "train.jsonl"], PhoneInventory.load(root), cfg, seed=0,
                               global_batch_size=batch)


def _child(args: tuple, out) -> None:
    """One timed run on one core; sends (startup_s, audio_seconds_per_s) back."""
    source, root, packed, cache, segment, batch, batches = args
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from absl import flags
    flags.FLAGS.mark_as_parsed()  # grain trap (environment.md §5)
    t0 = time.perf_counter()
    it = _iterator(source, root, packed, cache, segment, batch)
    next(it)  # start-up: imports, index, first batch
    t1 = time.perf_counter()
    for _ in range(batches):
        next(it)
    t2 = time.perf_counter()
    it.close()
    out.send((t1 - t0, batches * batch * segment * HOP / SR / (t2 - t1)))


def _run(args: tuple) -> tuple[float, float]:
    ctx = mp.get_context("spawn")  # a fresh interpreter: no thread state from the parent
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(args, send))
    p.start()
    res = recv.recv()
    p.join()
    if p.exitcode:
        raise RuntimeError(f"{args[0]}: child exited with {p.exitcode}")
    return res


def consumption(feed: dict[str, float]) -> list[dict]:
    """Audio-seconds per second each chip consumes at 40 % MFU, and cores per chip per source."""
    from secoustic_jax import flops
    from secoustic_jax.config.model import codec_preset

    rows = []
    for preset in ("86hz", "21_5hz"):
        cfg = codec_preset(preset)
        for stage, (batch, frames) in PAPER_STEPS.items():
            step_flops = flops.train_step(cfg, stage, batch, frames)
            audio = batch * frames * HOP / SR
            for chip, peak in CHIPS.items():
                rate = audio / (step_flops / (MFU * peak))
                rows.append({"preset": preset, "stage": stage, "batch": batch, "frames": frames,
                             "step_tflop": round(step_flops / 1e12, 3), "chip": chip,
                             "audio_s_per_s": round(rate),
                             "cores_needed": {s: round(rate / r, 1) for s, r in feed.items()}})
    return rows


def front_end_flops_per_frame(n_fft: int = 1024, n_mels: int = 80) -> float:
    """Real FFT (~2.5 n log2 n) + magnitude + mel matmul + log, per mel frame."""
    bins = n_fft // 2 + 1
    return 2.5 * n_fft * math.log2(n_fft) + 4 * bins + 2 * bins * n_mels + n_mels


def _front_end_share() -> dict:
    """FLOPs of the on-device mel against the 86 Hz stage-1 step's, per mel frame."""
    from secoustic_jax import flops
    from secoustic_jax.config.model import codec_preset

    batch, frames = PAPER_STEPS[1]
    model = flops.train_step(codec_preset("86hz"), 1, batch, frames) / (batch * frames)
    fe = front_end_flops_per_frame()
    return {"front_end_flops_per_frame": round(fe), "model_flops_per_frame": round(model),
            "fraction": fe / model}


def _machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True, help="corpus folder (train.jsonl, phones.json)")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32, help="global batch (training.md §7)")
    ap.add_argument("--segment", type=int, default=344)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sources", default="wav,npy,packed_f16,packed_f32,packed_wave")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from secoustic_jax.data.pack import PackOptions, pack_dataset
    from secoustic_jax.data.pipeline import make_train_iterator  # noqa: F401 (import cost)

    root = pathlib.Path(args.corpus)
    sources = args.sources.split(",")
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        tmp = pathlib.Path(tmp)
        packed = {}
        for name, dtype in (("packed_f16", "float16"), ("packed_f32", "float32"),
                            ("packed_wave", "float16")):
            if name in sources:
                packed[name] = tmp / name
                pack_dataset(root, packed[name], ["train"], PackOptions(
                    mel_dtype=dtype, waveform=name == "packed_wave", workers=2),
                    log=lambda *a: None)
        cache = tmp / "features"
        common = (root, packed, cache, args.segment, args.batch, args.batches)
        if "npy" in sources:
            _run(("npy",) + common)  # fills the cache
        rows = []
        for src in sources:
            runs = [_run((src,) + common) for _ in range(args.repeats)]
            rates = [r for _, r in runs]
            rows.append({"source": src, "audio_s_per_s_per_core": round(statistics.median(rates), 1),
                         "runs": [round(r, 1) for r in rates],
                         "startup_s": round(statistics.median(s for s, _ in runs), 2)})
            print(json.dumps(rows[-1]), flush=True)
    feed = {r["source"]: r["audio_s_per_s_per_core"] for r in rows}
    ratios = {s: round(v / feed["wav"], 1) for s, v in feed.items()} if "wav" in feed else {}
    summary = {"machine": _machine(), "corpus": str(root), "global_batch": args.batch,
               "crop_frames": args.segment, "batches": args.batches, "repeats": args.repeats,
               "feed_per_core": rows, "speedup_vs_wav": ratios, "mfu": MFU,
               "chip_peak_flops": CHIPS, "consumption": consumption(feed),
               "device_front_end": _front_end_share()}
    print(json.dumps({k: summary[k] for k in ("speedup_vs_wav",)}))
    for r in summary["consumption"]:
        print(f"{r['preset']:7s} stage {r['stage']} {r['chip']:8s} {r['audio_s_per_s']:>7d} "
              f"audio-s/s  cores: " + ", ".join(f"{k} {v}" for k, v in r["cores_needed"].items()))
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":  # spawned children re-import this module: keep the guard
    sys.exit(main())
