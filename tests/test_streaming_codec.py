"""Streaming codec steps == offline codec (issue 6, model.md §4, §5, §11).

Tiny configs with fsq.project_in rescaled so tokens are diverse (model.md §7) and every
projected value stays >= 1e-3 from a rounding threshold: with float32 noise ~1e-6 between
the banded offline attention and the ring-cache attention, "tokens identical" is then a
real, deterministic check.
"""

import numpy as np
import pytest

from _streaming_helpers import diverse_tiny, offline, speech_mel
from secoustic_jax.streaming import codec_steps as cs
from secoustic_jax.streaming.state import state_signature

MEL_ATOL = 2e-5  # float32: ring-cache vs banded attention summation order, through 2 stacks
EMB_ATOL = 2e-5  # same, acoustic embedding (max abs ~2)


@pytest.fixture(scope="module", params=["tiny", "tiny_21_5hz"])
def codec(request):
    cfg, variables, margin = diverse_tiny(request.param)
    assert margin > 1e-3, f"calibration left a value {margin} from a rounding threshold"
    return cfg, variables


def _plan(rng, total, sizes):
    """Random chunk sizes (tokens) summing to `total`."""
    out = []
    while sum(out) < total:
        out.append(int(min(rng.choice(sizes), total - sum(out))))
    return out


def _g(cfg, rows, seed=0):
    return (0.3 * np.random.default_rng(seed).normal(size=(rows, cfg.transformer.d_model))
            ).astype(np.float32)


