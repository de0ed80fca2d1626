"""How far one Adam-sized step in each SEANet/transformer module moves the stage-1 loss.

    python bench/stage1_sensitivity.py --corpus cache/demo_corpus --n-filters 32 \
        --out bench/results/stage1_sensitivity.json

Adam's first update (and any update while a gradient keeps its sign) is lr x sign(g) per
leaf, whatever the gradient's size. Starting from the PCA-trunk init (training/pca_init.py)
on configs/tiny.py's codec, this applies that step (lr 2e-3) to one module at a time, and
to all of them, and reports the stage-1 mel MSE after it on a batch of validation crops.
A module whose step costs far more than the others learns "too fast" for one global
learning rate: that is what `optim.lr_scale` corrects (docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from secoustic_jax.api import Codec
from secoustic_jax.config.model import codec_preset
from secoustic_jax.data.features import utterance_mel
from secoustic_jax.data.manifest import audio_path, load_manifest
from secoustic_jax.model.codec import SecoustiCodec
from secoustic_jax.training import pca_init

MODULES = ("encoder", "decoder", "encoder_transformer", "decoder_transformer")


def _frames(corpus: pathlib.Path, split: str) -> np.ndarray:
    recs, _ = load_manifest(corpus / f"{split}.jsonl")
    cache = corpus / "features"
    return np.concatenate([utterance_mel(str(audio_path(r)), cache_dir=cache if cache.is_dir() else None)
                           for r in sorted(recs, key=lambda r: r["id"])])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="cache/demo_corpus")
    ap.add_argument("--n-filters", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    train, valid = _frames(pathlib.Path(args.corpus), "train"), _frames(pathlib.Path(args.corpus), "valid")
    cfg = codec_preset("tiny", {"seanet.n_filters": args.n_filters})
    variables = Codec.init(cfg, seed=0).variables
    stats = [{"mel": train[None, i:i + 1024], "mel_mask": np.ones((1, 1024))}
             for i in range(0, 16 * 1024, 1024)]  # what init.stats_batches=16 of 8 x 128 sees
    mean, basis, scale = pca_init.pca_basis(*pca_init.frame_moments(stats), pca_init.trunk_width(cfg.seanet))
    shift = pca_init.trunk_shift(stats, mean, basis, scale)
    params = pca_init.apply_pca_trunk(variables["params"], cfg.seanet, mean, basis, scale, shift)
    net = SecoustiCodec(cfg)
    x = jnp.asarray(np.stack([valid[i:i + 128] for i in range(0, 8 * 128, 128)]))

    @jax.jit
    def loss(p):
        v = {"params": p, "batch_stats": variables["batch_stats"]}
        enc = net.apply(v, x, method=SecoustiCodec.encode)
        rec = net.apply(v, enc.acoustic, method=SecoustiCodec.decode_acoustic)
        return jnp.mean((rec - x) ** 2)

    l0, grads = jax.value_and_grad(loss)(params)
    flat, flat_g = flatten_dict(params), flatten_dict(grads)

    def stepped(select) -> float:
        q = {k: (v - args.lr * jnp.sign(flat_g[k]) if select(k) else v) for k, v in flat.items()}
        return float(loss(unflatten_dict(q)))

    groups = sorted({k[:2] for k in flat if k[0] in MODULES})
    rows = {"/".join(g): stepped(lambda k, g=g: k[:2] == g) - float(l0) for g in groups}
    first = ("encoder", "layer_0")
    out = {"n_filters": args.n_filters, "lr": args.lr, "loss_at_init": float(l0),
           "loss_after_step": {"all": stepped(lambda k: k[0] in MODULES),
                               "all_but_encoder_layer_0": stepped(lambda k: k[0] in MODULES and k[:2] != first)},
           "increase_per_module": dict(sorted(rows.items(), key=lambda kv: -kv[1]))}
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
