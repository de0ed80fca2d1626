"""The training network: the codec plus the training-only modules in one linen module.

Variables: {"params": {"codec": ..., "aux": ..., ["adversary": ...]}, "batch_stats":
{"codec": ...}}; "adversary" exists only with `loss.speaker_adversary_weight` > 0. The codec
subtree is exactly what `SecoustiCodec(config).init` produces, so it exports as is.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from secoustic_jax.audio.warp import sample_alpha, warp_log_mel
from secoustic_jax.config.train import ExecutionConfig, ExperimentConfig
from secoustic_jax.model.codec import SecoustiCodec
from secoustic_jax.model.phonemes import ContrastiveAux
from secoustic_jax.training.adversary import SpeakerAdversary, pooled


def resolve_execution(execution: ExecutionConfig) -> tuple[bool, str]:
    """(scan_layers, remat) for this backend: "auto" scans and rematerialises off CPU
    (accelerator memory is the constraint there) and runs unrolled on CPU (where the
    unrolled step was measured fastest and host memory is ample)."""
    off_cpu = jax.default_backend() != "cpu"
    scan = {"on": True, "off": False, "auto": off_cpu}[execution.scan_layers]
    remat = ("full" if off_cpu and scan else "none") if execution.remat == "auto" else execution.remat
    return scan, remat


def default_codec_factory(codec_cfg, execution: ExecutionConfig | None = None):
    """SecoustiCodec(codec_cfg), its layer loop resolved from `execution` for this backend."""
    scan, remat = resolve_execution(execution or ExecutionConfig())
    return SecoustiCodec(codec_cfg, scan_layers=scan, remat=remat)


CodecFactory = Callable[[Any], nn.Module]  # codec_cfg -> the codec module to train


class TrainNet(nn.Module):
    """Codec + aux. `codec_factory(codec_cfg) -> nn.Module` builds the codec to train (a
    modified network with SecoustiCodec's methods; the loop's `train(codec_factory=)`);
    None builds SecoustiCodec with the layer loop of `config.execution`."""

    config: ExperimentConfig
    codec_factory: CodecFactory | None = None

    def setup(self):
        cfg = self.config
        factory = self.codec_factory or (lambda c: default_codec_factory(c, cfg.execution))
        self.codec = factory(cfg.codec)
        self.aux = ContrastiveAux(cfg.phonemes, cfg.loss, cfg.codec.transformer.d_model)
        if cfg.loss.speaker_adversary_weight > 0:
            self.adversary = SpeakerAdversary(cfg.codec.paralinguistic.embed_dim,
                                              cfg.loss.speaker_adversary_mode,
                                              cfg.loss.speaker_adversary_classes)

    def acoustic(self, mel):
        """Stage-1 path. mel [B, T, 80] -> (A [B, T', d], mel_hat [B, h*T', 80]).

        Uses `encode` (its semantic branch is dead code here and removed by XLA) and
        `decode_acoustic`; BatchNorm is not touched.
        """
        a = self.codec.encode(mel).acoustic
        return a, self.codec.decode_acoustic(a)

    def full(self, batch, *, train: bool, with_mel: bool = False):
        """Stage-2/3 path. batch: dict of the pipeline (see training/data.py).

        Returns dict: out (the codec's TrainOutputs), u, v (unit-norm contrastive
        embeddings [B, T', D]), valid [B, T'] frames covered by phones, pos [B, T'] phone
        position per token, scale exp(tau), mel_connector = D(A-hat) when with_mel, and
        with the speaker adversary on, adversary = (head_pred, branch_pred or None, target):
        G [B, d], or in "speaker" mode the batch's speaker labels [B] in training and None
        in validation (training/adversary.py).
        With `augment.semantic_warp` and train, the semantic branch reads a frequency-warped
        mel (one alpha per item, RNG stream "sample").
        """
        kw = {}
        warp = self.config.augment.semantic_warp
        if train and warp > 0:  # only then: the codec contract's semantic_mel is optional
            alpha = sample_alpha(self.make_rng("sample"), batch["mel"].shape[0], warp)
            kw["semantic_mel"] = warp_log_mel(batch["mel"], alpha, self.config.codec.mel)
        out = self.codec(batch["mel"], batch["prompt_mel"], batch["prompt_lengths"], train=train,
                         **kw)
        speech = {"ste": out.semantic_embed, "mu": out.semantic_mu,
                  "pre_vae": out.pre_vae}[self.config.loss.contrastive_input]
        u, v, valid, pos, scale = self.aux(speech, batch["phones"], batch["phone_durations"],
                                           self.config.codec.hop, train=train)
        res = {"out": out, "u": u, "v": v, "valid": valid, "pos": pos, "scale": scale}
        if with_mel:
            res["mel_connector"] = self.codec.decode_acoustic(out.connector_out)
        if self.config.loss.speaker_adversary_weight > 0:
            tmask = token_mask(batch["mel_mask"], self.config.codec.hop)
            if self.config.loss.speaker_adversary_mode == "speaker":
                target = batch["speaker"] if train else None  # see speaker_confusion_loss
            else:
                target = out.g_mu
            res["adversary"] = (*self.adversary(pooled(out.semantic_embed, tmask)), target)
        return res

    def __call__(self, batch, *, train: bool = False):
        """Touches every module (used by init): full path plus D(A-hat)."""
        res = self.full(batch, train=train, with_mel=True)
        return res["out"].mel_from_acoustic, res["mel_connector"]


def token_mask(mel_mask, hop: int):
    """[B, N] frame mask -> [B, N/hop] token mask (a token is valid if any of its frames is)."""
    b, n = mel_mask.shape
    if n % hop:
        raise ValueError(f"mel length {n} is not a multiple of hop {hop}")
    return jnp.max(jnp.asarray(mel_mask, jnp.float32).reshape(b, n // hop, hop), axis=-1)