@pytest.mark.slow
def test_token_path_chunked_equals_offline_with_mixed_resets(codec, golden_dir):
    """B = 2, > 250 tokens, random chunk sizes; stream 1 is reset mid-way (new utterance)."""
    cfg, v = codec
    h = cfg.hop
    n_tok = 300 if h == 1 else 275  # beyond the 250-token window
    rng = np.random.default_rng(1)
    plan = _plan(rng, n_tok, [1, 2, 3])
    cut = sum(plan[: len(plan) // 3])  # stream 1 restarts after this many tokens
    mel0 = speech_mel(golden_dir, n_tok * h, row=0)
    mel1a = speech_mel(golden_dir, cut * h, row=1)
    mel1b = speech_mel(golden_dir, (n_tok - cut) * h, row=2)
    stream1 = np.concatenate([mel1a, mel1b])
    g = _g(cfg, 2)
    state = cs.init_state(v, cfg, 2, chunk_tokens=3)
    toks, mels, pos = [], [], 0
    for m in plan:
        reset = np.array([False, pos == cut])
        chunk = np.stack([mel0, stream1])[:, pos * h:(pos + m) * h]
        state, t = cs.encode_step(v, state, chunk, reset=reset)
        state, y = cs.decode_step(v, state, t, g, reset=reset)
        toks.append(np.asarray(t))
        mels.append(np.asarray(y))
        pos += m
    toks, mels = np.concatenate(toks, 1), np.concatenate(mels, 1)
    for row, segs in ((0, [(0, n_tok, mel0)]), (1, [(0, cut, mel1a), (cut, n_tok, mel1b)])):
        for lo, hi, mel in segs:
            ref_t = offline(v, cfg, "encode", mel[None]).tokens[0]
            np.testing.assert_array_equal(toks[row, lo:hi], ref_t)
            ref_m = offline(v, cfg, "decode_tokens", ref_t[None], g[row:row + 1])[0]
            np.testing.assert_allclose(mels[row, lo * h:hi * h], ref_m, atol=MEL_ATOL, rtol=0)
    assert len(np.unique(toks)) > 50  # the check is not on a collapsed codebook


@pytest.mark.slow
def test_acoustic_path_chunked_equals_offline(codec, golden_dir):
    cfg, v = codec
    h = cfg.hop
    n_tok = 260
    mel = speech_mel(golden_dir, n_tok * h, row=3)[None]
    plan = _plan(np.random.default_rng(2), n_tok, [1, 4])
    state = cs.init_state(v, cfg, 1, path="acoustic", chunk_tokens=4)
    embs, mels, pos = [], [], 0
    for m in plan:
        state, a = cs.encode_acoustic_step(v, state, mel[:, pos * h:(pos + m) * h])
        state, y = cs.decode_acoustic_step(v, state, a)
        embs.append(np.asarray(a))
        mels.append(np.asarray(y))
        pos += m
    ref = offline(v, cfg, "encode", mel)
    np.testing.assert_allclose(np.concatenate(embs, 1), ref.acoustic, atol=EMB_ATOL, rtol=0)
    ref_m = offline(v, cfg, "decode_acoustic", ref.acoustic)
    np.testing.assert_allclose(np.concatenate(mels, 1), ref_m, atol=MEL_ATOL, rtol=0)


def test_flush_reproduces_offline_tail(codec, golden_dir):
    """T not a multiple of hop: whole tokens by steps, then encode_flush on the tail."""
    cfg, v = codec
    h = cfg.hop
    t = 41 * h + (3 if h == 4 else 0) + (0 if h == 4 else 1)
    mel = speech_mel(golden_dir, t, row=4)[None]
    whole = (t // h) * h
    state = cs.init_state(v, cfg, 1, chunk_tokens=8)
    toks = []
    for lo in range(0, whole, 8 * h):
        state, tk = cs.encode_step(v, state, mel[:, lo:min(lo + 8 * h, whole)])
        toks.append(np.asarray(tk))
    if whole < t:
        state, tk = cs.encode_flush(v, state, mel[:, whole:])
        toks.append(np.asarray(tk))
    np.testing.assert_array_equal(np.concatenate(toks, 1), offline(v, cfg, "encode", mel).tokens)


def test_step_never_reads_future_input(codec, golden_dir):
    """Perturbing the frames after token j of a chunk changes no output up to token j
    (encode), and perturbing tokens after j changes no mel frame before hop*(j+1) (decode)."""
    cfg, v = codec
    h, m, j = cfg.hop, 6, 2
    mel = speech_mel(golden_dir, 2 * m * h, row=5)[None]
    g = _g(cfg, 1)
    rng = np.random.default_rng(3)

    def run(mel_chunk, tok_override=None):
        state = cs.init_state(v, cfg, 1, chunk_tokens=m)
        state, _ = cs.encode_step(v, state, mel[:, : m * h])  # some history first
        state, tk = cs.encode_step(v, state, mel_chunk)
        tk = np.asarray(tk) if tok_override is None else tok_override
        state, _ = cs.decode_step(v, state, np.zeros((1, m), np.int32), g)
        state, y = cs.decode_step(v, state, tk, g)
        return np.asarray(tk), np.asarray(y)

    chunk = mel[:, m * h:]
    tk, y = run(chunk)
    bad = chunk.copy()
    bad[:, (j + 1) * h:] = rng.normal(0, 5, bad[:, (j + 1) * h:].shape)
    tk2, _ = run(bad)
    np.testing.assert_array_equal(tk2[:, : j + 1], tk[:, : j + 1])  # exact: same arithmetic
    tok_bad = tk.copy()
    tok_bad[:, j + 1:] = rng.integers(0, cfg.codebook_size, tok_bad[:, j + 1:].shape)
    _, y2 = run(chunk, tok_bad)
    np.testing.assert_array_equal(y2[:, : (j + 1) * h], y[:, : (j + 1) * h])
    assert not np.array_equal(y2, y)  # the perturbation is visible later: the test can fail


def test_constant_state_shapes_and_one_compilation(codec, golden_dir):
    cfg, v = codec
    h = cfg.hop
    mel = speech_mel(golden_dir, 8 * h, row=6)[None]
    g = _g(cfg, 1)
    state = cs.init_state(v, cfg, 1, chunk_tokens=2)  # a shape no other test uses
    sig = state_signature(state)
    before = (cs.compilations("encode"), cs.compilations("decode"))
    for i in range(4):
        state, tk = cs.encode_step(v, state, mel[:, 2 * i * h:2 * (i + 1) * h])
        state, _ = cs.decode_step(v, state, tk, g, reset=np.array([i == 2]))
        assert state_signature(state) == sig
    after = (cs.compilations("encode"), cs.compilations("decode"))
    assert after[0] - before[0] == 1 and after[1] - before[1] == 1, (before, after)


def test_bad_chunks_are_refused(codec):
    cfg, v = codec
    state = cs.init_state(v, cfg, 1, chunk_tokens=2)
    with pytest.raises(ValueError, match="chunk_tokens"):
        cs.encode_step(v, state, np.zeros((1, 3 * cfg.hop, 80), np.float32))
    if cfg.hop > 1:
        with pytest.raises(ValueError, match="multiple of hop"):
            cs.encode_step(v, state, np.zeros((1, cfg.hop + 1, 80), np.float32))
    with pytest.raises(ValueError, match="acoustic"):
        cs.encode_acoustic_step(v, state, np.zeros((1, cfg.hop, 80), np.float32))
    with pytest.raises(ValueError, match="reset mask"):
        cs.encode_step(v, state, np.zeros((1, cfg.hop, 80), np.float32),
                       reset=np.array([True, False]))
