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
