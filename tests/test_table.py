"""The declarative table mechanism: transforms are bijections; import/export are strict."""

import numpy as np
import pytest

from secoustic_jax.checkpoint.table import (TRANSFORMS, CheckpointError, Entry, export_state_dict,
                                            import_state_dict, strip_wrapper_prefixes)

SHAPES = {"identity": (5,), "linear": (3, 4), "conv1d": (6, 4, 3), "conv_transpose1d": (4, 6, 3),
          "conv2d": (6, 4, 3, 3), "squeeze": (6, 1, 1), "count": ()}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_round_trip_is_bit_exact(name, rng):
    shape = SHAPES[name]
    a = (np.asarray(7, np.int64) if name == "count" else rng.standard_normal(shape).astype(np.float32))
    back = TRANSFORMS[name].to_torch(TRANSFORMS[name].to_flax(a), shape)
    assert back.shape == a.shape
    np.testing.assert_array_equal(back, a)


def test_conv_layouts_follow_the_contract(rng):
    w = rng.standard_normal((6, 4, 3)).astype(np.float32)  # torch Conv1d [out, in, k]
    k = TRANSFORMS["conv1d"].to_flax(w)
    assert k.shape == (3, 4, 6) and k[2, 1, 5] == w[5, 1, 2]
    wt = rng.standard_normal((4, 6, 3)).astype(np.float32)  # torch ConvTranspose1d [in, out, k]
    kt = TRANSFORMS["conv_transpose1d"].to_flax(wt)
    assert kt.shape == (3, 4, 6) and kt[2, 1, 5] == wt[1, 5, 2]  # unflipped tap j


def _table():
    return [Entry("a.weight", ("params", "a", "kernel"), (3, 2), "linear"),
            Entry("a.bias", ("params", "a", "bias"), (3,)),
            Entry("bn.num_batches_tracked", ("batch_stats", "bn", "n"), (), "count", "int64")]


def _sd(rng):
    return {"a.weight": rng.standard_normal((3, 2)).astype(np.float32),
            "a.bias": rng.standard_normal(3).astype(np.float32),
            "bn.num_batches_tracked": np.asarray(100, np.int64)}


def test_import_export_round_trip(rng):
    sd = _sd(rng)
    variables = import_state_dict(_table(), sd)
    assert variables["params"]["a"]["kernel"].shape == (2, 3)
    out = export_state_dict(_table(), variables)
    assert list(out) == list(sd)
    for k in sd:
        assert out[k].dtype == sd[k].dtype
        np.testing.assert_array_equal(out[k], sd[k])


def test_import_lists_every_problem(rng):
    sd = _sd(rng)
    del sd["a.bias"]
    sd["a.weight"] = sd["a.weight"][:2]
    sd["extra.thing"] = np.zeros(1, np.float32)
    sd["bn.num_batches_tracked"] = np.asarray(1.0, np.float32)
    with pytest.raises(CheckpointError) as e:
        import_state_dict(_table(), sd)
    msg = str(e.value)
    for needle in ("missing:     a.bias", "unexpected:  extra.thing", "a.weight: shape [2, 2]",
                   "bn.num_batches_tracked: dtype float32"):
        assert needle in msg


def test_export_refuses_unclaimed_leaves(rng):
    variables = import_state_dict(_table(), _sd(rng))
    variables["params"]["stray"] = {"kernel": np.zeros(2, np.float32)}
    with pytest.raises(CheckpointError, match="not in table: params/stray/kernel"):
        export_state_dict(_table(), variables)


def test_wrapper_prefixes_are_stripped():
    sd, notes = strip_wrapper_prefixes({"module._orig_mod.x": 1, "module._orig_mod.y": 2})
    assert sorted(sd) == ["x", "y"] and len(notes) == 2
