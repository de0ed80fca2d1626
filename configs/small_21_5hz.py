"""Small experiment at 21.5 Hz: configs/small.py with the changes configs/tiny_21_5hz.py makes
to configs/tiny.py (21.5 Hz SEANet geometry, ratios 2, 2; 4 mel frames per token).

    make reproduce-21_5hz   # the demo driver, --config this file, 125-minute budget

The 21.5 Hz reproduction of docs/reproduction.md: the tiny twin's measured recipe (per-bin
statistics init, n_filters 32, 2 transformer layers, contrastive weight 1, one learning
rate: bench/results/ab_rate_probe.json, G probe 0.932, pooled S 0.701 at 3000 + 1500 + 800
steps), trained for a 2-hour budget. Only the step counts, warm-up, logging and
checkpointing differ from configs/tiny_21_5hz.py, so the run measures what the longer
schedule does to the voice split at this rate (lead 7 of issue 14).
The 2026-12-07 run (docs/reproduction_21_5hz.md, 22050 + 13120 + 20880 steps) met every
disentanglement bar (G probe 0.993, pooled S 0.595, VC success 1.00) with a token path that
is not intelligible (E2 WER 0.773).
"""

import dataclasses
import pathlib

from secoustic_jax.config.train import ExperimentConfig, load_experiment


def get_config() -> ExperimentConfig:
    here = pathlib.Path(__file__).parent
    small, tiny21 = (load_experiment(here / f"{n}.py") for n in ("small", "tiny_21_5hz"))
    codec = dataclasses.replace(tiny21.codec, variant="small_21_5hz")
    return dataclasses.replace(
        small, name="small_21_5hz", codec=codec,
        loss=dataclasses.replace(small.loss, contrastive_weight=tiny21.loss.contrastive_weight),
        init=tiny21.init,
        optim=dataclasses.replace(small.optim, lr_scale=tiny21.optim.lr_scale))
