"""The evaluator end to end on a tiny random-weight codec (eval/evaluate.py, eval.py).

The test set is cut from the tiny synthetic corpus (two flite voices, 3 utterances each,
truncated to 1.5 s so Griffin-Lim is quick). Whisper is skipped; the speaker embedder is
replaced by a cheap deterministic spectral fingerprint (the real resemblyzer is tested
in test_metrics / test_speaker), so the VC and probe wiring run in the fast set.
"""

import json
import pathlib

import numpy as np
import pytest

from tests._data_helpers import tiny_corpus

VOICES = ("flite_kal16", "flite_slt")
PER_VOICE = 3
SECONDS = 1.5


def _fake_embedding(wav16k):
    """16 log band energies, L2-normalised: deterministic, speaker-ish, fast."""
    x = np.asarray(wav16k, np.float64)
    if not np.any(x):
        raise ValueError("all-zero signal")
    spec = np.abs(np.fft.rfft(x[: 16000 * 2], n=4096)) ** 2
    bands = np.log(np.array([b.sum() for b in np.array_split(spec, 16)]) + 1e-9)
    bands -= bands.mean()
    return (bands / (np.linalg.norm(bands) + 1e-12)).astype(np.float32)


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory):
    """A 6-utterance, 2-speaker manifest (22.05 kHz, 1.5 s each) + a saved tiny codec."""
    from secoustic_jax.api import Codec
    from secoustic_jax.audio.io import load_audio, save_wav
    from secoustic_jax.config.model import codec_preset
    from secoustic_jax.data.manifest import load_manifest, make_record, write_manifest

    corpus = tiny_corpus(tmp_path_factory)
    root = tmp_path_factory.mktemp("evalset")
    records = []
    for split in ("train", "valid", "test"):
        records += load_manifest(corpus / f"{split}.jsonl")[0]
    out = []
    for voice in VOICES:
        recs = [r for r in records if r["speaker"] == f"synthetic:{voice}"][:PER_VOICE]
        for r in recs:
            wav, _ = load_audio(pathlib.Path(r["_root"]) / r["audio"], 22050)
            wav = wav[: int(SECONDS * 22050)]
            rel = f"wavs/{r['id'].split(':')[1]}.wav"
            save_wav(root / rel, wav, 22050)
            out.append(make_record(id=r["id"], corpus="synthetic", audio=rel, sample_rate=22050,
                                   num_samples=len(wav), speaker=r["speaker"], language="en",
                                   text=r["text"], split="test", extra=r.get("extra")))
    write_manifest(root / "e2.jsonl", out)
    Codec.init(codec_preset("tiny"), seed=0).save(root / "codec")
    return root


@pytest.fixture
def fake_speaker(monkeypatch):
    from secoustic_jax.eval import speaker

    monkeypatch.setattr(speaker, "speaker_embedding", _fake_embedding)


def _opts(**kw):
    from secoustic_jax.eval.evaluate import EvalOptions

    base = dict(asr=False, sim=True, vc=True, probe=True, vc_sources=1, timing=False,
                workers=0, progress=False, audio_samples=1)
    base.update(kw)
    return EvalOptions(**base)


@pytest.fixture(scope="module")
def evaluated(eval_set, tmp_path_factory):
    """One evaluation with spies on the VC decode path."""
    from secoustic_jax.api import Codec
    from secoustic_jax.eval import codec_run, evaluate as ev, speaker
    from secoustic_jax.eval.testset import from_manifest
    from secoustic_jax.vocoder import load_vocoder

    mp = pytest.MonkeyPatch()
    mp.setattr(speaker, "speaker_embedding", _fake_embedding)
    calls = {"decode_with": [], "decode_tokens": []}
    real_decode_with = codec_run.decode_with

    def spy_decode_with(codec, tokens, gs, **kw):
        real = codec.decode_tokens

        def spy_tokens(tok, g):
            calls["decode_tokens"].append((np.array(tok), np.array(g)))
            return real(tok, g)

        codec.decode_tokens = spy_tokens
        try:
            mels = real_decode_with(codec, tokens, gs, **kw)
        finally:
            del codec.decode_tokens
        calls["decode_with"].append(([np.array(t) for t in tokens], [np.array(g) for g in gs], mels))
        return mels

    mp.setattr(codec_run, "decode_with", spy_decode_with)
    codec = Codec.load(eval_set / "codec")
    ts = from_manifest(eval_set / "e2.jsonl", "E2")
    out = tmp_path_factory.mktemp("report")
    try:
        result = ev.evaluate(codec, load_vocoder("griffin-lim"), [ts], out, _opts())
    finally:
        mp.undo()
    return {"out": out, "result": result, "calls": calls, "codec": codec, "set": ts}


