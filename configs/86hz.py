"""Paper-scale 86hz experiment (training.md §7-§8): batch 32, stage 1 200k steps of 256 frames,
stage 2 100k steps of 344 frames, AdamW 2e-4 with 5k warm-up and cosine to 1e-5 per stage,
KL ramp 20k -> 30k stage-2 steps, contrastive weight 1.0. Stage 3 off.

    python train.py --config configs/86hz.py --workdir runs/86hz --set data.root=<corpus>
"""

from secoustic_jax.config.model import codec_preset
from secoustic_jax.config.train import ExperimentConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(name="86hz", codec=codec_preset("86hz"))
