"""Frozen experiment configs for training (training.md): phonemes, losses, stages, optimiser,
mesh, checkpoints, logging, and the top-level `ExperimentConfig` that nests the codec.

Every field here is a [project] default unless training.md gives it; docs/training.md says
why each default was chosen. Import from `secoustic_jax.config.train` directly.
"""

from __future__ import annotations

import importlib.util
import math
import pathlib
from dataclasses import dataclass, field

from secoustic_jax.config.base import ConfigError, apply_overrides
from secoustic_jax.config.data import PipelineConfig
from secoustic_jax.config.model import CodecConfig

STAGE_NAMES = ("acoustic", "semantic", "finetune")
CONTRASTIVE_INPUTS = ("ste", "mu", "pre_vae")
ADVERSARY_MODES = ("reverse", "confusion", "speaker")
MEL_DISTANCES = ("mse", "l1")


@dataclass(frozen=True)
class PhonemeEncoderConfig:
    """Training-only phoneme encoder Phi (training.md §5). vocab_size 0 = from the data."""

    vocab_size: int = 0
    d_model: int = 256
    num_heads: int = 8
    num_layers: int = 4
    dim_feedforward: int = 1024
    conv_layers: int = 3
    conv_kernel: int = 5
    dropout: float = 0.1
    max_period: float = 10000.0
    norm_eps: float = 1e-5

    def validate(self) -> None:
        if self.d_model % self.num_heads or (self.d_model // self.num_heads) % 2:
            raise ConfigError("phonemes: d_model / num_heads must be an even integer")
        if self.conv_kernel % 2 == 0:
            raise ConfigError("phonemes.conv_kernel must be odd ('same' padding)")
        if not 0.0 <= self.dropout < 1.0 or self.vocab_size < 0:
            raise ConfigError("phonemes: dropout in [0, 1) and vocab_size >= 0 required")


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and options (training.md §2-§3)."""

    mel_weight: float = 1.0
    # Distance of every log-mel term (stage 1 and both stage-3 paths): "mse" (the paper) or
    # "l1" ([project]: a conditional median in place of a mean; in a 600-step `small` A/B it
    # lowered the acoustic path's error and left the token path's, docs/training.md).
    mel_distance: str = "mse"
    acoustic_weight: float = 1.0  # alpha
    contrastive_weight: float = 1.0  # beta; the transcribed 1e-5 is suspect (training.md §3)
    kl_weight: float = 1e-5  # final value of w(step)
    kl_ramp_start: int = 20_000
    kl_ramp_end: int = 30_000
    kl_ramp_uses_stage_step: bool = True
    kl_margin_semantic: float = 1.0  # nats per frame
    kl_margin_paralinguistic: float = 1.0  # nats per utterance
    # G's KL weight is w(step) times this ([project]; 1 = the paper's single weight): a
    # larger value keeps G near the prior and noisy in training, meant to give an unseen
    # voice a smooth G space to land in (600-step `small` A/B: no gain, docs/training.md).
    kl_paralinguistic_scale: float = 1.0
    kl_hinge: str = "per_item"  # or "batch_mean"
    contrastive_input: str = "ste"  # "ste" | "mu" | "pre_vae"
    contrastive_dim: int = 256
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: float = 100.0  # clamp on exp(tau)
    max_contrastive_frames: int = 8192
    mask_same_phone_negatives: bool = False
    # [project] A linear adversary predicts G (stop-gradient) from the time-pooled token
    # embedding S through a gradient reversal: the semantic branch is pushed to keep the
    # voice out of pooled S. Stages 2 and 3; 0 = off (no adversary parameters at all).
    speaker_adversary_weight: float = 0.0
    # How the branch fights the head: "reverse" (gradient reversal of the head's MSE) or
    # "confusion" (the branch pulls the head's prediction to the batch-mean G; bounded).
    speaker_adversary_mode: str = "reverse"
    # "speaker" mode: the head is a linear classifier over this many training speakers (the
    # batch's "speaker" index, the train manifest's sorted speaker list); the branch pulls
    # its prediction to uniform. Must be >= the number of training speakers.
    speaker_adversary_classes: int = 0
    # The token-path stages the adversary term is in (elsewhere its head sits idle).
    speaker_adversary_stages: tuple[str, ...] = ("semantic", "finetune")
    # [project] Weight of the code-usage term (losses.code_usage_loss: 1 - I(frame; code) /
    # ln K of the soft FSQ assignment) in stages 2 and 3; 0 = off (not computed). Meant for
    # FSQ dimensions that training leaves mostly on one level (600-step `small` A/B: at 1,
    # 43 % -> 59 % of the codes used and the token path 4.8 % worse; docs/training.md).
    code_usage_weight: float = 0.0
    code_usage_temperature: float = 0.1  # of the soft assignment, in squared level units

    def validate(self) -> None:
        if self.kl_hinge not in ("per_item", "batch_mean"):
            raise ConfigError(f"loss.kl_hinge must be per_item or batch_mean, got {self.kl_hinge!r}")
        if not (self.kl_paralinguistic_scale >= 0 and math.isfinite(self.kl_paralinguistic_scale)):
            raise ConfigError("loss.kl_paralinguistic_scale must be finite and >= 0")
        if self.mel_distance not in MEL_DISTANCES:
            raise ConfigError(f"loss.mel_distance must be one of {MEL_DISTANCES}, "
                              f"got {self.mel_distance!r}")
        if self.contrastive_input not in CONTRASTIVE_INPUTS:
            raise ConfigError(f"loss.contrastive_input must be one of {CONTRASTIVE_INPUTS}")
        if self.kl_ramp_end < self.kl_ramp_start:
            raise ConfigError("loss.kl_ramp_end must be >= kl_ramp_start")
        if not (self.speaker_adversary_weight >= 0 and math.isfinite(self.speaker_adversary_weight)):
            raise ConfigError("loss.speaker_adversary_weight must be a finite number >= 0, got "
                              f"{self.speaker_adversary_weight}")
        if self.speaker_adversary_mode not in ADVERSARY_MODES:
            raise ConfigError(f"loss.speaker_adversary_mode must be one of {ADVERSARY_MODES}, "
                              f"got {self.speaker_adversary_mode!r}")
        if (self.speaker_adversary_mode == "speaker") != (self.speaker_adversary_classes > 0):
            raise ConfigError("loss.speaker_adversary_classes (>= 2 training speakers) goes with "
                              "speaker_adversary_mode='speaker', and only with it; got "
                              f"{self.speaker_adversary_classes} with "
                              f"{self.speaker_adversary_mode!r}")
        if self.speaker_adversary_mode == "speaker" and self.speaker_adversary_classes < 2:
            raise ConfigError("loss.speaker_adversary_classes must be >= 2")
        _check_token_stages("loss.speaker_adversary_stages", self.speaker_adversary_stages)
        if not (self.code_usage_weight >= 0 and math.isfinite(self.code_usage_weight)):
            raise ConfigError("loss.code_usage_weight must be a finite number >= 0, got "
                              f"{self.code_usage_weight}")
        if not (self.code_usage_temperature > 0 and math.isfinite(self.code_usage_temperature)):
            raise ConfigError("loss.code_usage_temperature must be a finite number > 0, got "
                              f"{self.code_usage_temperature}")
        if self.max_contrastive_frames < 2 or self.logit_scale_max <= 0:
            raise ConfigError("loss: max_contrastive_frames >= 2 and logit_scale_max > 0 required")


def _check_token_stages(name: str, stages) -> None:
    """A non-empty subset of the token-path stages ("semantic", "finetune"), or ConfigError."""
    if not stages or any(s not in STAGE_NAMES[1:] for s in stages):
        raise ConfigError(f"{name} must be a non-empty subset of {STAGE_NAMES[1:]}, got {stages}")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time input perturbations. They have no parameters, so a trained checkpoint
    exports as is.

    semantic_warp w: in the full forward (stages 2 and 3, training only) the semantic branch
    reads the mel with every frequency scaled by a per-utterance alpha, log-uniform in
    [1 / (1 + w), 1 + w] (audio/warp.py), while the acoustic target A*, the acoustic path and
    the prompt keep the original. The tokens' input then no longer tells the voice (pitch
    and formants move with alpha), so the connector has to take it from G: ContentVec's
    speaker perturbation, on the mel. 0 = off (the paper's recipe).

    voice_warp w: in stages 2 and 3 (training only) the whole example, the mel and the
    prompt alike, is warped by one per-utterance alpha drawn as above: every training voice
    becomes a continuum of voices (VTLP), so G and the connector see more than the corpus's
    handful of speakers and have to interpolate between them, as an unseen voice asks.
    0 = off (the paper's recipe). voice_warp_fraction: the share of items warped (the rest
    keep alpha = 1, the corpus's own voices); voice_warp_stages: the stages that warp.
    """

    semantic_warp: float = 0.0
    voice_warp: float = 0.0
    voice_warp_fraction: float = 1.0
    voice_warp_stages: tuple[str, ...] = ("semantic", "finetune")

    def validate(self) -> None:
        for name in ("semantic_warp", "voice_warp"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"augment.{name} must be in [0, 1), got {value}")
        if not 0.0 < self.voice_warp_fraction <= 1.0:
            raise ConfigError("augment.voice_warp_fraction must be in (0, 1], got "
                              f"{self.voice_warp_fraction}")
        _check_token_stages("augment.voice_warp_stages", self.voice_warp_stages)


@dataclass(frozen=True)
class StageConfig:
    """Run-time settings of one stage; what it trains is in training/stages.py."""

    name: str = "acoustic"
    enabled: bool = True
    steps: int = 200_000
    lr_multiplier: float = 1.0
    batch_size: int = 32  # global batch
    segment_frames: int = 256

    def validate(self) -> None:
        if self.name not in STAGE_NAMES:
            raise ConfigError(f"stage name must be one of {STAGE_NAMES}, got {self.name!r}")
        if self.steps < 0 or self.batch_size < 1 or self.segment_frames < 4:
            raise ConfigError(f"stage {self.name}: steps >= 0, batch >= 1, segment >= 4 required")


@dataclass(frozen=True)
class StagesConfig:
    """The three stages by name (so `--set stages.semantic.steps=1000` works); indexable
    0, 1, 2 in run order."""

    acoustic: StageConfig = field(default_factory=lambda: StageConfig(
        "acoustic", True, 200_000, 1.0, 32, 256))
    semantic: StageConfig = field(default_factory=lambda: StageConfig(
        "semantic", True, 100_000, 1.0, 32, 344))
    finetune: StageConfig = field(default_factory=lambda: StageConfig(
        "finetune", False, 20_000, 0.1, 32, 344))

    def __getitem__(self, index: int) -> StageConfig:
        return getattr(self, STAGE_NAMES[index])

    def __iter__(self):
        return iter([self[i] for i in range(len(STAGE_NAMES))])

    def __len__(self) -> int:
        return len(STAGE_NAMES)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with warm-up + cosine per stage (training.md §8 rows 1-3)."""

    lr: float = 2e-4
    end_lr: float = 1e-5
    warmup_steps: int = 5000
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.01  # matrices only
    clip_norm: float = 1.0  # global norm over trainable leaves; 0 = off
    grad_accum: int = 1  # micro-batches per optimiser step
    # (parameter path prefix, multiplier) pairs: the updates of the leaves under a prefix
    # (whole path components, e.g. "codec/encoder/layer_0") are scaled; the longest
    # matching prefix wins. Empty: one learning rate for every leaf.
    lr_scale: tuple[tuple[str, float], ...] = ()

    def validate(self) -> None:
        if self.lr <= 0 or self.end_lr < 0 or self.warmup_steps < 0 or self.grad_accum < 1:
            raise ConfigError("optim: lr > 0, end_lr >= 0, warmup >= 0, grad_accum >= 1 required")
        prefixes = [p for p, _ in self.lr_scale]
        if len(set(prefixes)) != len(prefixes) or any(not p.strip("/") for p in prefixes):
            raise ConfigError(f"optim.lr_scale: prefixes must be non-empty and distinct, got {prefixes}")
        if any(not m > 0 for _, m in self.lr_scale):
            raise ConfigError(f"optim.lr_scale: multipliers must be > 0, got {self.lr_scale}")


@dataclass(frozen=True)
class InitConfig:
    """Initial parameter values of a fresh run (training/data_init.py). They change no
    module, so every checkpoint still exports exactly to the official layout."""

    mel_stats: bool = False  # first/last SEANet convs absorb per-bin mel mean and std
    # The stride-1 SEANet encoder/decoder start as the mel's rank-k PCA autoencoder
    # (training/pca_init.py); replaces mel_stats, 86 Hz geometry only.
    seanet_pca: bool = False
    stats_batches: int = 16  # training batches the statistics are taken from
    logvar_bias: float | None = None  # bias of both VAE dense_var heads; None = torch default
    # Warm start: the codec weights (and BatchNorm statistics) of another run's latest
    # checkpoint, e.g. a finished stage 1 shared by several stage-2 runs; "" = fresh init.
    codec_from: str = ""

    def validate(self) -> None:
        if self.stats_batches < 1:
            raise ConfigError("init.stats_batches must be >= 1")
        if self.mel_stats and self.seanet_pca:
            raise ConfigError("init.seanet_pca sets the first/last SEANet convs itself: "
                              "set init.mel_stats=false with it")


@dataclass(frozen=True)
class ExecutionConfig:
    """How the step runs, not what it computes: outside the run's fingerprint, so a run may
    resume under other settings (the values agree up to float summation order).

    scan_layers: "auto" (on off CPU), "on" or "off": the offline transformer layers as one
      `lax.scan` over stacked params, one compiled layer body per stack.
    remat: "auto" ("full" off CPU, "none" on CPU), "none", "full" or "dots": the
      `jax.checkpoint` policy of the scanned layer body (not "none" needs the scan).
    device_prefetch: training batches placed on the devices ahead of their step
      (training/prefetch.py); 0 transfers each batch when its step is dispatched.
    """

    scan_layers: str = "auto"
    remat: str = "auto"
    device_prefetch: int = 2

    def validate(self) -> None:
        if self.scan_layers not in ("auto", "on", "off"):
            raise ConfigError(f"execution.scan_layers must be auto, on or off, got {self.scan_layers!r}")
        if self.remat not in ("auto", "none", "full", "dots"):
            raise ConfigError(f"execution.remat must be auto, none, full or dots, got {self.remat!r}")
        if self.scan_layers == "off" and self.remat not in ("auto", "none"):
            raise ConfigError("execution.remat needs execution.scan_layers on (or auto)")
        if self.device_prefetch < 0:
            raise ConfigError(f"execution.device_prefetch must be >= 0, got {self.device_prefetch}")


@dataclass(frozen=True)
class MeshConfig:
    """Device mesh (data, fsdp). data = -1 takes every device not used by fsdp."""

    data: int = -1
    fsdp: int = 1
    fsdp_min_size: int = 2 ** 12  # params smaller than this stay replicated

    def validate(self) -> None:
        if self.fsdp < 1 or (self.data < 1 and self.data != -1):
            raise ConfigError("mesh: fsdp >= 1 and data >= 1 (or -1) required")


@dataclass(frozen=True)
class DistributedConfig:
    """jax.distributed.initialize arguments; empty coordinator = single process."""

    coordinator_address: str = ""
    num_processes: int = 1
    process_id: int = 0
    local_device_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 2000
    keep: int = 3
    async_save: bool = True


@dataclass(frozen=True)
class LogConfig:
    every_steps: int = 50
    eval_every_steps: int = 5000  # 0 = only at the end of each stage
    eval_batches: int = 8
    audio_examples: int = 2
    griffin_lim_iters: int = 32


@dataclass(frozen=True)
class DataSourceConfig:
    """Where batches come from: `manifest` (the grain pipeline over `root`), `packed` (the
    same pipeline over the packed ArrayRecord dataset at `packed`, a path or URL) or
    `synthetic` (tests, bench)."""

    kind: str = "manifest"
    root: str = "cache/corpus"
    packed: str = ""  # packed dataset folder / URL (`secoustic data pack`), kind "packed"
    packed_verify: str = "size"  # shard check on opening: none | size | sha256
    train_split: str = "train"
    valid_split: str = "valid"
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    synthetic_vocab: int = 24  # phone inventory size of the synthetic source
    synthetic_nan_batches: tuple[int, ...] = ()  # positions whose mel is NaN (NaN-guard tests)

    def validate(self) -> None:
        if self.kind not in ("manifest", "packed", "synthetic"):
            raise ConfigError(f"data.kind must be manifest, packed or synthetic, got {self.kind!r}")
        if self.kind == "packed" and not self.packed:
            raise ConfigError("data.kind=packed needs data.packed (the packed dataset folder)")
        if self.packed_verify not in ("none", "size", "sha256"):
            raise ConfigError(f"data.packed_verify must be none, size or sha256, got "
                              f"{self.packed_verify!r}")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything a training run needs; hashable, so it can be a static jit argument."""

    name: str = "secoustic"
    codec: CodecConfig = field(default_factory=CodecConfig)
    phonemes: PhonemeEncoderConfig = field(default_factory=PhonemeEncoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    init: InitConfig = field(default_factory=InitConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    data: DataSourceConfig = field(default_factory=DataSourceConfig)
    seed: int = 0
    nan_max_consecutive: int = 20  # this many skipped steps in a row stop the run

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for sub in (self.phonemes, self.loss, self.augment, self.optim, self.init, self.mesh,
                    self.execution, self.data, *self.stages):
            sub.validate()
        names = tuple(s.name for s in self.stages)
        if names != STAGE_NAMES:
            raise ConfigError(f"stage names must be {STAGE_NAMES} in order, got {names}")
        for s in self.stages:
            if s.enabled and s.segment_frames % self.codec.hop:
                raise ConfigError(f"stage {s.name}: segment_frames must be a multiple of hop "
                                  f"{self.codec.hop}")
            if s.enabled and s.batch_size % self.optim.grad_accum:
                raise ConfigError(f"stage {s.name}: batch_size must divide by grad_accum")

    def stage(self, index: int) -> StageConfig:
        return self.stages[index]

    @property
    def enabled_stages(self) -> tuple[int, ...]:
        return tuple(i for i, s in enumerate(self.stages) if s.enabled and s.steps > 0)


def load_experiment(path, overrides=None) -> ExperimentConfig:
    """Runs `get_config()` of a config file (configs/<preset>.py) and applies dotted overrides."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    spec = importlib.util.spec_from_file_location(f"secoustic_config_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{p} defines no get_config()")
    cfg = module.get_config()
    if not isinstance(cfg, ExperimentConfig):
        raise ConfigError(f"{p}: get_config() returned {type(cfg).__name__}, not ExperimentConfig")
    return apply_overrides(cfg, overrides)