def test_report_complete_and_parses(evaluated):
    from secoustic_jax.eval.report import load_report

    out = evaluated["out"]
    rep = load_report(out)  # format, records and every linked plot/audio file
    summary = rep["summary"]["E2"]
    assert {"voc", "acoustic", "token", "vc", "original"} <= set(summary)
    for cond in ("voc", "acoustic", "token"):
        recs = [r for r in rep["utterances"] if r["condition"] == cond]
        assert len(recs) == len(evaluated["set"])
        for name in ("pesq_wb", "pesq_nb", "stoi", "estoi", "lsd", "audio_mel_l1", "spk_sim"):
            assert summary[cond]["metrics"][name]["n"] + summary[cond]["metrics"][name]["failures"] == len(recs)
    for cond in ("acoustic", "token"):
        assert summary[cond]["metrics"]["mel_l1"]["n"] == len(evaluated["set"])
    book = summary["token"]["codebook"]
    assert book["num_tokens"] == sum(int(r["metrics"]["num_tokens"]) for r in rep["utterances"]
                                     if r["condition"] == "token")
    assert 0 < book["utilisation"] <= 1 and book["nominal_bitrate_bps"] == pytest.approx(1092.1, abs=0.1)
    # Bitrate with G (float32 here: d x 32 bits) beside the token rate.
    g_bits = 32 * evaluated["codec"].config.paralinguistic.embed_dim
    assert book["g_bits"] == 32 and book["g_bits_per_utterance"] == g_bits
    assert book["total_kbps_10s"] == pytest.approx((1092.1 + g_bits / 10) / 1e3, abs=1e-4)
    # ...and at every transmissible precision: d x k bits + a 16-bit scale.
    d = evaluated["codec"].config.paralinguistic.embed_dim
    assert book["with_g"]["32"]["g_bits_per_utterance"] == g_bits
    assert book["with_g"]["4"]["g_bits_per_utterance"] == 4 * d + 16
    assert book["with_g"]["8"]["total_kbps_3s"] == pytest.approx((1092.1 + (8 * d + 16) / 3) / 1e3, abs=1e-4)
    # DNSMOS for every condition, the original audio included, on the P.835 1-5 scale.
    for cond in ("original", "voc", "acoustic", "token", "vc"):
        for name in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"):
            assert name in summary[cond]["metrics"], (cond, sorted(summary[cond]["metrics"]))
            agg = summary[cond]["metrics"][name]
            assert agg["failures"] == 0 and 1.0 <= agg["mean"] <= 5.0, (cond, name, agg)
    assert rep["header"]["mos_model"].startswith("speechmos 0.0.1.1")
    assert set(rep["probe"]) == {"E2 tokens", "E2 semantic", "E2 G"}
    for feat in rep["probe"].values():
        assert feat["speaker"]["chance"] == pytest.approx(0.5)
    assert {"sim_tgt", "sim_src", "vc_success", "sim_floor"} <= set(summary["vc"]["metrics"])
    assert summary["vc"]["corpus"]["pairs"] == 2
    assert rep["header"]["vocoder"] == "griffin-lim-32" and rep["header"]["seeds"]["vocoder"] == 0
    assert rep["header"]["packages"]["jax"] and rep["header"]["machine"]["cpu_count"]
    md = (out / "report.md").read_text()
    for section in ("## Reading the tables", "### E2: per-utterance metrics", "### E2: codebook",
                    "## Disentanglement probe", "Griffin-Lim", "## Audio samples",
                    "### E2: bitrate with G"):
        assert section in md
    lines = (out / "per_utterance.jsonl").read_text().splitlines()
    assert len(lines) == len(rep["utterances"])
    assert json.loads((out / "summary.json").read_text())["summary"] == rep["summary"]
    assert any(p.startswith("plots/mel_E2_token_") for p in rep["artifacts"]["plots"])
    assert any(p.startswith("plots/tokens_E2_token") for p in rep["artifacts"]["plots"])


