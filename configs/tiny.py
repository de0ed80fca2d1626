"""Tiny experiment: every module of the codec at a fraction of its size, fast on 2 CPU cores.

    python train.py --config configs/tiny.py --workdir runs/tiny
    python train.py --config configs/tiny.py --workdir runs/tiny --set data.kind=synthetic

Stage lengths, the KL ramp and the schedule are scaled down together: the KL ramp runs
over stage-2 steps 150-250 of 400 (paper scale: 20k-30k of 100k), so it completes well
before the end of the stage.
"""

from secoustic_jax.config.data import PipelineConfig
from secoustic_jax.config.model import codec_preset
from secoustic_jax.config.train import (CheckpointConfig, DataSourceConfig, ExperimentConfig,
                                        InitConfig, LogConfig, LossConfig, OptimConfig,
                                        PhonemeEncoderConfig, StageConfig, StagesConfig)


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="tiny",
        # n_filters 64, not the test preset's 16: the narrowest SEANet activation bounds the
        # stage-1 error at that of a PCA of its width (PCA-32 0.070, PCA-64 0.0065 on the demo
        # corpus); from the PCA init, 1000 steps reach 0.071 at 32 and ~0.01 at 64
        # (docs/training.md, "Stage 1 from the PCA autoencoder").
        # 4 transformer layers, not the test preset's 2: at equal steps the token-path mel
        # error fell 0.482 -> 0.435, while d_model 96 gave 0.477 (docs/training.md, "Token
        # path: depth and width").
        codec=codec_preset("tiny", {"seanet.n_filters": 64, "transformer.num_layers": 4}),
        phonemes=PhonemeEncoderConfig(d_model=64, num_heads=4, num_layers=2, dim_feedforward=128,
                                      conv_layers=2, dropout=0.1),
        # Contrastive weight 0.03, not 1: with the PCA stage 1, L_ac is ~5x larger than it
        # was, and at 1 L_con dominated stage 2 (token mel 0.638 at 1, 0.496 at 0.1, 0.482 at
        # 0.03, 0.470 at 0.01; docs/training.md). The recovered paper value reads 1e-5.
        loss=LossConfig(contrastive_weight=0.03, contrastive_dim=64, kl_ramp_start=150,
                        kl_ramp_end=250, max_contrastive_frames=2048),
        stages=StagesConfig(acoustic=StageConfig("acoustic", True, 400, 1.0, 8, 128),
                            semantic=StageConfig("semantic", True, 400, 1.0, 8, 128),
                            # Stage 3 on, at 0.3x the learning rate: at equal steps,
                            # finetuning every module on the mel of both paths beat more
                            # stage-2 steps on the token path (docs/training.md, stage-2
                            # A/B: token mel MSE 0.56 vs 0.80). Its crops are 3 x 344
                            # frames (the paper's stage-2 crop; ~the same frames per step):
                            # longer than the 250-token attention window, so the network
                            # the export holds has trained the sliding-window regime that
                            # inference runs. With 128-frame crops the full-utterance token
                            # error grew past frame 128 (docs/training.md, "Crop length":
                            # token mel 0.392 -> 0.354, frames >= 256: 0.400 -> 0.345).
                            finetune=StageConfig("finetune", True, 200, 0.3, 3, 344)),
        # No gradient clipping: the global norm sits at 5-12 through stage 1, so clipping at 1
        # rescaled every step (stage-1 mel MSE at 1000 steps 0.484 -> 0.389 without it;
        # docs/training.md, "Stage 1, optimiser and width"). The NaN skip still guards.
        # The SEANet's first conv reads raw log-mel (mean -5.5, 7 taps x 80 bins): one Adam
        # step of size lr there moves its outputs ~100x more than elsewhere, so it learns at
        # 0.05x (docs/training.md: a sign step of lr 2e-3 costs +127 MSE there, +25 in all
        # other SEANet/transformer leaves together).
        optim=OptimConfig(lr=2e-3, end_lr=1e-4, warmup_steps=40, clip_norm=0.0,
                          lr_scale=(("codec/encoder/layer_0", 0.05),)),
        # The stride-1 SEANet starts as the mel's PCA autoencoder (training/pca_init.py;
        # stage-1 valid mel 0.416 -> 0.071 at 1000 steps, n_filters 32), and VAE log-variance
        # heads start at sigma = exp(-3): with the torch default (sigma ~ 1 against
        # |mu| ~ 0.3) the connector learned to ignore G (docs/training.md A/B tables).
        init=InitConfig(seanet_pca=True, logvar_bias=-6.0),
        checkpoint=CheckpointConfig(every_steps=100, keep=3),
        log=LogConfig(every_steps=10, eval_every_steps=0, eval_batches=4, audio_examples=2),
        data=DataSourceConfig(kind="manifest", root="cache/corpus",
                              pipeline=PipelineConfig(segment_frames=128, max_phones=96,
                                                      feature_cache="cache/corpus/features")),
    )
