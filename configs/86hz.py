"""Paper-scale 86hz experiment (training.md §7-§8): batch 32, stage 1 200k steps of 256 frames,
stage 2 100k steps of 344 frames, AdamW 2e-4 with 5k warm-up and cosine to 1e-5 per stage,
KL ramp 20k -> 30k stage-2 steps, contrastive weight 1.0. Stage 3 off. Initialisation:
per-bin mel statistics in the first/last SEANet convs and VAE log-variance heads at -6
(docs/training.md: A/B evidence at tiny scale; parameter values only, export unchanged).

    python train.py --config configs/86hz.py --workdir runs/86hz --set data.root=<corpus>
"""

from secoustic_jax.config.model import codec_preset
from secoustic_jax.config.train import ExperimentConfig, InitConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(name="86hz", codec=codec_preset("86hz"),
                            init=InitConfig(mel_stats=True, logvar_bias=-6.0))