def test_vc_swaps_exactly_the_paralinguistic_vector(evaluated):
    """Tokens of the source alone, G of the target prompt alone, decoded unchanged."""
    codec, ts = evaluated["codec"], evaluated["set"]
    (tokens, gs, mels), = evaluated["calls"]["decode_with"]
    vc_recs = [r for r in evaluated["result"]["report"]["utterances"] if r["condition"] == "vc"]
    assert len(vc_recs) == len(tokens) == 2
    by_id = {u.utt_id: u for u in ts.utterances}
    for rec, tok, g, mel in zip(vc_recs, tokens, gs, mels):
        src, prompt = by_id[rec["source"]], by_id[rec["prompt"]]
        assert src.group != prompt.group and rec["target_speaker"] == prompt.group
        src_mel = codec.mel(src.wav, 22050)
        alone_tokens = codec.encode_mel(src_mel).tokens
        alone_g = codec.prompt_embedding(codec.mel(prompt.wav, 22050))
        np.testing.assert_array_equal(tok, alone_tokens)
        # Batched vs alone prompt embedding: same maths, different XLA shapes (f32 rounding).
        np.testing.assert_allclose(g, alone_g, rtol=1e-5, atol=1e-6)
        own_g = codec.prompt_embedding(src_mel)
        assert not np.allclose(g, own_g, atol=1e-4)  # really another speaker's vector
        # Decoded with nothing else changed: same as decoding the pair directly.
        np.testing.assert_allclose(mel, codec.decode_tokens(tok, g), rtol=1e-4, atol=1e-4)
    # The decoder saw exactly these rows (padding rows aside).
    for tok_b, g_b in evaluated["calls"]["decode_tokens"]:
        for row_t, row_g in zip(tok_b, g_b):
            hits = [i for i, t in enumerate(tokens) if np.array_equal(row_t[: len(t)], t)
                    and np.array_equal(row_g, gs[i])]
            assert hits


@pytest.mark.slow  # two full evaluations (~2 min on a loaded 2-core machine)
def test_same_command_twice_gives_identical_report(eval_set, tmp_path, fake_speaker):
    import eval as eval_cli

    args = ["--ckpt", str(eval_set / "codec"), "--manifest", f"E2={eval_set / 'e2.jsonl'}",
            "--skip-asr", "--skip-timing", "--vc-sources", "1", "--no-progress"]
    assert eval_cli.main(args + ["--out", str(tmp_path / "a")]) == 0
    assert eval_cli.main(args + ["--out", str(tmp_path / "b")]) == 0
    a = (tmp_path / "a" / "report.json").read_bytes()
    assert a == (tmp_path / "b" / "report.json").read_bytes()
    rep = json.loads(a)
    assert rep["header"]["checkpoint"]["kind"] == "codec_dir" and len(rep["header"]["checkpoint"]["sha256"]) == 64
    assert (tmp_path / "a" / "report.md").read_bytes() == (tmp_path / "b" / "report.md").read_bytes()


def test_timing_section_structure(eval_set):
    from secoustic_jax.api import Codec
    from secoustic_jax.eval.timing import N_SAMPLES, timing_section

    class ZeroVocoder:  # the vocoder's speed is not under test here
        name, is_fallback = "zeros", True

        def __call__(self, mel, seed=0):
            return np.zeros(256 * np.asarray(mel).shape[0], np.float32)

    codec = Codec.load(eval_set / "codec")
    t = timing_section(codec, ZeroVocoder(), [], np.zeros(64, np.float32), repeats=5)
    assert t["input"]["samples"] == N_SAMPLES == 220500
    for stage in ("front_end", "encode_tokens", "prompt_embedding", "decode_tokens",
                  "decode_acoustic", "vocoder", "end_to_end_token"):
        r = t["rtf"][stage]
        assert r["runs"] == 5 and 0 < r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["rtf"] == pytest.approx(r["median_s"] / 10.0)
    assert t["latency"]["algorithmic"]["samples"] == 640
    assert t["latency"]["algorithmic"]["ms"] == pytest.approx(29.02, abs=0.01)
    assert t["latency"]["compute"]["first_frame_ms"] > 0


