"""Runs every benchmark (bench/bench_*.py), collects bench/results.json, refreshes README.

    .venv/bin/python bench/run_all.py --out bench/results.json [--quick] [--only codec,vocoder]

Each bench runs as its own subprocess with `--out bench/results/<name>.json` (and
`--quick` when given and the bench accepts it); its console output streams through, so
progress is visible. results.json holds the machine, package versions, every bench's JSON
and how each run went (exit code, wall time). The README table between
`<!-- bench:start -->` and `<!-- bench:end -->` is rebuilt from the benches' `table` rows
({what, value, reference, note}); nothing outside the markers is touched. A benchmark is
never a test: CI does not run this.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
FORMAT = "secoustic-bench-v1"


def discover(only: set[str] | None = None) -> list[pathlib.Path]:
    """bench/bench_*.py sorted by name, optionally restricted to names in `only`."""
    found = sorted(HERE.glob("bench_*.py"))
    if only:
        unknown = only - {p.stem[len("bench_"):] for p in found}
        if unknown:
            raise SystemExit(f"run_all: no bench named {sorted(unknown)} (have "
                             f"{[p.stem[len('bench_'):] for p in found]})")
        found = [p for p in found if p.stem[len("bench_"):] in only]
    return found


def accepts(script: pathlib.Path, flag: str) -> bool:
    """Whether `script --help` mentions `flag` (benches are argparse scripts)."""
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    return flag in res.stdout


def run_bench(script: pathlib.Path, out: pathlib.Path, quick: bool, timeout: float) -> dict:
    """Runs one bench with inherited stdout/stderr; returns its run record."""
    cmd = [sys.executable, str(script), "--out", str(out)]
    if quick and accepts(script, "--quick"):
        cmd.append("--quick")
    if out.exists():
        out.unlink()  # never report a stale result as fresh
    print(f"\n===== {script.name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.time()
    try:
        rc = subprocess.run(cmd, cwd=ROOT, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    rec = {"command": " ".join(cmd[1:]), "returncode": rc, "wall_s": round(time.time() - t0, 1)}
    print(f"===== {script.name}: exit {rc} after {rec['wall_s']} s", flush=True)
    return rec


def machine() -> dict:
    """CPU model, cores, memory and the JAX device of this machine."""
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count()}
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        mem = pathlib.Path("/proc/meminfo").read_text().split()
        info["memory_gb"] = round(int(mem[mem.index("MemTotal:") + 1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    try:
        import jax

        info["jax_device"] = str(jax.devices()[0])
    except Exception as e:  # noqa: BLE001 - recorded, not fatal for a report
        info["jax_device"] = f"unavailable: {e}"
    return info


def _pipeline_rows(res: dict) -> list[dict]:
    """Adapter for bench_pipeline.py's JSON (it predates the `table` convention)."""
    rows = []
    for r in res.get("pipeline", []):
        rows.append({"what": f"data pipeline, workers={r['workers']}{', feature cache' if r['cache'] else ''}",
                     "value": f"{r['utt_seconds_per_s']} utt-s/s",
                     "note": f"batch {res.get('global_batch')}, {res.get('crop_seconds')} s crops"})
    need = res.get("training_consumption_utt_seconds_per_s_cpu")
    if need:
        rows.append({"what": "training consumption (CPU step times)",
                     "value": ", ".join(f"{k}: {v} utt-s/s" for k, v in need.items())})
    return rows


def table_rows(name: str, res: dict, peak: float | None = None) -> list[dict]:
    """README rows of one bench's result: its `table`, a known adapter, or a pointer."""
    from adapters import ADAPTERS  # noqa: E402 - bench/adapters.py, beside this script

    if "error" in res:
        return [{"what": name, "value": "failed", "note": str(res["error"])[:160]}]
    if isinstance(res.get("table"), list):
        return res["table"]
    if name == "pipeline":
        return _pipeline_rows(res)
    if name in ADAPTERS:
        return ADAPTERS[name](res, peak)
    return [{"what": name, "value": "see bench/results.json", "note": "no `table` rows"}]


