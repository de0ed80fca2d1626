"""Paralinguistic encoder: counts, BatchNorm (eval + training update), full torch reference,
padded batches, dead kernel columns, and the official golden."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secoustic_jax.config.model import ParalinguisticConfig, codec_preset
from secoustic_jax.model.paralinguistic import ParalinguisticEncoder, TorchBatchNorm

torch = pytest.importorskip("torch")
KEY = jax.random.PRNGKey(0)
# Six conv+BN layers, SE and a 40-step GRU in float32; torch orders its sums differently.
ATOL = 2e-5


def _t(a):
    return torch.from_numpy(np.array(a))


class TorchPara(torch.nn.Module):
    """The official structure (model.md §8) from torch layers: Conv2d 3x3 'same' on
    [B, 80, T, 1], BatchNorm2d, ReLU, SE (fc.0, fc.2, no bias), GRU, two Linear heads."""

    def __init__(self, cfg):
        super().__init__()
        widths = (cfg.n_mels,) + cfg.channels
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(a, b, 3, padding="same")
                                         for a, b in zip(widths[:-1], widths[1:]))
        self.bns = torch.nn.ModuleList(torch.nn.BatchNorm2d(b) for b in cfg.channels)
        c = cfg.channels[-1]
        self.fc = torch.nn.Sequential(torch.nn.Linear(c, c // cfg.se_reduction, bias=False),
                                      torch.nn.ReLU(),
                                      torch.nn.Linear(c // cfg.se_reduction, c, bias=False))
        self.gru = torch.nn.GRU(c, cfg.gru_hidden, batch_first=True)
        self.dense_mu = torch.nn.Linear(cfg.gru_hidden, cfg.embed_dim)
        self.dense_var = torch.nn.Linear(cfg.gru_hidden, cfg.embed_dim)

    def forward(self, mel):
        x = mel.transpose(1, 2).unsqueeze(-1)
        for conv, bn in zip(self.convs, self.bns):
            x = torch.relu(bn(conv(x)))
        x = x.squeeze(-1)
        x = x * torch.sigmoid(self.fc(x.mean(-1)))[..., None] + x
        _, h = self.gru(x.transpose(1, 2))
        return self.dense_mu(h[0]), self.dense_var(h[0])


def _load_torch(model, variables):
    """Copies Flax variables into the torch reference (local helper; layout per model.md §15)."""
    p, s = variables["params"], variables["batch_stats"]
    with torch.no_grad():
        for i, (conv, bn) in enumerate(zip(model.convs, model.bns), start=1):
            conv.weight.copy_(_t(p[f"conv2d_{i}"]["kernel"]).permute(3, 2, 0, 1))
            conv.bias.copy_(_t(p[f"conv2d_{i}"]["bias"]))
            bn.weight.copy_(_t(p[f"batchnorm_{i}"]["scale"]))
            bn.bias.copy_(_t(p[f"batchnorm_{i}"]["bias"]))
            bn.running_mean.copy_(_t(s[f"batchnorm_{i}"]["mean"]))
            bn.running_var.copy_(_t(s[f"batchnorm_{i}"]["var"]))
            bn.num_batches_tracked.fill_(int(s[f"batchnorm_{i}"]["num_batches_tracked"]))
        model.fc[0].weight.copy_(_t(p["senet"]["fc_0"]["kernel"]).T)
        model.fc[2].weight.copy_(_t(p["senet"]["fc_2"]["kernel"]).T)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(model.gru, f"{name}_l0").copy_(_t(p["gru"][name]))
        for head in ("dense_mu", "dense_var"):
            getattr(model, head).weight.copy_(_t(p[head]["kernel"]).T)
            getattr(model, head).bias.copy_(_t(p[head]["bias"]))


def _random_variables(cfg, rng, mel):
    """Init, then make every BatchNorm parameter and statistic non-trivial."""
    v = nn.meta.unbox(ParalinguisticEncoder(cfg).init(KEY, mel))
    v = jax.tree.map(np.array, v)
    for i, c in enumerate(cfg.channels, start=1):
        v["params"][f"batchnorm_{i}"]["scale"] = rng.uniform(0.75, 1.25, c).astype(np.float32)
        v["params"][f"batchnorm_{i}"]["bias"] = rng.normal(0, 0.1, c).astype(np.float32)
        v["batch_stats"][f"batchnorm_{i}"]["mean"] = rng.normal(0, 0.1, c).astype(np.float32)
        v["batch_stats"][f"batchnorm_{i}"]["var"] = rng.uniform(0.5, 2, c).astype(np.float32)
        v["batch_stats"][f"batchnorm_{i}"]["num_batches_tracked"] = np.int32(7)
    return jax.tree.map(jnp.asarray, v)


def test_counts_and_layout():
    cfg = ParalinguisticConfig()
    boxed = jax.eval_shape(ParalinguisticEncoder(cfg).init, KEY, jnp.zeros((1, 300, 80)))
    v = nn.meta.unbox(boxed)
    assert sum(x.size for x in jax.tree.leaves(v["params"])) == 415_936  # model.md §8
    stats = v["batch_stats"]
    assert sum(s["mean"].size + s["var"].size for s in stats.values()) == 896
    counters = [s["num_batches_tracked"] for s in stats.values()]
    assert len(counters) == 6 and all(c.shape == () and c.dtype == jnp.int32 for c in counters)
    assert v["params"]["conv2d_1"]["kernel"].shape == (3, 3, 80, 32)
    assert boxed["params"]["conv2d_1"]["kernel"].names == ("conv_k", None, "conv_in", "conv_out")
    assert v["params"]["gru"]["weight_ih"].shape == (192, 128)
    assert v["params"]["dense_mu"]["kernel"].shape == (64, 512)


def test_batchnorm_eval_and_train_match_torch(rng):
    x = rng.standard_normal((3, 11, 5)).astype(np.float32) * 2 + 0.5
    bn = TorchBatchNorm()
    v = nn.meta.unbox(bn.init(KEY, jnp.asarray(x)))
    v = {"params": {"scale": jnp.asarray(rng.uniform(0.5, 1.5, 5), jnp.float32),
                    "bias": jnp.asarray(rng.normal(0, 0.3, 5), jnp.float32)},
         "batch_stats": {"mean": jnp.asarray(rng.normal(0, 0.2, 5), jnp.float32),
                         "var": jnp.asarray(rng.uniform(0.5, 2, 5), jnp.float32),
                         "num_batches_tracked": jnp.int32(3)}}
    ref = torch.nn.BatchNorm2d(5)
    with torch.no_grad():
        ref.weight.copy_(_t(v["params"]["scale"]))
        ref.bias.copy_(_t(v["params"]["bias"]))
        ref.running_mean.copy_(_t(v["batch_stats"]["mean"]))
        ref.running_var.copy_(_t(v["batch_stats"]["var"]))
        ref.num_batches_tracked.fill_(3)
    xt = _t(x).permute(0, 2, 1).unsqueeze(-1)  # [B, C, T, 1]
    ref.eval()
    y_eval = ref(xt).squeeze(-1).permute(0, 2, 1).detach().numpy()
    np.testing.assert_allclose(np.asarray(bn.apply(v, jnp.asarray(x))), y_eval, atol=1e-6)
    ref.train()
    y_train = ref(xt).squeeze(-1).permute(0, 2, 1).detach().numpy()
    y, upd = bn.apply(v, jnp.asarray(x), train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(y), y_train, atol=1e-5)  # f32 batch-stat sums
    stats = upd["batch_stats"]
    np.testing.assert_allclose(stats["mean"], ref.running_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(stats["var"], ref.running_var.numpy(), atol=1e-6)  # unbiased
    assert int(stats["num_batches_tracked"]) == 4 == int(ref.num_batches_tracked)
    # With a mask, the statistics come from valid frames only.
    lengths = np.array([11, 4, 7])
    mask = (np.arange(11)[None] < lengths[:, None])[..., None].astype(np.float32)
    _, upd_m = bn.apply(v, jnp.asarray(x), jnp.asarray(mask), True, mutable=["batch_stats"])
    valid = np.concatenate([x[b, :n] for b, n in enumerate(lengths)])[None]
    _, upd_v = bn.apply(v, jnp.asarray(valid), train=True, mutable=["batch_stats"])
    for k in ("mean", "var"):
        np.testing.assert_allclose(upd_m["batch_stats"][k], upd_v["batch_stats"][k], atol=1e-6)


@pytest.mark.parametrize("train", [False, True])
def test_encoder_matches_torch_reference(train, rng):
    cfg = codec_preset("tiny").paralinguistic
    mel = rng.standard_normal((2, 40, 80)).astype(np.float32)
    v = _random_variables(cfg, rng, jnp.asarray(mel))
    ref = TorchPara(cfg)
    _load_torch(ref, v)
    ref.train(train)
    mu_ref, logvar_ref = ref(_t(mel))
    enc = ParalinguisticEncoder(cfg)
    if train:
        (mu, logvar), upd = enc.apply(v, jnp.asarray(mel), train=True, mutable=["batch_stats"])
        for i, bn in enumerate(ref.bns, start=1):
            s = upd["batch_stats"][f"batchnorm_{i}"]
            np.testing.assert_allclose(s["mean"], bn.running_mean.numpy(), atol=1e-5)
            np.testing.assert_allclose(s["var"], bn.running_var.numpy(), rtol=1e-5)
            assert int(s["num_batches_tracked"]) == 8
    else:
        mu, logvar = enc.apply(v, jnp.asarray(mel))
    np.testing.assert_allclose(np.asarray(mu), mu_ref.detach().numpy(), atol=ATOL)
    np.testing.assert_allclose(np.asarray(logvar), logvar_ref.detach().numpy(), atol=ATOL)


def test_padded_batch_equals_items_alone(rng):
    cfg = codec_preset("tiny").paralinguistic
    lengths = [30, 17, 5]
    mel = rng.standard_normal((3, 30, 80)).astype(np.float32)
    mel[1, 17:] = 100.0  # garbage in the padding must not leak
    mel[2, 5:] = -50.0
    v = _random_variables(cfg, rng, jnp.asarray(mel))
    enc = ParalinguisticEncoder(cfg)
    mu, logvar = jax.jit(enc.apply)(v, jnp.asarray(mel), jnp.asarray(lengths))
    for b, n in enumerate(lengths):
        mu_b, lv_b = jax.jit(enc.apply)(v, jnp.asarray(mel[b:b + 1, :n]))
        np.testing.assert_allclose(np.asarray(mu[b]), np.asarray(mu_b[0]), atol=1e-5)  # f32
        np.testing.assert_allclose(np.asarray(logvar[b]), np.asarray(lv_b[0]), atol=1e-5)
    with pytest.raises(ValueError, match="lengths must lie in"):
        enc.apply(v, jnp.asarray(mel), jnp.asarray([30, 0, 5]))
    with pytest.raises(ValueError, match="mel must be"):
        enc.apply(v, jnp.asarray(mel[..., :40]))


def test_outer_kernel_columns_get_zero_gradient(rng):
    cfg = codec_preset("tiny").paralinguistic
    mel = jnp.asarray(rng.standard_normal((2, 12, 80)), jnp.float32)
    v = _random_variables(cfg, rng, mel)
    enc = ParalinguisticEncoder(cfg)
    loss = lambda p: sum(o.sum() for o in enc.apply({**v, "params": p}, mel))  # noqa: E731
    grads = jax.jit(jax.grad(loss))(v["params"])
    for i in range(1, 7):
        g = np.asarray(grads[f"conv2d_{i}"]["kernel"])
        assert np.all(g[:, 0] == 0) and np.all(g[:, 2] == 0) and np.any(g[:, 1] != 0)


def test_matches_official_golden(golden_dir):
    """Official extract_prompt output (golden README atol 1e-6 on values <= 0.38)."""
    from safetensors.numpy import load_file

    sd = load_file(golden_dir / "codec_tiny_86hz.safetensors")
    io = np.load(golden_dir / "codec_tiny_86hz_io.npz")
    pre = "paralinguistic_encoder."
    params, stats = {}, {}
    for i in range(1, 7):
        params[f"conv2d_{i}"] = {"kernel": sd[f"{pre}conv2d_{i}.weight"].transpose(2, 3, 1, 0),
                                 "bias": sd[f"{pre}conv2d_{i}.bias"]}
        bn = f"{pre}batchnorm_{i}."
        params[f"batchnorm_{i}"] = {"scale": sd[bn + "weight"], "bias": sd[bn + "bias"]}
        stats[f"batchnorm_{i}"] = {"mean": sd[bn + "running_mean"], "var": sd[bn + "running_var"],
                                   "num_batches_tracked": sd[bn + "num_batches_tracked"]
                                   .astype(np.int32)}
    params["senet"] = {f"fc_{j}": {"kernel": sd[f"{pre}senet.fc.{j}.weight"].T} for j in (0, 2)}
    params["gru"] = {n: sd[f"{pre}gru.{n}_l0"]
                     for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    for head in ("dense_mu", "dense_var"):
        params[head] = {"kernel": sd[f"{pre}{head}.weight"].T, "bias": sd[f"{pre}{head}.bias"]}
    start, end = io["extract_prompt_crop"]
    mel = jnp.asarray(io["mel_in"][:, start:end])
    mu, _ = ParalinguisticEncoder(ParalinguisticConfig()).apply(
        {"params": params, "batch_stats": stats}, mel)
    np.testing.assert_allclose(np.asarray(mu), io["paralinguistic"], atol=1e-6)


def test_concrete_lengths_captured_by_jit():
    """Concrete lengths closed over by a jitted function are range-checked on the host
    (regression: int(jnp.min(...)) inside the trace raised ConcretizationTypeError)."""
    cfg = codec_preset("tiny").paralinguistic
    module = ParalinguisticEncoder(cfg)
    mel = jnp.zeros((2, 20, cfg.n_mels))
    lengths = jnp.asarray([20, 10], jnp.int32)
    variables = module.init(jax.random.PRNGKey(0), mel, lengths)
    mu, _ = jax.jit(lambda m: module.apply(variables, m, lengths))(mel)
    assert mu.shape == (2, cfg.embed_dim)
    bad = jnp.asarray([21, 3], jnp.int32)  # 21 > T = 20
    with pytest.raises(ValueError, match="lengths must lie in"):
        jax.jit(lambda m: module.apply(variables, m, bad))(mel)