def test_batched_front_end_and_codec_equal_unbatched(eval_set):
    from secoustic_jax.api import Codec
    from secoustic_jax.audio.mel import log_mel
    from secoustic_jax.eval import codec_run

    codec = Codec.load(eval_set / "codec")
    rng = np.random.default_rng(0)
    wavs = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (700, 5000, 9000)]
    mel = codec_run.batch_mel(wavs, 64, codec.config.mel)
    outs = codec_run.run_codec(codec, wavs, max_batch=4)
    for w, m, o in zip(wavs, mel, outs):
        ref = np.asarray(log_mel(w))
        # Same float32 ops on a different batch shape: XLA may reorder the mel matmul.
        np.testing.assert_allclose(m[: ref.shape[0]], ref, rtol=0, atol=1e-4)
        alone = codec_run.run_batch(codec, [w])[0]
        np.testing.assert_array_equal(o.tokens, alone.tokens)
        np.testing.assert_allclose(o.mel_token, alone.mel_token, rtol=1e-4, atol=1e-4)  # shape-dependent f32 rounding
        assert o.mel.shape == (len(w) // 256, 80) and o.tokens.shape == (len(w) // 256,)


def test_plan_batches_buckets_and_powers_of_two():
    from secoustic_jax.api import bucket_length
    from secoustic_jax.eval.codec_run import EVAL_STEPS_PER_OCTAVE, plan_batches, pow2_pad

    lengths = [10, 300, 70, 65, 12, 64, 1000]
    batches = plan_batches(lengths, lambda n: n, max_batch=2)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 2 and len({bucket_length(lengths[i], steps_per_octave=EVAL_STEPS_PER_OCTAVE)
                                    for i in b}) == 1
    assert pow2_pad([4, 5, 6]) == [4, 5, 6, 6] and pow2_pad([1]) == [1]


def test_testset_16k_reference_is_the_original(tmp_path):
    import soundfile as sf

    from secoustic_jax.eval.testset import from_audio_dir

    x = (0.5 * np.sin(np.arange(24000) * 0.05)).astype(np.float32)
    (tmp_path / "spk").mkdir()
    sf.write(tmp_path / "spk" / "a.wav", x, 16000, subtype="FLOAT")
    sf.write(tmp_path / "spk" / "b.wav", 3.0 * x, 16000, subtype="FLOAT")  # peak 1.5 > 1
    ts = from_audio_dir(tmp_path)
    a, b = ts.utterances
    np.testing.assert_array_equal(a.ref16, x)  # no 22.05 kHz round trip (§2.4)
    assert a.num_samples == 33075 and a.speaker == "spk" and a.scale is None
    assert b.scale == pytest.approx(1 / 1.5) and np.abs(b.ref16).max() <= 1.0


def test_bad_inputs_are_named(tmp_path):
    import eval as eval_cli

    from secoustic_jax.eval.checkpoints import checkpoint_kind

    with pytest.raises(FileNotFoundError):
        checkpoint_kind(tmp_path / "missing")
    (tmp_path / "x.txt").write_text("no")
    with pytest.raises(ValueError, match="unknown checkpoint file type"):
        checkpoint_kind(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="neither a Codec.save directory"):
        checkpoint_kind(tmp_path)
    assert eval_cli.main(["--ckpt", str(tmp_path), "--manifest", "m.jsonl", "--out", str(tmp_path / "o")]) == 2


def test_per_speaker_keeps_the_first_n_of_each_speaker(eval_set):
    import eval as eval_cli

    full = eval_cli.load_sets(eval_cli._parser().parse_args(
        ["--ckpt", "x", "--out", "o", "--manifest", f"E2={eval_set / 'e2.jsonl'}"]))[0]
    args = eval_cli._parser().parse_args(["--ckpt", "x", "--out", "o", "--per-speaker", "1",
                                          "--manifest", f"E2={eval_set / 'e2.jsonl'}"])
    one = eval_cli.load_sets(args)[0]
    first = {}
    for u in full.utterances:
        first.setdefault(u.speaker, u.utt_id)
    assert [u.utt_id for u in one.utterances] == list(first.values())
    assert len(first) == len(VOICES) < len(full.utterances)
    args.per_speaker = 0  # would keep nothing: named, not an empty set
    with pytest.raises(ValueError, match="--per-speaker must be >= 1"):
        eval_cli.load_sets(args)
