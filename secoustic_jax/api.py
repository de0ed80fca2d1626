"""The public facade: `Codec` — numpy in, numpy out, batched, jitted, with lengths.

    codec = Codec.from_torch("secousticodec_86_hz.pt")     # strict official import
    codec.save("ckpt/86hz"); codec = Codec.load("ckpt/86hz")
    mel = codec.mel(wav, 22050)                            # [B, T, 80]
    enc = codec.encode_mel(mel, lengths)                   # tokens [B, T'] int32, acoustic, ...
    tokens = codec.encode_tokens(mel, lengths)             # tokens only: half the encode cost
    g = codec.prompt_embedding(mel, lengths)               # [B, 512]
    mel_hat = codec.decode_tokens(enc.tokens, g)           # [B, hop*T', 80]

Compilation: every entry point is one `jax.jit` function per Codec; jit caches one
executable per input shape. To bound the number of shapes, the time axis is padded up to
a bucket (`bucket_length`: at least 64 tokens, then 16 steps per octave, so at most
6.25 % padding: 10 s at 86 Hz is 861 tokens run as 864; bench/bench_facade.py) and
outputs are cut back. The codec is causal, so right padding never changes
valid outputs; for the 21.5 Hz encoder the padded frames are masked before each strided
convolution (`lengths`), so a padded item equals the item run alone. Prompts are cropped
(centred min(T, 300) frames per item) and padded to 300 frames with lengths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from secoustic_jax.audio.io import prepare_waveform
from secoustic_jax.audio.mel import log_mel
from secoustic_jax.checkpoint import codec_store
from secoustic_jax.checkpoint.convert import (codec_state_dict, export_codec, import_codec,
                                              import_codec_state_dict, resolve_config)
from secoustic_jax.checkpoint.table import CheckpointError
from secoustic_jax.config.model import CodecConfig
from secoustic_jax.model.codec import SecoustiCodec
from secoustic_jax.streaming import lowp
from secoustic_jax.tree import flatten

MIN_BUCKET_TOKENS = 64
# Padding is compute: at 4 steps per octave 10 s at 86 Hz ran as 896 tokens, 4 % more work
# than the 861 it needs. 16 steps bound the padding by 1/16 (evaluation batches by coarser
# buckets of its own: eval/codec_run.py).
BUCKET_STEPS_PER_OCTAVE = 16


def bucket_length(n: int, minimum: int = MIN_BUCKET_TOKENS,
                  steps_per_octave: int = BUCKET_STEPS_PER_OCTAVE) -> int:
    """Smallest bucket >= n: `minimum`, else a multiple of 2^(floor(log2 n) - log2 steps)."""
    if n <= minimum:
        return minimum
    step = 2 ** max(0, int(math.floor(math.log2(n))) - int(math.log2(steps_per_octave)))
    return -(-n // step) * step


@dataclasses.dataclass(frozen=True)
class Encoded:
    """Output of `Codec.encode_mel` (numpy). lengths: valid token frames per item."""

    tokens: np.ndarray  # [B, T'] int32
    acoustic: np.ndarray  # [B, T', d] float32
    semantic_mu: np.ndarray  # [B, T', d] float32
    lengths: np.ndarray  # [B] int64, ceil(T_b / hop)


def _as_batch(x, ndim: int, what: str, dtype=np.float32) -> tuple[np.ndarray, bool]:
    """[..] with ndim or ndim-1 axes -> (batched array, whether a batch axis was added)."""
    a = np.asarray(x)
    if a.ndim == ndim - 1:
        a, added = a[None], True
    elif a.ndim == ndim:
        added = False
    else:
        raise ValueError(f"{what}: expected {ndim - 1} or {ndim} axes, got shape {a.shape}")
    if a.shape[0] == 0 or (a.ndim > 1 and a.shape[1] == 0):
        raise ValueError(f"{what}: empty input (shape {a.shape})")
    if dtype is not None:
        if not np.issubdtype(a.dtype, np.number):
            raise ValueError(f"{what}: expected numbers, got dtype {a.dtype}")
        a = a.astype(dtype)
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise ValueError(f"{what}: contains {int((~np.isfinite(a)).sum())} NaN/Inf value(s)")
    return a, added


def _lengths(lengths, batch: int, total: int, what: str) -> np.ndarray:
    if lengths is None:
        return np.full((batch,), total, np.int64)
    out = np.asarray(lengths).astype(np.int64).reshape(-1)
    if out.shape != (batch,) or (out < 1).any() or (out > total).any():
        raise ValueError(f"{what}: lengths must be [{batch}] ints in 1..{total}, got {lengths!r}")
    return out


def _pad_time(x: np.ndarray, length: int, value=0) -> np.ndarray:
    pad = [(0, 0)] * x.ndim
    pad[1] = (0, length - x.shape[1])
    return np.pad(x, pad, constant_values=value)


def prompt_crop(total: int, official: bool = False, frames: int = 300) -> tuple[int, int]:
    """[start, end) of the prompt crop of a T-frame mel (model.md §11.2, §16.1).

    Default: the centred min(T, frames) frames. `official=True` emulates the official
    slice [T//2 - 150, T//2 + 150) including Python's wrap-around for T < 300.
    """
    if not official:
        n = min(total, frames)
        start = (total - n) // 2
        return start, start + n
    start, end, _ = slice(total // 2 - frames // 2, total // 2 + frames // 2).indices(total)
    if end <= start:
        raise ValueError(f"official prompt crop of a {total}-frame mel is empty")
    return start, end


def _init_inputs(cfg: CodecConfig):
    """Smallest inputs that touch every submodule through the training forward."""
    mel = jnp.zeros((1, 2 * cfg.hop, cfg.mel.n_mels), jnp.float32)
    prompt = jnp.zeros((1, 4, cfg.mel.n_mels), jnp.float32)
    return mel, prompt, jnp.full((1,), 4, jnp.int32)


@functools.lru_cache(maxsize=8)
def _init_fn(cfg: CodecConfig):
    """One jitted init per config (compiling the whole network dominates init time)."""
    module = SecoustiCodec(cfg)
    return jax.jit(lambda key: nn.meta.unbox(module.init(key, *_init_inputs(cfg), train=False)))


def init_variables(cfg: CodecConfig, seed: int = 0) -> dict:
    """Unboxed {"params", "batch_stats"} of a freshly initialised SecoustiCodec(cfg)."""
    return _init_fn(cfg)(jax.random.PRNGKey(seed))


@functools.lru_cache(maxsize=8)
def expected_leaves(cfg: CodecConfig) -> dict:
    """{Flax path: (shape, dtype)} of SecoustiCodec(cfg)'s variables (shape evaluation only)."""
    shapes = jax.eval_shape(_init_fn(cfg), jax.random.PRNGKey(0))
    return {p: (tuple(v.shape), np.dtype(v.dtype)) for p, v in flatten(shapes).items()}


def check_structure(cfg: CodecConfig, variables, what: str = "codec") -> None:
    """Refuses variables whose leaves differ from the module's (paths, shapes, dtypes)."""
    want = expected_leaves(cfg)
    have = {p: (tuple(np.shape(v)), np.dtype(getattr(v, "dtype", np.float32)))
            for p, v in flatten(dict(variables)).items()}
    problems = [f"  missing:    {'/'.join(p)}" for p in want if p not in have]
    problems += [f"  unexpected: {'/'.join(p)}" for p in have if p not in want]
    problems += [f"  mismatch:   {'/'.join(p)}: {list(have[p][0])} {have[p][1]}, expected "
                 f"{list(want[p][0])} {want[p][1]}" for p in want if p in have and have[p] != want[p]]
    if problems:
        raise CheckpointError(f"{what}: variables do not fit the model:\n" + "\n".join(problems))


MATMUL_DTYPES = ("float32", "bfloat16")


@functools.lru_cache(maxsize=64)
def _entry_point(cfg: CodecConfig, method: str, matmul_dtype: str = "float32"):
    """jax.jit of one SecoustiCodec method, shared by every Codec of this config and matmul
    dtype; jit keeps one executable per input shape."""
    module = SecoustiCodec(cfg)
    narrow = lowp.bf16_dots if matmul_dtype == "bfloat16" else contextlib.nullcontext

    def call(variables, *args):
        with narrow():
            return module.apply(variables, *args, method=method)

    return jax.jit(call)


class Codec:
    """A SecoustiCodec with its weights; every method takes and returns numpy arrays."""

    def __init__(self, config: CodecConfig, variables: dict, matmul_dtype: str = "float32"):
        """matmul_dtype "bfloat16": the four transformer stacks' weights are held in bf16 and
        multiply bf16-rounded activations with float32 accumulation (`lowp.bf16_dots`;
        ~1.8x faster offline on AVX512_BF16 CPUs; a measured precision change that moves
        some tokens, bench/NOTES.md section 10). SEANet, FSQ, the paralinguistic encoder
        and attention stay float32; saving and export always write the float32 weights."""
        if matmul_dtype not in MATMUL_DTYPES:
            raise ValueError(f"matmul_dtype must be one of {MATMUL_DTYPES}, got {matmul_dtype!r}")
        self.config, self.matmul_dtype = config, matmul_dtype
        self.module = SecoustiCodec(config)
        check_structure(config, variables, what=f"codec ({config.variant})")
        self.variables = jax.tree_util.tree_map(jnp.asarray, {
            c: variables[c] for c in ("params", "batch_stats") if c in variables})
        self._run_variables = self.variables
        if matmul_dtype == "bfloat16":
            self._run_variables = lowp.bf16_weights(self.variables)

    # ---- construction / persistence --------------------------------------------------
    @classmethod
    def from_torch(cls, path, variant: str | None = None, config: CodecConfig | None = None, *,
                   trusted: bool = False, matmul_dtype: str = "float32") -> "Codec":
        """Strict import of an official `.pt` / `.safetensors` checkpoint (variant detected)."""
        cfg, variables, _ = import_codec(path, variant=variant, config=config, trusted=trusted)
        return cls(cfg, variables, matmul_dtype)

    @classmethod
    def from_state_dict(cls, state_dict, variant: str | None = None,
                        config: CodecConfig | None = None) -> "Codec":
        """Strict import of an in-memory official state dict (numpy arrays)."""
        cfg = resolve_config(state_dict, variant, config)
        return cls(cfg, import_codec_state_dict(state_dict, cfg))

    @classmethod
    def init(cls, config: CodecConfig, seed: int = 0, matmul_dtype: str = "float32") -> "Codec":
        """Fresh weights with PyTorch-default initialisation (training.md §6)."""
        return cls(config, init_variables(config, seed), matmul_dtype)

    @classmethod
    def load(cls, directory, config: CodecConfig | None = None,
             matmul_dtype: str = "float32") -> "Codec":
        """Reads a `save` directory; `config`, if given, must equal the stored one."""
        cfg, variables = codec_store.load(directory, config)
        return cls(cfg, variables, matmul_dtype)

    def save(self, directory) -> pathlib.Path:
        """Writes params + batch_stats (safetensors) and the config (JSON), atomically."""
        return codec_store.save(directory, self.config, self.variables)

    def torch_state_dict(self) -> dict[str, np.ndarray]:
        """The official state dict (412 keys for full presets), numpy, official order."""
        return codec_state_dict(jax.device_get(self.variables), self.config)

    def export_torch(self, path) -> pathlib.Path:
        """Writes the official state dict as `.pt` or `.safetensors` (by suffix)."""
        return export_codec(jax.device_get(self.variables), self.config, path)

    # ---- jitted entry points -------------------------------------------------------------
    def _fn(self, method: str):
        return functools.partial(_entry_point(self.config, method, self.matmul_dtype),
                                 self._run_variables)

    def mel(self, wav, sample_rate: int) -> np.ndarray:
        """wav [N] or [B, N] at `sample_rate` -> log-mel [T, 80] / [B, T, 80] (T = N // 256).

        Any real dtype: integer PCM is scaled by its type's range, exactly as files are.
        A 2-D array with fewer columns than one hop (256) cannot be a batch of clips: it is
        channels-last audio [N, C] (soundfile's layout) and is averaged to mono -> [T, 80].
        Other rates are resampled to 22.05 kHz (soxr VHQ) first.
        """
        arr = np.asarray(wav)
        target = self.config.mel.sample_rate
        if arr.ndim == 2 and arr.shape[1] < self.config.mel.hop_length <= arr.shape[0]:
            one = prepare_waveform(arr, int(sample_rate), target)  # [N, C] -> mono
            return np.asarray(log_mel(one[None], self.config.mel))[0]
        # dtype=None: prepare_waveform checks the dtype and rescales integer PCM.
        wav, added = _as_batch(arr, 2, "wav", dtype=None)
        rows = [prepare_waveform(w, int(sample_rate), target) for w in wav]
        out = np.asarray(log_mel(np.stack(rows), self.config.mel))
        return out[0] if added else out

    def encode_mel(self, mel, lengths=None) -> Encoded:
        """mel [B, T, 80] (or [T, 80]), lengths [B] in frames -> Encoded (token-rate arrays).

        Items are right-padded; outputs beyond an item's length are padding.
        """
        padded, lens, n_tok, added = self._bucketed_mel(mel, lengths, "encode_mel")
        out = self._fn("encode")(padded, jnp.asarray(lens, jnp.int32))
        tok_lens = np.array([self.config.num_tokens(int(n)) for n in lens], np.int64)
        cut = lambda a: np.asarray(a)[:, :n_tok]  # noqa: E731
        enc = Encoded(cut(out.tokens).astype(np.int32), cut(out.acoustic), cut(out.semantic_mu),
                      tok_lens)
        if added:
            enc = Encoded(enc.tokens[0], enc.acoustic[0], enc.semantic_mu[0], enc.lengths)
        return enc

    def encode_tokens(self, mel, lengths=None) -> np.ndarray:
        """mel [B, T, 80] (or [T, 80]), lengths [B] -> tokens [B, T'] (or [T']) int32.

        Equal to `encode_mel(...).tokens` at half its cost: the acoustic stack, which only
        the acoustic path needs, is not run. Token lengths: `config.num_tokens(length)`.
        """
        padded, lens, n_tok, added = self._bucketed_mel(mel, lengths, "encode_tokens")
        tokens = np.asarray(self._fn("encode_tokens")(padded, jnp.asarray(lens, jnp.int32)))
        tokens = tokens[:, :n_tok].astype(np.int32)
        return tokens[0] if added else tokens

    def prompt_embedding(self, mel, lengths=None, *, official_crop: bool = False) -> np.ndarray:
        """Paralinguistic vector G (mu) of prompt mels [B, T, 80] (or [T, 80]) -> [B, d].

        Each item is cropped to its centred min(T_b, 300) frames (`official_crop=True`:
        the official slice, model.md §16.1), then run with a length mask.
        """
        mel, added = _as_batch(mel, 3, "prompt mel")
        self._check_mel(mel)
        b, t, _ = mel.shape
        lens = _lengths(lengths, b, t, "prompt_embedding")
        frames = self.config.paralinguistic.prompt_frames
        crops = [prompt_crop(int(n), official_crop, frames) for n in lens]
        width = max(e - s for s, e in crops)
        width = frames if width <= frames else width
        batch = np.zeros((b, width, mel.shape[2]), np.float32)
        for i, (s, e) in enumerate(crops):
            batch[i, : e - s] = mel[i, s:e]
        crop_lens = jnp.asarray([e - s for s, e in crops], jnp.int32)
        g = np.asarray(self._fn("prompt_embedding")(batch, crop_lens))
        return g[0] if added else g

    def decode_tokens(self, tokens, paralinguistic) -> np.ndarray:
        """tokens [B, T'] int + G [B, d] -> mel [B, hop*T', 80] (official length)."""
        tokens, added = _as_batch(tokens, 2, "tokens", dtype=None)
        if not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"tokens: expected integers, got dtype {tokens.dtype}")
        size = self.config.codebook_size
        if tokens.min() < 0 or tokens.max() >= size:
            raise ValueError(f"tokens: values must lie in 0..{size - 1}, got "
                             f"{tokens.min()}..{tokens.max()}")
        g, _ = _as_batch(paralinguistic, 2, "paralinguistic")
        d = self.config.transformer.d_model
        if g.shape != (tokens.shape[0], d):
            raise ValueError(f"paralinguistic: expected shape [{tokens.shape[0]}, {d}], "
                             f"got {list(g.shape)}")
        n = tokens.shape[1]
        padded = _pad_time(tokens.astype(np.int32), bucket_length(n), (size - 1) // 2)
        mel = np.asarray(self._fn("decode_tokens")(padded, g))[:, : self.config.hop * n]
        return mel[0] if added else mel

    def decode_acoustic(self, acoustic) -> np.ndarray:
        """Acoustic embedding A [B, T', d] -> mel [B, hop*T', 80]."""
        a, added = _as_batch(acoustic, 3, "acoustic")
        d = self.config.transformer.d_model
        if a.shape[2] != d:
            raise ValueError(f"acoustic: expected {d} channels, got shape {list(a.shape)}")
        n = a.shape[1]
        mel = np.asarray(self._fn("decode_acoustic")(_pad_time(a, bucket_length(n))))
        mel = mel[:, : self.config.hop * n]
        return mel[0] if added else mel

    def _bucketed_mel(self, mel, lengths, what: str):
        """Validated mel right-padded to its token bucket -> (padded [B, hop*bucket, 80],
        lengths [B] (numpy), token count T' of the unpadded input, whether a batch axis
        was added)."""
        mel, added = _as_batch(mel, 3, "mel")
        self._check_mel(mel)
        b, t, _ = mel.shape
        lens = _lengths(lengths, b, t, what)
        n_tok = self.config.num_tokens(t)
        padded = _pad_time(mel, self.config.hop * bucket_length(n_tok))
        return padded, lens, n_tok, added

    def _check_mel(self, mel: np.ndarray) -> None:
        if mel.shape[2] != self.config.mel.n_mels:
            raise ValueError(f"mel: expected {self.config.mel.n_mels} bins in the last axis "
                             f"(channels-last [B, T, 80]), got shape {list(mel.shape)}")
