"""A small stand-in codec with the network contract of docs/DEVELOPING.md (submodule names,
encode / decode_acoustic / __call__ -> TrainOutputs fields, RNG stream "sample", BatchNorm
batch_stats in the paralinguistic encoder). Used by the trainer tests so they do not depend
on the full codec; the smoke tests also run the real `SecoustiCodec` when it is present.
"""

from __future__ import annotations

import pathlib
import sys
from types import SimpleNamespace

import flax.linen as nn
import jax
import jax.numpy as jnp

from secoustic_jax.layers.common import EMBED, NORM

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _dense(n, axes=(EMBED, EMBED)):
    return nn.Dense(n, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (NORM,)))


class Mix(nn.Module):
    """Causal frame mixer: y_t = x_t W0 + x_{t-1} W1 (keeps right padding harmless)."""

    dim: int

    @nn.compact
    def __call__(self, x):
        prev = jnp.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1]
        return jnp.tanh(_dense(self.dim)(x) + _dense(self.dim)(prev))


class Para(nn.Module):
    dim: int

    @nn.compact
    def __call__(self, mel, train: bool):
        h = _dense(32, (EMBED, EMBED))(mel)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="batchnorm_1")(h)
        h = jnp.mean(jax.nn.relu(h), axis=1)
        return _dense(self.dim)(h), _dense(self.dim)(h) - 2.0


class FSQIO(nn.Module):
    """project_in (d -> 8) and project_out (8 -> d) of the FSQ, with the STE in between."""

    dim: int

    def setup(self):
        self.project_in = _dense(8)
        self.project_out = _dense(self.dim)


class StandinCodec(nn.Module):
    """mel [B, T, 80] at hop `hop` (1 or 4: frames are grouped by reshape)."""

    config: object

    def setup(self):
        d = self.config.transformer.d_model
        self.hop = self.config.hop
        self.encoder = _dense(d)
        self.encoder_transformer = Mix(d)
        self.vae_semantic_transformer = Mix(d)
        self.fsq = FSQIO(d)
        self.paralinguistic_encoder = Para(d)
        self.semantic_connector = Mix(d)
        self.decoder_transformer = Mix(d)
        self.decoder = _dense(80 * self.hop)

    def _z(self, mel):
        b, t, c = mel.shape
        pad = (-t) % self.hop
        mel = jnp.pad(mel, ((0, 0), (0, pad), (0, 0)))
        return self.encoder(mel.reshape(b, (t + pad) // self.hop, c * self.hop))

    def encode(self, mel):
        z = self._z(mel)
        return SimpleNamespace(z=z, acoustic=self.encoder_transformer(z))

    def decode_acoustic(self, a):
        y = self.decoder(self.decoder_transformer(a))
        b, t, _ = y.shape
        return y.reshape(b, t * self.hop, 80)

    def __call__(self, mel, prompt_mel, prompt_lengths, *, train: bool, semantic_mel=None):
        z = self._z(mel)
        acoustic = self.encoder_transformer(z)
        pre = self.vae_semantic_transformer(z if semantic_mel is None else self._z(semantic_mel))
        mu, logvar = pre, pre * 0.1 - 1.0
        sample = mu + jnp.exp(0.5 * logvar) * jax.random.normal(self.make_rng("sample"), mu.shape) \
            if train else mu
        u = self.fsq.project_in(sample)
        bnd = 0.999 * jnp.tanh(u)
        codes = bnd + jax.lax.stop_gradient(jnp.round(bnd) - bnd)
        tokens = jnp.sum((jnp.round(bnd).astype(jnp.int32) + 1) * (3 ** jnp.arange(8)), -1)
        semantic_embed = self.fsq.project_out(codes)
        g_mu, g_logvar = self.paralinguistic_encoder(prompt_mel, train)
        g = g_mu + jnp.exp(0.5 * g_logvar) * jax.random.normal(self.make_rng("sample"), g_mu.shape) \
            if train else g_mu
        conn = self.semantic_connector(semantic_embed + g[:, None])
        return SimpleNamespace(
            acoustic=acoustic, mel_from_acoustic=self.decode_acoustic(acoustic), semantic_mu=mu,
            semantic_logvar=logvar, semantic_sample=sample, fsq_projected=u, codes_ste=codes,
            semantic_embed=semantic_embed, g_mu=g_mu, g_logvar=g_logvar, g_sample=g,
            connector_out=conn, tokens=tokens, pre_vae=pre)


def standin_factory(codec_cfg):
    return StandinCodec(codec_cfg)


# `--set` overrides (as command-line text) for subprocess runs of configs/tiny.py with the
# stand-in codec (STANDIN_TRAIN), which has no SEANet convs or log-variance heads for the
# init to set.
STANDIN_INIT = {"init.mel_stats": "false", "init.seanet_pca": "false", "init.logvar_bias": "null",
                "optim.lr_scale": "[]",
                "stages.finetune.enabled": "false"}
# train.py's command line, training the stand-in codec (tests/standin_train.py).
STANDIN_TRAIN = [sys.executable, str(REPO_ROOT / "tests" / "standin_train.py")]


def standin_train(config, workdir, **kwargs) -> dict:
    """`train(config, workdir)` of the stand-in codec, without a progress bar."""
    from secoustic_jax.training.loop import train

    return train(config, workdir, progress=False, codec_factory=standin_factory, **kwargs)


def tiny_experiment(overrides=None, *, standin: bool = True, steps=(4, 4), batch: int = 4,
                    frames: int = 32):
    """configs/tiny.py on the synthetic source, shrunk for tests (dotted `overrides` last)."""
    from secoustic_jax.config.train import load_experiment

    root = REPO_ROOT
    base = {"data.kind": "synthetic", "data.pipeline.max_phones": 16,
            # The stand-in has no SEANet convs or VAE log-variance heads for the init to set.
            "init.mel_stats": not standin, "init.seanet_pca": False, "init.stats_batches": 2,
            "codec.seanet.n_filters": 32,  # the tests' cost of the real codec, not the demo's width
            "codec.transformer.num_layers": 2,  # ... nor its depth
            **({"init.logvar_bias": None, "optim.lr_scale": ()} if standin else {}),
            "stages.finetune.enabled": False,  # tests that want stage 3 turn it on
            "phonemes.d_model": 32, "phonemes.num_layers": 1, "phonemes.conv_layers": 1,
            "phonemes.dim_feedforward": 64, "loss.contrastive_dim": 32,
            "optim.warmup_steps": 2, "log.every_steps": 1, "log.audio_examples": 0,
            "log.eval_batches": 1, "checkpoint.every_steps": 2, "checkpoint.keep": 10,
            "checkpoint.async_save": False}
    for name, n in zip(("acoustic", "semantic"), steps):
        base.update({f"stages.{name}.steps": n, f"stages.{name}.batch_size": batch,
                     f"stages.{name}.segment_frames": frames, f"stages.{name}.enabled": n > 0})
    base.update(overrides or {})
    return load_experiment(root / "configs" / "tiny.py", base)
