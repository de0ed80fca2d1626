"""report.json / report.md writing, completeness, round trip and reproducibility."""

import hashlib
import json
import math

import numpy as np
import pytest

from secoustic_jax.eval import codebook, report, stats

SETS, CONDS, N_UTT = ("E1", "E2"), ("acoustic", "token"), 6


def _inputs(tmp_path, seed=0):
    """A small but complete evaluation: records with one failure, corpus WER, codebook
    stats, token counts, mel pairs and audio (in memory and on disk)."""
    rng = np.random.default_rng(seed)
    records, mel_pairs, counts, books = [], {}, {}, {}
    for s in SETS:
        for c in CONDS:
            tokens = [rng.integers(0, 6561, size=200) for _ in range(N_UTT)]
            if s == "E1":  # plots are the slow part: histograms for E1 only
                counts[(s, c)] = codebook.token_counts(tokens)
            books.setdefault(s, {})[c] = codebook.codebook_stats(tokens, hop_factor=1)
            for i in range(N_UTT):
                ref = rng.standard_normal((40, 80)).astype(np.float32)
                # The decoder may return more frames than the input (model.md §3).
                deg = np.concatenate([ref, ref[-2:]]) + 0.1 * (i + 1) * rng.standard_normal((42, 80)).astype(np.float32)
                m = {"pesq_wb": float(rng.uniform(1, 4.5)), "stoi": float(rng.uniform(0.5, 1))}
                m.update({k: v for k, v in _mel(ref, deg).items()})
                fail = {}
                if s == "E1" and c == "token" and i == 0:
                    m["pesq_wb"], fail = float("nan"), {"pesq_wb": "pesq error -7"}
                records.append({"set": s, "condition": c, "utt_id": f"utt{i}", "metrics": m,
                                "failures": fail, "hyp": "hello world", "num_samples": 8000})
                if (s, c) == ("E1", "token"):
                    mel_pairs[(s, c, f"utt{i}")] = (ref, deg)
    corpus = {"E1": {"token": {"wer": 0.125, "wer_orig": 0.1, "wer_delta": 0.025,
                               "wer_consistency": 0.05}}}
    disk_wav = tmp_path / "given.wav"
    disk_wav.write_bytes(b"RIFF")  # only linked, never parsed
    audio = [{"utt_id": "E1/utt0", "label": "original", "wav": np.sin(np.arange(2205) / 5.0) * 0.3,
              "sr": 22050}, {"utt_id": "E1/utt0", "label": "token", "path": str(disk_wav)}]
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"weights" * 100)
    header = report.build_header(config={"variant": "86hz", "lr": 1e-4}, vocoder="griffin-lim-32",
                                 checkpoint=ckpt, seeds={"vocoder": 0}, extra={"device": "cpu"})
    return dict(header=header, records=records, corpus=corpus, codebook=books,
                token_counts=counts, mel_pairs=mel_pairs, audio=audio)


def _mel(ref, deg):
    from secoustic_jax.eval.metrics import mel_distances
    return mel_distances(ref, deg)


def _write(out_dir, inputs):
    kw = dict(inputs)
    return report.write_report(out_dir, kw.pop("header"), kw.pop("records"), **kw)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """(inputs, paths) of one report written once for the read-only tests."""
    tmp = tmp_path_factory.mktemp("report")
    inputs = _inputs(tmp)
    return inputs, _write(tmp / "out", inputs)


def test_report_complete_and_parses(written):
    inputs, paths = written
    rep = report.load_report(paths["json"].parent)  # checks every linked file exists
    h = rep["header"]
    assert h["vocoder"] == "griffin-lim-32" and h["seeds"] == {"vocoder": 0}
    assert h["checkpoint"]["sha256"] == hashlib.sha256(b"weights" * 100).hexdigest()
    assert h["packages"]["pesq"] == "0.0.4" and h["machine"]["cpu_count"] >= 1
    assert h["config"] == {"variant": "86hz", "lr": 1e-4} and h["device"] == "cpu"
    assert len(rep["utterances"]) == len(SETS) * len(CONDS) * N_UTT
    plots = rep["artifacts"]["plots"]
    assert {"plots/dist_pesq_wb.png", "plots/dist_mel_l1.png", "plots/tokens_E1_token.png",
            "plots/mel_E1_token_best.png", "plots/mel_E1_token_worst.png"} <= set(plots)
    assert len(plots) == 4 + 2 + 3  # metrics + E1 token histograms + best/median/worst mel
    assert [a["path"] for a in rep["artifacts"]["audio"]] == ["audio/E1_utt0_original.wav", "../given.wav"]
    md = paths["md"].read_text()
    for needle in ("## Header", "### E1: per-utterance metrics", "### E1: corpus metrics",
                   "### E2: codebook", "![plots/dist_pesq_wb.png](plots/dist_pesq_wb.png)",
                   "[audio/E1_utt0_original.wav]", "griffin-lim-32", "1 fail"):
        assert needle in md, needle


