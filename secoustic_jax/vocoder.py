"""Mel -> waveform: the HiFT vocoder (official weights) or a weight-free Griffin-Lim FALLBACK.

    voc = load_vocoder("hift.pt")          # or "griffin-lim", a .safetensors, a saved dir
    wav = voc(mel)                          # mel [T, 80] -> [256 T]; [B, T, 80] -> [B, 256 T]
    wav = fit_length(wav, num_samples)      # back to the input length N (see below)

HiFT randomness (harmonic phases, additive noise) comes from `key` or `seed` (default 0);
`deterministic=True` zeroes both (the golden source; for tests, it also removes the
unvoiced excitation). Long inputs are vocoded in windows of `chunk_frames` mel frames with
`receptive_field_frames` of context on each side, exactly cropped (no crossfade); f0 is
predicted per window (it needs 5 frames of context), the harmonic phase is carried across
windows in double-float, and the noise is a function of the absolute sample index, so
the chunked output equals the whole-utterance output up to float rounding.

Griffin-Lim (evaluation.md §2.3) is clearly a fallback: a different, weaker system whose
numbers must never be compared with HiFT numbers. Its name is "griffin-lim-32".

Output lengths: the vocoder returns 256 samples per mel frame. For an N-sample input
(T = floor(N/256) mel frames) the 86 Hz codec decodes T frames, 256 T <= N samples (pad);
the 21.5 Hz codec decodes 4 ceil(T/4) frames, usually > N (trim), but < N when T is a
multiple of 4 and N is not a multiple of 256 (pad). `fit_length` trims or zero-pads to N
(model.md §3, §11); `output_length_rule` says which.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import pathlib
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from secoustic_jax.checkpoint.hift_names import hift_table
from secoustic_jax.checkpoint.table import CheckpointError, export_state_dict, import_state_dict
from secoustic_jax.checkpoint.torch_io import load_state_dict, save_state_dict
from secoustic_jax.config.base import from_dict, to_dict
from secoustic_jax.config.hift import HiFTConfig
from secoustic_jax.model import hift_source as dsp
from secoustic_jax.model.hift import HiFT, receptive_field_frames
from secoustic_jax.model.hift_bf16 import bf16_convs, check_conv_dtype

HOP = 256  # waveform samples per mel frame
GL_ITERS = 32
_SAVE_FORMAT = "secoustic-vocoder-v1"
_PROBE_KEY = "conv_pre.parametrizations.weight.original1"
_F0_KEY = "f0_predictor.condnet.0.parametrizations.weight.original1"


class LengthRule(NamedTuple):
    """How a vocoded waveform is brought back to the input length N."""

    vocoder_samples: int  # 256 * decoded mel frames (the official length)
    target: int  # N
    pad: int  # zeros appended (86 Hz: N mod 256)
    trim: int  # samples dropped at the end (21.5 Hz: up to 3*256 + 255)


def output_length_rule(num_samples: int, decoded_frames: int) -> LengthRule:
    """The trim-or-pad rule for an N-sample input whose decoder returned `decoded_frames`
    mel frames (use `CodecConfig.decoded_frames(N // 256)`)."""
    produced = HOP * decoded_frames
    return LengthRule(produced, num_samples, max(num_samples - produced, 0),
                      max(produced - num_samples, 0))


def fit_length(wav: np.ndarray, num_samples: int) -> np.ndarray:
    """Trims or zero-pads the last axis of wav [..., L] to num_samples."""
    wav = np.asarray(wav)
    if num_samples < 0:
        raise ValueError(f"fit_length: negative target length {num_samples}")
    n = wav.shape[-1]
    if n >= num_samples:
        return wav[..., :num_samples]
    pad = [(0, 0)] * (wav.ndim - 1) + [(0, num_samples - n)]
    return np.pad(wav, pad)


def check_mel(mel, n_mels: int = 80) -> tuple[np.ndarray, bool]:
    """Validates a log-mel [T, n_mels] or [B, T, n_mels]; returns ([B, T, n_mels] float32,
    was_2d). NaN / Inf are refused (a vocoder would turn them into noise or silence)."""
    mel = np.asarray(mel)
    if mel.ndim not in (2, 3) or mel.shape[-1] != n_mels:
        raise ValueError(f"vocoder: mel must be [T, {n_mels}] or [B, T, {n_mels}] "
                         f"(channels last), got shape {list(mel.shape)}")
    if not np.issubdtype(mel.dtype, np.floating):
        raise ValueError(f"vocoder: mel must be floating point, got {mel.dtype}")
    if mel.shape[-2] < 1 or (mel.ndim == 3 and mel.shape[0] < 1):
        raise ValueError(f"vocoder: empty mel {list(mel.shape)}")
    bad = ~np.isfinite(mel)
    if bad.any():
        frame = int(np.argwhere(bad)[0][-2])
        raise ValueError(f"vocoder: mel contains {int(bad.sum())} NaN/Inf values "
                         f"(first at frame {frame}); refusing to vocode it")
    was_2d = mel.ndim == 2
    return (mel[None] if was_2d else mel).astype(np.float32), was_2d


def chunk_plan(num_frames: int, core: int, context: int) -> list[tuple[int, int, int, int]]:
    """Windows covering [0, T): (start, length, emit_from, emit_to) in frames.

    Every window has the same length W = min(T, core + 2 context) (one compilation); it
    emits only frames that have `context` frames of real input on both sides, or that
    touch an end of the utterance, where the window edge is the utterance edge.
    """
    width = min(num_frames, core + 2 * context)
    plan, pos = [], 0
    while pos < num_frames:
        start = min(max(pos - context, 0), num_frames - width)
        end = num_frames if start + width == num_frames else start + width - context
        plan.append((start, width, pos, end))
        pos = end
    return plan


def _file_digest(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _infer_config(sd: dict, path) -> HiFTConfig:
    """Official constants, widths read from the file (official 512/512, golden 64/64)."""
    if _PROBE_KEY not in sd:
        sample = ", ".join(list(sd)[:3])
        what = (" (it looks like a SecoustiCodec codec checkpoint)"
                if any(k.startswith(("encoder.", "decoder.", "fsq.")) for k in sd) else "")
        raise CheckpointError(f"{path}: not a HiFT vocoder state dict{what}: no key "
                              f"{_PROBE_KEY!r} among its {len(sd)} entries (first: {sample})")
    base = int(np.shape(sd[_PROBE_KEY])[0])
    f0 = int(np.shape(sd[_F0_KEY])[0]) if _F0_KEY in sd else 512
    return HiFTConfig(base_channels=base, f0_cond_channels=f0)


class Vocoder:
    """A mel vocoder: HiFT with weights, or the Griffin-Lim fallback. See the module doc."""

    def __init__(self, config: HiFTConfig | None, variables: dict | None, name: str,
                 chunk_frames: int = 1024, conv_dtype: str = "float32"):
        """conv_dtype "bfloat16": the decoder's convs with bf16 operands and float32
        accumulation (`model.hift_bf16`; ~1.7x faster on an AVX512_BF16 CPU, a measured
        precision change); the name gets a "+bf16conv" suffix so results never mix."""
        self.config, self.variables, self.name = config, variables, name
        self.chunk_frames = chunk_frames
        self.conv_dtype = check_conv_dtype(conv_dtype)
        if variables is not None:
            if conv_dtype != "float32":
                self.name = f"{name}+bf16conv"
            self._context = receptive_field_frames(config)
            self._f0_fn, self._synth, self._offsets = _compiled(config, conv_dtype)

    @property
    def is_fallback(self) -> bool:
        return self.variables is None

    # ---- construction ---------------------------------------------------------------
    @classmethod
    def from_torch(cls, path, *, trusted: bool = False, config: HiFTConfig | None = None,
                   **kw) -> "Vocoder":
        """An official hift.pt (or a .safetensors in the official layout), strictly."""
        path = pathlib.Path(path)
        sd, _ = load_state_dict(path, trusted=trusted)
        cfg = config or _infer_config(sd, path)
        variables = import_state_dict(hift_table(cfg), sd, what=f"{path} (HiFT vocoder)")
        return cls(cfg, jax.tree.map(jnp.asarray, variables),
                   f"hift:{_file_digest(path)[:12]}", **kw)

    @classmethod
    def griffin_lim(cls) -> "Vocoder":
        """The weight-free FALLBACK (evaluation.md §2.3): 32 Griffin-Lim iterations."""
        return cls(None, None, f"griffin-lim-{GL_ITERS}")

    @classmethod
    def init_random(cls, config: HiFTConfig, seed: int = 0, **kw) -> "Vocoder":
        """Random PyTorch-default weights (benchmarks and tests only)."""
        v = HiFT(config).init(jax.random.PRNGKey(seed), jnp.zeros((1, 4, config.in_channels)))
        return cls(config, nn.meta.unbox(v), f"hift-random:{seed}", **kw)

    def export_state_dict(self) -> dict[str, np.ndarray]:
        """The official 227-entry layout (numpy, torch shapes, state-dict order)."""
        if self.is_fallback:
            raise ValueError("griffin-lim has no weights to export")
        return export_state_dict(hift_table(self.config), self.variables, what="HiFT vocoder")

    def save(self, directory) -> pathlib.Path:
        """Writes `vocoder.json` (+ `hift.safetensors`, official layout) into `directory`."""
        d = pathlib.Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"format": _SAVE_FORMAT, "name": self.name,
                "kind": "griffin-lim" if self.is_fallback else "hift",
                "config": None if self.is_fallback else to_dict(self.config)}
        if not self.is_fallback:
            save_state_dict(d / "hift.safetensors", self.export_state_dict())
        (d / "vocoder.json").write_text(json.dumps(meta, indent=1))
        return d

    @classmethod
    def load(cls, directory, *, trusted: bool = False, **kw) -> "Vocoder":
        """Reads a directory written by `save` (safetensors only: `trusted` is unused)."""
        del trusted
        d = pathlib.Path(directory)
        if not (d / "vocoder.json").is_file():
            raise CheckpointError(f"{d}: not a saved vocoder (no vocoder.json)")
        try:
            meta = json.loads((d / "vocoder.json").read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{d}/vocoder.json: not valid JSON ({e})") from e
        if not isinstance(meta, dict) or meta.get("format") != _SAVE_FORMAT:
            raise CheckpointError(f"{d}: vocoder.json is not a {_SAVE_FORMAT} file")
        if meta["kind"] == "griffin-lim":
            return cls.griffin_lim()
        cfg = from_dict(HiFTConfig, meta["config"])
        sd, _ = load_state_dict(d / "hift.safetensors")
        variables = import_state_dict(hift_table(cfg), sd, what=f"{d} (HiFT vocoder)")
        return cls(cfg, jax.tree.map(jnp.asarray, variables), meta["name"], **kw)

    # ---- inference ------------------------------------------------------------------
    def __call__(self, mel, key: jax.Array | None = None, seed: int = 0,
                 deterministic: bool = False) -> np.ndarray:
        """mel [T, 80] -> wav [256 T], or [B, T, 80] -> [B, 256 T], float32 (HiFT: within
        +-0.99). `key` (a jax PRNG key) overrides `seed`. Griffin-Lim is deterministic for
        a given seed, so `deterministic` changes nothing there."""
        mel, was_2d = check_mel(mel, 80 if self.config is None else self.config.in_channels)
        if self.is_fallback:
            if key is not None:
                seed = int(np.asarray(jax.random.key_data(key)).ravel()[-1])
            wav = np.stack([griffin_lim(m, seed=seed) for m in mel])
        else:
            wav = self._vocode(mel, jax.random.PRNGKey(seed) if key is None else key,
                               deterministic)
        return wav[0] if was_2d else wav

    def _vocode(self, mel: np.ndarray, key, deterministic: bool) -> np.ndarray:
        """Windowed HiFT over mel [B, T, 80] (one window when T <= chunk_frames + 2 ctx)."""
        b, t, _ = mel.shape
        plan = chunk_plan(t, self.chunk_frames, self._context)
        f0 = np.zeros((b, t), np.float32)
        for start, width, lo, hi in plan:  # pass 1: f0 (needs f0_num_layers <= ctx frames)
            part = self._f0_fn(self.variables, jnp.asarray(mel[:, start:start + width]))
            f0[:, lo:hi] = np.asarray(part)[:, lo - start:hi - start]
        o_hi, o_lo = (np.asarray(a) for a in self._offsets(jnp.asarray(f0)))
        wav = np.zeros((b, t * HOP), np.float32)
        for start, width, lo, hi in plan:  # pass 2: source + decoder
            sl = slice(start, start + width)
            part = self._synth(self.variables, jnp.asarray(mel[:, sl]), jnp.asarray(f0[:, sl]),
                               (jnp.asarray(o_hi[:, start]), jnp.asarray(o_lo[:, start])), key,
                               jnp.int32(start * HOP), jnp.float32(0.0 if deterministic else 1.0))
            wav[:, lo * HOP:hi * HOP] = np.asarray(part)[:, (lo - start) * HOP:(hi - start) * HOP]
        return wav


@functools.lru_cache(maxsize=8)
def _compiled(cfg: HiFTConfig, conv_dtype: str = "float32"):
    """Jitted (predict_f0, synth, offsets) shared by every Vocoder of one config and conv
    dtype, so that a reloaded or re-chunked vocoder reuses compilations of equal shapes."""
    model = HiFT(cfg)
    narrow = bf16_convs if conv_dtype == "bfloat16" else contextlib.nullcontext

    def synth(variables, mel, f0, start, key, sample_start, randomness):
        """One window: mel [B, W, 80], f0 [B, W], start (hi, lo) [B, 9] -> wav [B, 256 W].

        randomness is 1.0 or 0.0 (deterministic); multiplying by an exact 0 gives the
        deterministic source bit for bit, with one compilation for both modes."""
        b, w = f0.shape
        k_phi, k_noise = jax.random.split(key)
        phi = randomness * dsp.random_phases(k_phi, b, cfg.num_sines)
        noise = randomness * dsp.block_noise(k_noise, b, sample_start, w * HOP, cfg.num_sines)
        s = model.apply(variables, f0, start, phi, noise, method="excitation")
        with narrow():
            return model.apply(variables, mel, s, method="decode")

    def offsets(f0):
        return dsp.frame_offsets(dsp.phase_increments(f0, cfg), cfg.hop_length)

    return (jax.jit(lambda v, m: model.apply(v, m, method="predict_f0")), jax.jit(synth),
            jax.jit(offsets))


def griffin_lim(mel: np.ndarray, seed: int = 0, n_iter: int = GL_ITERS) -> np.ndarray:
    """FALLBACK vocoder (evaluation.md §2.3): log-mel [T, 80] -> wav [256 T] float32.

    m = exp(mel).T; librosa mel_to_stft (NNLS) + griffinlim(center=False, 32 iterations),
    i.e. `mel_to_audio` of the recipe, but with a seeded random initial phase
    (`random_state=seed`) instead of numpy's global RNG, so it is deterministic. Then drop
    the first 384 samples (the front end's reflect padding) and keep 256 T.
    """
    import librosa  # optional: librosa (heavy)

    t = mel.shape[0]
    m = np.exp(mel.astype(np.float32)).T  # float32 as in the recipe (NNLS is 5x faster than f64)
    mag = librosa.feature.inverse.mel_to_stft(m, sr=22050, n_fft=1024, power=1.0,
                                              fmin=0.0, fmax=8000.0)
    y = librosa.griffinlim(mag, n_iter=n_iter, hop_length=256, win_length=1024, n_fft=1024,
                           center=False, init="random", random_state=seed)
    pad = (1024 - HOP) // 2
    return fit_length(y[pad:], t * HOP).astype(np.float32)


def load_vocoder(spec: str, **kw) -> Vocoder:
    """"griffin-lim" (fallback), or a path: hift.pt / .safetensors (official layout), or a
    directory written by `Vocoder.save`."""
    if spec in ("griffin-lim", f"griffin-lim-{GL_ITERS}"):
        if kw.get("conv_dtype", "float32") != "float32":
            raise ValueError("conv_dtype: griffin-lim has no convolutions (HiFT only)")
        return Vocoder.griffin_lim()
    path = pathlib.Path(spec)
    if path.is_dir():
        return Vocoder.load(path, **kw)
    if not path.exists():
        raise CheckpointError(f"vocoder {spec!r}: no such file or directory (use a hift.pt, "
                              f"a .safetensors, a saved vocoder directory or 'griffin-lim')")
    return Vocoder.from_torch(path, **kw)
