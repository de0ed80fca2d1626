"""eval/scoring.Scorer's worker pool: workers leave when the process that owns them dies."""

import os
import subprocess
import sys
import time

# A parent that starts one pool worker, prints its pid, then dies without any clean-up
# (SIGKILL: no atexit, no pool shutdown), as an eval.py killed mid-run does.
PARENT = """
import os, signal
from secoustic_jax.eval.scoring import Scorer
s = Scorer(workers=1)
print(s._pool.submit(os.getpid).result(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False


def test_workers_exit_when_their_parent_is_killed():
    # Popen + readline, not run(): a surviving worker keeps the stdout pipe open.
    proc = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        worker = int(proc.stdout.readline())
        proc.wait(timeout=120)
        deadline = time.time() + 30  # the worker polls its parent every PARENT_POLL_S = 1 s
        while _alive(worker) and time.time() < deadline:
            time.sleep(0.2)
        survived = _alive(worker)
        if survived:
            os.kill(worker, 9)  # leave nothing running behind a failed test
        assert not survived, f"pool worker {worker} outlived its killed parent"
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
