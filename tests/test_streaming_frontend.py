"""Streaming mel front end == offline log_mel (model.md §2, §11)."""

import numpy as np
import pytest

from secoustic_jax.audio.mel import log_mel
from secoustic_jax.streaming.frontend import StreamingMel, lookahead_ms

# float32 front end: per-frame vs whole-signal FFT/matmul blocking may round differently;
# log-mel values of weak bins amplify that (golden README: 3e-4 float64 vs float32).
ATOL = 1e-4


def _stream(wav, fm: StreamingMel, blocks):
    out, pos = [], 0
    for n in blocks:
        out.append(fm.push(wav[:, pos:pos + n]))
        pos += n
    out.append(fm.flush())
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("n,frames_per_call", [(22050 + 137, 1), (9000, 4), (385, 1), (640, 4)])
def test_streamed_equals_offline(rng, n, frames_per_call):
    wav = (0.3 * rng.standard_normal((2, n)) * np.sin(np.arange(n) / 300.0)).astype(np.float32)
    blocks = []
    while sum(blocks) < n:
        blocks.append(int(min(rng.integers(1, 700), n - sum(blocks))))
    fm = StreamingMel(batch=2, frames_per_call=frames_per_call)
    got = _stream(wav, fm, blocks)
    ref = np.asarray(log_mel(wav))
    assert got.shape == ref.shape == (2, n // 256, 80)
    np.testing.assert_allclose(got, ref, atol=ATOL, rtol=0)


def test_lookahead_is_384_samples(rng):
    """Frame i is out exactly when 256 i + 640 samples are in (and not one sample earlier)."""
    wav = rng.standard_normal(4000).astype(np.float32)
    fm = StreamingMel()
    got = [fm.push(wav[:639]).shape[1], fm.push(wav[639:640]).shape[1],
           fm.push(wav[640:895]).shape[1], fm.push(wav[895:896]).shape[1]]
    assert got == [0, 1, 0, 1]
    assert abs(lookahead_ms() - 1000 * 384 / 22050) < 1e-9


def test_bad_use_is_refused():
    fm = StreamingMel(batch=2)
    with pytest.raises(ValueError, match=r"\[2, n\]"):
        fm.push(np.zeros(10, np.float32))
    fm.push(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="at least 385"):
        fm.flush()
