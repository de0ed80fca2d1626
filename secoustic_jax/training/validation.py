"""Validation loop and listening material (training.md §9): mean metrics over the validation
split, mel images and Griffin-Lim audio (evaluation.md §2 fallback vocoder).
"""

from __future__ import annotations

import functools
import io

import jax
import numpy as np

from secoustic_jax.data import device_mel
from secoustic_jax.training import sharding as shd
from secoustic_jax.training.logging import MetricWindow
from secoustic_jax.training.model import TrainNet


def run_validation(rt, state, source, mesh, num_batches: int, key, mel=None
                   ) -> tuple[dict, dict]:
    """Mean eval metrics over `num_batches` batches; also returns the first (host) batch,
    with its mel (`mel`: the model's front end, for waveform batches)."""
    window, first = MetricWindow(), None
    for i in range(num_batches):
        try:
            local = next(source)
        except StopIteration:
            break
        first = first if first is not None else device_mel.host_mel(local, mel)
        m = rt.eval_step(state.params, state.batch_stats, shd.global_batch(mesh, local, mel),
                         jax.random.fold_in(key, i), state.stage_step)
        window.add(jax.device_get(m))
    return window.summary(), first


@functools.partial(jax.jit, static_argnums=(0, 3))
def _reconstruct(net: TrainNet, variables, batch: dict, stage_forward: str):
    if stage_forward == "acoustic":
        return net.apply(variables, batch["mel"], method=TrainNet.acoustic)[1]
    res = net.apply(variables, batch, train=False, with_mel=True, method=TrainNet.full,
                    rngs={"sample": jax.random.PRNGKey(0)})
    return res["mel_connector"]


def reconstruct(net: TrainNet, variables, batch: dict, stage_forward: str) -> np.ndarray:
    """Decoded mel [B, h*T', 80] (inference mode): D(A) for stage 1, D(A-hat) afterwards."""
    return np.asarray(_reconstruct(net, variables, batch, stage_forward))


def griffin_lim(log_mel: np.ndarray, n_iter: int = 32, sample_rate: int = 22050) -> np.ndarray:
    """evaluation.md §2 fallback vocoder: log mel [T, 80] -> waveform [256 T] float32."""
    import librosa  # optional: librosa (heavy)
    m = np.exp(np.asarray(log_mel, np.float64)).T
    wav = librosa.feature.inverse.mel_to_audio(m, sr=sample_rate, n_fft=1024, hop_length=256,
                                               win_length=1024, center=False, power=1.0, fmin=0,
                                               fmax=8000, n_iter=n_iter)
    t = log_mel.shape[0]
    out = np.zeros(256 * t, np.float32)
    body = wav[384:384 + 256 * t]
    out[:body.size] = body
    return out


def mel_image(target: np.ndarray, pred: np.ndarray, title: str) -> np.ndarray:
    """Side-by-side mel plot -> [H, W, 3] uint8 (target top, reconstruction bottom)."""
    import matplotlib  # optional: matplotlib (heavy)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional: matplotlib (heavy)
    fig, axes = plt.subplots(2, 1, figsize=(6, 4), sharex=True)
    for ax, m, name in zip(axes, (target, pred), ("target", "reconstruction")):
        ax.imshow(np.asarray(m).T, origin="lower", aspect="auto", cmap="magma")
        ax.set_title(f"{title}: {name}", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    from PIL import Image  # optional: pillow
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def log_media(logger, step: int, net, state, batch: dict, stage_forward: str, *, examples: int,
              gl_iters: int) -> None:
    """Mel images + audio of the first `examples` utterances of a host batch (process 0)."""
    if not logger.enabled or examples <= 0:
        return
    sub = {k: np.asarray(v)[:examples] for k, v in batch.items()}
    variables = {"params": jax.device_get(state.params)}
    if state.batch_stats:
        variables["batch_stats"] = jax.device_get(state.batch_stats)
    pred = reconstruct(net, variables, sub, stage_forward)
    for i in range(min(examples, pred.shape[0])):
        n = int(np.sum(sub["mel_mask"][i] > 0))
        logger.image(step, f"valid/mel_{i}", mel_image(sub["mel"][i, :n], pred[i, :n], f"#{i}"))
        logger.audio(step, f"valid/audio_{i}", np.clip(griffin_lim(pred[i, :n], gl_iters), -1, 1),
                     22050)
