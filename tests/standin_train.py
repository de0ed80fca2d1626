"""`train.py` with the stand-in codec, for the tests that run training as a process:

    python tests/standin_train.py --config configs/tiny.py --workdir ... --set ...

The same command line and exit codes as train.py; only the trained codec differs
(`train(codec_factory=)`), so process-level behaviour (signals, errors, multi-host) is
tested without compiling the real network.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # train.py

import train  # noqa: E402  (needs the repository root on the path)
from train_standin import standin_factory  # noqa: E402

if __name__ == "__main__":
    sys.exit(train.main(sys.argv[1:], codec_factory=standin_factory))
