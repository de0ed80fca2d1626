"""Train SecoustiCodec: every enabled stage, resuming from the workdir's latest checkpoint.

    python train.py --config configs/tiny.py --workdir runs/tiny [--set optim.lr=3e-4 ...]

SIGTERM (preemption) writes a checkpoint and exits; rerun the same command to resume.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None, codec_factory=None) -> int:
    """codec_factory: as `train(codec_factory=)`, for a script that trains a modified codec."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="configs/<preset>.py defining get_config()")
    p.add_argument("--workdir", required=True, help="checkpoints, tensorboard logs, history")
    p.add_argument("--set", action="append", default=[], metavar="a.b=value",
                   help="dotted override, repeatable (e.g. --set optim.lr=3e-4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    from secoustic_jax.config.base import ConfigError
    from secoustic_jax.config.train import load_experiment
    from secoustic_jax.training.loop import PersistentNaNError, train

    try:
        config = load_experiment(args.config, args.set)
        summary = train(config, args.workdir, progress=not args.no_progress,
                        codec_factory=codec_factory)
    except ConfigError as e:  # the user's config, overrides, corpus or workdir: one line
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    except PersistentNaNError as e:
        print(f"train.py: stopped: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1, default=float))
    if summary.get("preempted"):
        print(f"preempted: checkpoint at step {summary['last_checkpoint']} written; rerun the "
              "same command to resume", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
