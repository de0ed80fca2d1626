"""Frozen configs of the data side: phone normalisation, the embedded corpus, the pipeline.

Import from `secoustic_jax.config.data` directly (not re-exported by `secoustic_jax.config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from secoustic_jax.config.base import ConfigError
from secoustic_jax.config.model import MelConfig

# Mel frames per second at 22.05 kHz / hop 256 (data.md §1).
FRAME_RATE = 22050 / 256
SPLITS = ("train", "valid", "test", "test_unseen")
PROMPT_SOURCES = ("same", "other")
HOST_SPLITS = ("records", "shards")
FEATURES = ("mel", "waveform")


@dataclass(frozen=True)
class PhoneConfig:
    """Phone-label normalisation (data.md §3)."""

    keep_stress: bool = False  # ARPAbet stress digits (AH0 -> AH unless True)


@dataclass(frozen=True)
class CorpusConfig:
    """The embedded synthetic corpus (data.md §5.6)."""

    size: str = "default"  # "tiny", "default" or an integer: utterances per WER voice
    seed: int = 20260101
    voices: tuple[str, ...] = ()  # empty: the preset for `size`
    heldout_voice: str = "flite_awb"  # all its utterances go to split "test_unseen"; "" = none
    workers: int = 2  # process pool over voices
    sentences_per_utt: tuple[int, int] = (2, 3)  # inclusive range of joined sentences
    stretch_range: tuple[float, float] = (0.85, 1.2)  # duration stretch / length_scale
    espeak_pitch_range: tuple[int, int] = (30, 70)
    valid_fraction: float = 0.1  # share of the non-held-out utterances per split
    test_fraction: float = 0.1

    def validate(self) -> None:
        if self.size not in ("tiny", "default") and not str(self.size).isdigit():
            raise ConfigError(f"corpus.size must be tiny, default or an integer, got {self.size!r}")
        lo, hi = self.sentences_per_utt
        if not 1 <= lo <= hi:
            raise ConfigError(f"corpus.sentences_per_utt must be 1 <= lo <= hi, got {lo, hi}")
        if self.workers < 1:
            raise ConfigError("corpus.workers must be >= 1")
        if not 0 <= self.valid_fraction + self.test_fraction < 1:
            raise ConfigError("corpus: valid_fraction + test_fraction must be in [0, 1)")


@dataclass(frozen=True)
class PipelineConfig:
    """Training / evaluation input pipeline (training.md §7).

    segment_frames and crop_multiple must be multiples of token_hop so that the 86 Hz
    and 21.5 Hz variants share one pipeline and token boundaries stay aligned.
    """

    segment_frames: int = 344  # mel frames per crop (stage 2: 344, stage 1: 256)
    crop_multiple: int = 4  # crop starts are multiples of this
    token_hop: int = 4  # mel frames per token for `token_phones` (21.5 Hz)
    prompt_frames: int = 300  # paralinguistic prompt crop
    # Where the prompt crop comes from: "same" utterance (training.md §7 default) or
    # "other", another utterance of the same speaker (content cannot leak into G).
    prompt_source: str = "same"
    max_phones: int = 128  # static phone axis P of a batch
    pad_short: bool = False  # True: pad utterances shorter than a crop (masked); else skip
    require_alignment: bool = True  # stage 2: phones/durations must be present
    shuffle: bool = True
    num_epochs: int | None = None  # None = repeat forever (train)
    worker_count: int = 0  # grain multiprocessing workers (0 = in-process)
    num_threads: int = 2  # grain read threads per process
    prefetch_buffer: int = 8
    feature_cache: str | None = None  # folder for cached full-utterance mels (.npy)
    batch_axes: tuple[str, ...] = ("data", "fsdp")  # mesh axes the batch dim is split over
    # How training hosts divide a packed split: "records" (record k to host k % hosts: the
    # manifest source's batches, every host opens every shard file) or "shards" (shard file
    # i to host i % hosts: a host opens only its own files; prompts come from its own
    # records). The manifest source has no files to divide and refuses "shards".
    host_split: str = "records"
    # What a batch carries: "mel" (host log-mel crops) or "waveform" (int16 waveform windows
    # `wav` / `prompt_wav` from packed --waveform records; the trainer computes the mel on
    # the device when it places the batch, data/device_mel.py).
    features: str = "mel"
    mel: MelConfig = field(default_factory=MelConfig)

    @property
    def token_frames(self) -> int:
        """Token frames per crop: segment_frames / token_hop."""
        return self.segment_frames // self.token_hop

    def validate(self) -> None:
        if self.segment_frames <= 0 or self.segment_frames % self.token_hop:
            raise ConfigError(f"pipeline.segment_frames={self.segment_frames} must be a positive "
                              f"multiple of token_hop={self.token_hop}")
        if self.crop_multiple <= 0 or self.crop_multiple % self.token_hop:
            raise ConfigError("pipeline.crop_multiple must be a positive multiple of token_hop")
        if self.prompt_frames <= 0 or self.max_phones <= 0:
            raise ConfigError("pipeline.prompt_frames and max_phones must be positive")
        if self.prompt_source not in PROMPT_SOURCES:
            raise ConfigError(f"pipeline.prompt_source must be one of {PROMPT_SOURCES}, "
                              f"got {self.prompt_source!r}")
        if self.features not in FEATURES:
            raise ConfigError(f"pipeline.features must be one of {FEATURES}, "
                              f"got {self.features!r}")
        if self.host_split not in HOST_SPLITS:
            raise ConfigError(f"pipeline.host_split must be one of {HOST_SPLITS}, "
                              f"got {self.host_split!r}")
        if self.worker_count < 0 or self.num_threads < 1:
            raise ConfigError("pipeline: worker_count >= 0 and num_threads >= 1 required")
