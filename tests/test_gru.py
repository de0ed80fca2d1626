"""GRU: parity with torch.nn.GRU (gate order r|z|n, separate biases), lengths, init."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secoustic_jax.layers.gru import GRU

torch = pytest.importorskip("torch")

# float32 recurrence over ~30 steps; torch and XLA order the gate matmuls differently.
ATOL = 1e-5


def _torch_gru(params, in_features, hidden):
    gru = torch.nn.GRU(in_features, hidden, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(gru, f"{name}_l0").copy_(torch.from_numpy(np.array(params[name])))
    return gru


def test_gru_matches_torch(rng):
    x = jnp.asarray(rng.standard_normal((3, 29, 12)), jnp.float32)
    gru = GRU(7)
    params = nn.meta.unbox(gru.init(jax.random.PRNGKey(0), x))["params"]
    # Make the biases visible: torch default init keeps everything small.
    params = jax.tree.map(lambda p: p * 3.0, params)
    h = np.asarray(gru.apply({"params": params}, x))
    _, h_ref = _torch_gru(params, 12, 7)(torch.from_numpy(np.array(x)))
    np.testing.assert_allclose(h, h_ref[0].detach().numpy(), atol=ATOL)


def test_gru_lengths_give_state_at_last_valid_step(rng):
    x = jnp.asarray(rng.standard_normal((3, 15, 5)), jnp.float32)
    gru = GRU(4)
    variables = gru.init(jax.random.PRNGKey(1), x)
    lengths = jnp.array([15, 9, 1])
    h = np.asarray(gru.apply(variables, x, lengths))
    for b, n in enumerate([15, 9, 1]):
        alone = np.asarray(gru.apply(variables, x[b:b + 1, :n]))[0]
        np.testing.assert_allclose(h[b], alone, atol=1e-6)  # same ops, only batch differs
    h0 = np.asarray(gru.apply(variables, x, jnp.array([0, 0, 0])))
    assert np.all(h0 == 0)  # length 0 keeps h0 = 0
    with pytest.raises(ValueError, match="lengths must have shape"):
        gru.apply(variables, x, jnp.array([1, 2]))


def test_gru_layout_and_init():
    boxed = GRU(64).init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 128)))["params"]
    shapes = {k: v.value.shape for k, v in boxed.items()}
    assert shapes == {"weight_ih": (192, 128), "weight_hh": (192, 64), "bias_ih": (192,),
                      "bias_hh": (192,)}
    assert boxed["weight_ih"].names == ("gates", "hidden")
    assert sum(np.prod(s) for s in shapes.values()) == 37_248  # model.md §8
    bound = 1 / np.sqrt(64)  # torch GRU: U(-1/sqrt(H), 1/sqrt(H)) for every tensor
    for v in nn.meta.unbox(boxed).values():
        assert np.abs(np.asarray(v)).max() <= bound
