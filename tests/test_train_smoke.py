"""End to end with the real tiny codec: both stages through `train`, the checkpoint's codec
variables load into SecoustiCodec, and export to the official torch layout."""

import jax
import numpy as np
import pytest

from secoustic_jax.config.train import load_experiment
from secoustic_jax.training.checkpoint import load_codec_variables
from secoustic_jax.training.export import codec_variables_from_checkpoint
from secoustic_jax.training.loop import train
from train_standin import REPO_ROOT, tiny_experiment


def test_presets_load_and_paper_scale_defaults():
    for name, hop in (("86hz", 1), ("21_5hz", 4)):
        cfg = load_experiment(REPO_ROOT / "configs" / f"{name}.py", ["optim.lr=3e-4"])
        assert cfg.codec.hop == hop and cfg.optim.lr == 3e-4
        assert [s.steps for s in cfg.stages] == [200_000, 100_000, 20_000]
        assert [s.enabled for s in cfg.stages] == [True, True, False]
        assert cfg.stages[0].segment_frames == 256 and cfg.stages[1].segment_frames == 344
        assert cfg.stages[1].batch_size == 32 and cfg.loss.kl_ramp_start == 20_000
    tiny = load_experiment(REPO_ROOT / "configs" / "tiny.py", ["stages.semantic.steps=7"])
    assert tiny.stages.semantic.steps == 7 and tiny.codec.variant == "tiny"


@pytest.mark.slow
def test_real_tiny_codec_trains_both_stages_and_exports(tmp_path):
    cfg = tiny_experiment({"log.audio_examples": 1, "log.griffin_lim_iters": 2}, standin=False,
                          steps=(3, 3))
    summary = train(cfg, tmp_path, progress=False)
    assert summary["last_checkpoint"] == 6 and set(summary["stages"]) == {"acoustic", "semantic"}
    last = summary["stages"]["semantic"]["last_window"]
    for key in ("loss/acoustic", "loss/contrastive", "loss/kl_semantic", "codebook/usage",
                "contrastive/acc_s2p", "grad_norm", "learning_rate"):
        assert np.isfinite(last[key]), key
    assert (tmp_path / "tb").is_dir()
    codec_cfg, variables = load_codec_variables(tmp_path)
    assert codec_cfg == cfg.codec and "batch_stats" in variables
    from secoustic_jax.model.codec import SecoustiCodec
    mel = np.zeros((1, 16, 80), np.float32)
    out = SecoustiCodec(codec_cfg).apply(variables, mel, method=SecoustiCodec.encode)
    assert out.tokens.shape == (1, 16)
    # secoustic export-torch reads training runs through training/export.py.
    assert codec_variables_from_checkpoint(tmp_path / "nothing") is None
    cfg2, var2 = codec_variables_from_checkpoint(tmp_path / "checkpoints" / "6")
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), variables, var2))
    from secoustic_jax.checkpoint.convert import codec_state_dict, export_codec
    sd = codec_state_dict(variables, codec_cfg)
    assert any(k.startswith("encoder.") for k in sd) and all(np.isfinite(v).all() for v in sd.values())
    assert export_codec(variables, codec_cfg, tmp_path / "codec.safetensors").exists()


def test_data_init_runs_in_the_loop_and_a_warm_start_reuses_stage_1(tmp_path):
    from secoustic_jax.training import data_init
    from secoustic_jax.training.data import make_source

    over = {"init.mel_stats": True, "init.stats_batches": 2, "init.logvar_bias": -5.0}
    s1 = tiny_experiment(over, standin=False, steps=(2, 0))
    train(s1, tmp_path / "s1", progress=False)
    # Stage 1 started from the statistics of the first training batches: the decoder's
    # last bias moved from mean + std * b0 by at most 2 Adam steps of lr 2e-3 (max_lr x 2).
    src = make_source(s1, 0, split="train", process_index=0, process_count=1)
    mean, std, _ = data_init.mel_statistics([next(src), next(src)])
    _, v1 = load_codec_variables(tmp_path / "s1")
    last = data_init._conv_names(s1)[1]
    from secoustic_jax.api import Codec
    fresh = Codec.init(s1.codec, seed=0).variables  # only to compare magnitudes
    bias = np.asarray(v1["params"]["decoder"][last]["bias"])
    b0_bound = np.abs(np.asarray(fresh["params"]["decoder"][last]["bias"])).max() * std.max()
    assert np.all(np.abs(bias - mean) <= b0_bound + 2 * 2e-3 + 1e-6)
    assert np.all(np.abs(np.asarray(v1["params"]["vae_semantic_transformer"]["dense_var"]["bias"])
                         + 5.0) < 1e-6)  # frozen in stage 1: exactly the init
    # Stage 2 alone, warm-started from that run: it starts from exactly its codec weights,
    # and the frozen stage-1 modules stay bit-identical through stage 2.
    s2 = tiny_experiment({"init.codec_from": str(tmp_path / "s1")}, standin=False, steps=(0, 2))
    train(s2, tmp_path / "s2", progress=False)
    _, v2 = load_codec_variables(tmp_path / "s2")
    for module in ("encoder", "encoder_transformer", "decoder_transformer", "decoder"):
        assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)),
                                         v1["params"][module], v2["params"][module])), module
    bad = tiny_experiment({"init.codec_from": str(tmp_path / "s1"), "codec.seanet.n_filters": 16},
                          standin=False, steps=(0, 1))
    with pytest.raises(ValueError, match="codec config differs"):
        train(bad, tmp_path / "s3", progress=False)