def test_aggregates_match_records(written):
    inputs, paths = written
    rep = report.load_report(paths["json"])
    agg = rep["summary"]["E1"]["token"]["metrics"]["pesq_wb"]
    vals = [r["metrics"]["pesq_wb"] for r in inputs["records"]
            if (r["set"], r["condition"]) == ("E1", "token")]
    finite = np.array([v for v in vals if not math.isnan(v)])
    assert (agg["n"], agg["failures"]) == (N_UTT - 1, 1)
    # Values are quantised to 10 significant digits before aggregation.
    assert agg["mean"] == pytest.approx(finite.mean(), rel=1e-9)
    assert agg["std"] == pytest.approx(finite.std(), rel=1e-8)
    stored = [r for r in rep["utterances"] if (r["set"], r["condition"], r["utt_id"]) == ("E1", "token", "utt0")]
    assert stored[0]["metrics"]["pesq_wb"] is None and stored[0]["failures"]["pesq_wb"].startswith("pesq")
    assert rep["summary"]["E1"]["token"]["corpus"]["wer"] == 0.125
    book = rep["summary"]["E2"]["acoustic"]["codebook"]
    assert book["num_tokens"] == N_UTT * 200 and len(book["top_tokens"]) == 10


def test_report_reproducible_bytes(tmp_path, monkeypatch):
    # Other engineers commit while tests run; pin HEAD so only our code is compared.
    monkeypatch.setattr(report, "git_commit", lambda repo_dir=None: "0" * 40)
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, _inputs(tmp_path))
    _write(b, _inputs(tmp_path))
    for name in ("report.json", "report.md", "plots/dist_stoi.png", "plots/mel_E1_token_median.png",
                 "audio/E1_utt0_original.wav"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_load_report_rejects_bad_files(tmp_path):
    inputs = _inputs(tmp_path)
    inputs["token_counts"], inputs["mel_pairs"] = None, None  # fewer plots: faster
    _write(tmp_path / "out", inputs)
    with pytest.raises(ValueError, match="no evaluation report"):
        report.load_report(tmp_path / "missing")
    (tmp_path / "out" / "plots" / "dist_stoi.png").unlink()
    with pytest.raises(ValueError, match="linked files missing"):
        report.load_report(tmp_path / "out")
    assert report.load_report(tmp_path / "out", check_files=False)["format_version"] == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a secoustic-eval-report"):
        report.load_report(bad)


def test_bad_records_and_header(tmp_path):
    header = report.build_header(config={}, vocoder="griffin-lim-32")
    rec = {"set": "E1", "condition": "token", "utt_id": "u", "metrics": {"x": 1.0}}
    with pytest.raises(ValueError, match="duplicate"):
        report.write_report(tmp_path, header, [rec, rec])
    with pytest.raises(ValueError, match="lacks keys"):
        report.write_report(tmp_path, header, [{"set": "E1"}])
    with pytest.raises(ValueError, match="infinite"):
        report.write_report(tmp_path, header, [{**rec, "metrics": {"x": float("inf")}}])
    with pytest.raises(ValueError, match="name the vocoder"):
        report.build_header(config={}, vocoder="")
    with pytest.raises(ValueError, match="not a file"):
        report.build_header(config={}, vocoder="v", checkpoint=tmp_path / "nope.ckpt")


def test_aggregate_counts_failures_and_is_order_independent():
    vals = [1e16, 1.0, -1e16, float("nan"), None, 3.0]
    a, b = stats.aggregate(vals), stats.aggregate(vals[::-1])
    assert a == b  # fsum: exactly rounded whatever the order
    assert (a["n"], a["failures"]) == (4, 2) and a["mean"] == 1.0  # naive sum would give 0.75
    assert a["median"] == 2.0
    assert stats.aggregate([None]) == {"mean": None, "std": None, "median": None, "n": 0, "failures": 1}
    assert stats.quantize(0.70560361086694335) == stats.quantize(0.70560361086694330)


@pytest.mark.parametrize("flags,want", [
    ("fpu sse2 avx avx2 avx512f avx512bw", "AMD EPYC (AVX-512)"),
    ("fpu sse2 avx avx2", "AMD EPYC (AVX2, no AVX-512)"),
    ("fpu sse2 avx", "AMD EPYC (no AVX2)"),
])
def test_cpu_description_names_the_vector_extension(flags, want):
    text = f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n\nprocessor\t: 1\n"
    assert report.describe_cpu(text, "x86_64") == want


def test_cpu_description_without_model_or_flags():
    # aarch64 /proc/cpuinfo has neither a model name nor x86 flags
    assert report.describe_cpu("processor\t: 0\nBogoMIPS\t: 50.00\n", "aarch64") == "aarch64"