def render_table(results: dict, meta: dict) -> str:
    reused = [n for n, r in results.get("runs", {}).items() if r.get("reused")]
    lines = [f"Machine: {meta.get('cpu_model', '?')}, {meta.get('cpu_count')} cores, "
             f"{meta.get('memory_gb', '?')} GB, {meta.get('jax_device')}; "
             f"jax {results['versions'].get('jax')}, torch {results['versions'].get('torch')}; "
             f"load average at the end {', '.join(f'{x:.1f}' for x in results.get('loadavg_end', ()))}. "
             "Medians after warm-up; reference = official PyTorch on this machine kind, idle "
             "(evaluation.md §8). On a shared machine wall times are inflated by the other jobs; "
             "CPU seconds (where given) are load-independent (idle 2-core wall >= CPU / 2)."
             + (f" Collected from earlier runs (not re-run): {', '.join(reused)}." if reused else ""), "",
             "| bench | what | measured | reference | note |", "|---|---|---|---|---|"]
    peak = results.get("matmul_peak_flops")
    if peak:
        lines.insert(1, f"Measured float32 matmul peak (2048², jax): {peak / 1e9:.1f} GFLOP/s; "
                        "utilisation = model FLOPs (secoustic_jax.flops) / time / peak.")
    for name, res in results["benchmarks"].items():
        for row in table_rows(name, res, peak):
            cells = [name, row.get("what", ""), row.get("value", ""), row.get("reference", ""),
                     row.get("note", "")]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def update_readme(readme: pathlib.Path, table: str) -> bool:
    """Replaces the text between the markers; False (untouched) if they are missing."""
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text or text.index(START) > text.index(END):
        print(f"run_all: {readme} lacks {START} ... {END}; table not written", file=sys.stderr)
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{table}\n{END}{tail}", encoding="utf-8")
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "results.json"))
    ap.add_argument("--quick", action="store_true", help="pass --quick to benches that take it")
    ap.add_argument("--only", default="", help="comma list of bench names (bench_<name>.py)")
    ap.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per bench")
    ap.add_argument("--reuse", action="store_true",
                    help="with --only: also collect the other benches' existing results/*.json (not re-run)")
    ap.add_argument("--collect-only", action="store_true",
                    help="run nothing: collect every existing results/*.json into --out")
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    from secoustic_jax.eval.report import package_versions

    selected = [] if args.collect_only else discover({s for s in args.only.split(",") if s} or None)
    args.reuse = args.reuse or args.collect_only
    res_dir = HERE / "results"
    res_dir.mkdir(exist_ok=True)
    runs, benches = {}, {}
    for script in discover():
        name = script.stem[len("bench_"):]
        out = res_dir / f"{name}.json"
        if script in selected:
            runs[name] = run_bench(script, out, args.quick, args.timeout)
        elif args.reuse and out.is_file():  # collected as they are, marked as not re-run
            runs[name] = {"reused": True, "returncode": 0, "file_mtime": time.strftime(
                "%Y-%m-%d %H:%M:%S", time.gmtime(out.stat().st_mtime))}
        else:
            continue
        try:
            benches[name] = json.loads(out.read_text())
        except (OSError, ValueError) as e:
            benches[name] = {"error": f"exit {runs[name]['returncode']}; no JSON ({e})"}
    meta = machine()
    from secoustic_jax.flops import measure_matmul_peak

    results = {"format": FORMAT, "machine": meta, "versions": package_versions(),
               "quick": args.quick, "matmul_peak_flops": measure_matmul_peak(),
               "loadavg_end": os.getloadavg(), "runs": runs, "benchmarks": benches}
    out = pathlib.Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, out)
    print(f"run_all: wrote {out}")
    if not args.no_readme:
        update_readme(pathlib.Path(args.readme), render_table(results, meta))
    failed = [n for n, r in runs.items() if r["returncode"] != 0]
    if failed:
        print(f"run_all: failed benches: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
