"""Shared test setup: float32 parity settings, paths to ../shared goldens, seeded RNG.

Multi-device tests do NOT rely on this process: they start a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (see tests/multidevice.py helpers),
so the default suite runs on one CPU device.
"""

import os
import pathlib

# Parity tests need full float32 matmuls (model.md §0); set before jax is imported.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("SECOUSTIC_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference"
GOLDEN = REFERENCE / "golden"


def pytest_configure(config):
    # grain multiprocessing reads absl flags (upstream bug google/grain#1355).
    try:
        from absl import flags
        flags.FLAGS.mark_as_parsed()
    except Exception:  # absl missing: grain is not installed either
        pass


@pytest.fixture(scope="session")
def golden_dir() -> pathlib.Path:
    if not GOLDEN.is_dir():
        pytest.fail(f"golden data not found at {GOLDEN} (../shared must sit beside the repo)")
    return GOLDEN


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
    return REFERENCE


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
