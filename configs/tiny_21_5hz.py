"""Tiny experiment at 21.5 Hz: configs/tiny.py with the 21.5 Hz SEANet geometry (ratios 2, 2;
4 mel frames per token), for tests and for checking disentanglement at the lower rate.

    python train.py --config configs/tiny_21_5hz.py --workdir runs/tiny_21_5hz
"""

import dataclasses
import importlib.util
import pathlib

from secoustic_jax.config.model import codec_preset
from secoustic_jax.config.train import ExperimentConfig


def _tiny():
    path = pathlib.Path(__file__).with_name("tiny.py")
    spec = importlib.util.spec_from_file_location("secoustic_config_tiny", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config() -> ExperimentConfig:
    base = _tiny()
    codec = codec_preset("tiny_21_5hz", {"seanet.n_filters": base.codec.seanet.n_filters})
    return dataclasses.replace(base, name="tiny_21_5hz", codec=codec)
