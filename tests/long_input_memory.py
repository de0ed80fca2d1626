"""Encodes and decodes a long mel with a FULL preset (random host weights); prints JSON.

    .venv/bin/python tests/long_input_memory.py [--frames 51680] [--preset 86hz]

51 680 mel frames = 10 minutes at 86.13 Hz. Reports wall times, the peak RSS of this
process (resource.getrusage ru_maxrss) and the memory that dense attention would need for
one layer's logits (T'^2 * heads * 4 bytes). Used by tests/test_api.py (slow) and for the
numbers in docs/model.md.
"""

import argparse
import json
import os
import resource
import time

os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=51680)
    parser.add_argument("--preset", default="86hz")
    args = parser.parse_args()

    import numpy as np

    from secoustic_jax.api import Codec, bucket_length
    from secoustic_jax.checkpoint.convert import import_codec_state_dict
    from secoustic_jax.config import codec_preset

    from test_api import random_state_dict  # host-random official-layout weights

    cfg = codec_preset(args.preset)
    codec = Codec(cfg, import_codec_state_dict(random_state_dict(cfg, 0), cfg))
    rss_weights = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    mel = np.random.default_rng(0).normal(-6.0, 2.0, (1, args.frames, 80)).astype(np.float32)
    t0 = time.time()
    enc = codec.encode_mel(mel)
    t1 = time.time()
    g = codec.prompt_embedding(mel)
    t2 = time.time()
    out = codec.decode_tokens(enc.tokens, g)
    t3 = time.time()
    n_tok = cfg.num_tokens(args.frames)
    heads = cfg.transformer.num_heads
    print(json.dumps({
        "preset": args.preset, "mel_frames": args.frames, "token_frames": n_tok,
        "bucket_tokens": bucket_length(n_tok), "decoded_shape": list(out.shape),
        "finite": bool(np.isfinite(out).all()),
        "encode_s": round(t1 - t0, 1), "prompt_s": round(t2 - t1, 1), "decode_s": round(t3 - t2, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "rss_after_weights_gib": round(rss_weights, 2),
        "dense_attention_logits_gib_per_layer": round(n_tok ** 2 * heads * 4 / 2**30, 1),
    }))


if __name__ == "__main__":
    main()
