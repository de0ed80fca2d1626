"""Input-pipeline throughput (utterance-seconds per second) beside the training step's need.

    .venv/bin/python bench/bench_pipeline.py --corpus cache/corpus [--batches 30] [--out f.json]

Measures steady-state batches of the training iterator for worker_count 0 (in-process
threads), 1 and 2 (grain multiprocessing), without and with a warm feature cache.
"Utterance-seconds" counts the audio each example covers (the crop), so the number is
directly comparable with what a training step consumes: global_batch x crop seconds per
step. Without --corpus a tiny corpus is built in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

# Step times measured on this 2-core CPU kind (environment.md §10): full-size model,
# batch 4 x 3 s, both decode paths.
CPU_STEP = {"86hz": (6.9, 4 * 3.0), "21_5hz": (1.8, 4 * 3.0)}


def _measure(paths, inv, cfg, batches: int, batch: int) -> dict:
    from secoustic_jax.data.pipeline import make_train_iterator

    it = make_train_iterator(paths, inv, cfg, seed=0, global_batch_size=batch)
    t0 = time.perf_counter()
    next(it)  # start-up: worker spawn, imports, first mel
    t1 = time.perf_counter()
    for _ in range(batches):
        next(it)
    t2 = time.perf_counter()
    it.close()
    crop_s = cfg.segment_frames * 256 / 22050
    rate = batches * batch * crop_s / (t2 - t1)
    return {"workers": cfg.worker_count, "cache": cfg.feature_cache is not None,
            "startup_s": round(t1 - t0, 2), "batches_per_s": round(batches / (t2 - t1), 3),
            "utt_seconds_per_s": round(rate, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=None, help="corpus folder with train.jsonl, phones.json")
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32, help="global batch (training.md §7)")
    ap.add_argument("--segment", type=int, default=344)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from absl import flags
    flags.FLAGS.mark_as_parsed()  # grain multiprocessing trap (environment.md §5)
    from secoustic_jax.config.data import CorpusConfig, PipelineConfig
    from secoustic_jax.data.corpus import build_corpus
    from secoustic_jax.data.phones import PhoneInventory

    tmp = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)  # prefetch threads may still write
    root = pathlib.Path(args.corpus) if args.corpus else pathlib.Path(tmp.name) / "tiny"
    if not args.corpus:
        build_corpus(root, CorpusConfig(size="tiny", workers=1), log=lambda *a: None)
    inv = PhoneInventory.load(root)
    paths = [root / "train.jsonl"]
    rows = []
    for w in [int(x) for x in args.workers.split(",")]:
        cfg = PipelineConfig(segment_frames=args.segment, worker_count=w, num_threads=2)
        rows.append(_measure(paths, inv, cfg, args.batches, args.batch))
        print(json.dumps(rows[-1]), flush=True)
    cache = pathlib.Path(tmp.name) / "features"
    cfg = PipelineConfig(segment_frames=args.segment, feature_cache=str(cache), num_threads=2)
    _measure(paths, inv, cfg, args.batches, args.batch)  # fills the cache
    rows.append(_measure(paths, inv, cfg, args.batches, args.batch))
    print(json.dumps(rows[-1]), flush=True)
    crop_s = args.segment * 256 / 22050
    need = {k: round(audio / step, 2) for k, (step, audio) in CPU_STEP.items()}
    summary = {"corpus": str(root), "global_batch": args.batch, "crop_seconds": round(crop_s, 3),
               "pipeline": rows, "training_consumption_utt_seconds_per_s_cpu": need,
               "note": "training consumption = audio per step / step time (environment.md §10); "
                       "an accelerator step is ~100x faster: compare with batch*crop/step_time"}
    print(json.dumps(summary, indent=1))
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(summary, indent=1))
    tmp.cleanup()
    return 0


if __name__ == "__main__":  # grain workers are spawned: keep the guard
    sys.exit(main())
