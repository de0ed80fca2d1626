"""Recipe A/B runs: the same config, seed and steps with and without one change.

    python bench/ab_recipe.py --config configs/tiny.py --corpus cache/demo_corpus \
        --steps 600 0 --variant base --variant mel_stats:init.mel_stats=true \
        --out bench/results/ab_stage1.json

Each variant (`name:override,override,...`) trains in its own workdir under --workdir,
then is scored on *full utterances* of a split (not training crops):
- `mel_acoustic`: MSE of D(A) against the log-mel (stage 1's path);
- `mel_token`: MSE of D(C(S + G)) with G from the utterance itself (stage 2 trained);
- `mel_token_other`: the same with G from another utterance of the same speaker;
- `mel_token_swap`: G from a *different* speaker: the gap to `mel_token_other` is how
  much the decoded mel depends on G (0 = G ignored);
- `mel_token_head` / `mel_token_tail`: `mel_token` over frames [0, 128) and [256, end) of
  each utterance: training crops shorter than the attention context (250) leave the
  sliding-window regime of later frames untrained, which shows as tail >> head.
With `--also-split test_unseen` every score is repeated on that split, suffixed `_<split>`
(the held-out voice: how far G and the tokens generalise to a speaker never trained on;
there the swap score is meaningless, the split having one voice).
The JSON records the commands, steps, wall time and every score; the table is printed.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """`name:a.b=v,c.d=w` -> (name, [a.b=v, c.d=w]); commas inside [] or () (a JSON list
    value such as optim.lr_scale=[["codec/encoder/layer_0",0.05]]) do not split."""
    name, _, rest = text.partition(":")
    parts, depth, cur = [], 0, ""
    for ch in rest:
        depth += ch in "[(" and 1 or 0
        depth -= ch in "])" and 1 or 0
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return name, [s for s in parts + [cur] if s]


def train_variant(args, name: str, overrides: list[str]) -> tuple[pathlib.Path, float, list[str]]:
    workdir = pathlib.Path(args.workdir) / name
    if workdir.exists() and not args.keep:
        shutil.rmtree(workdir)
    s1, s2 = args.steps
    base = [f"data.root={args.corpus}", f"stages.acoustic.steps={s1}",
            f"stages.semantic.steps={s2}", f"seed={args.seed}", "log.every_steps=50",
            f"checkpoint.every_steps={max(s1, s2, 1)}"]
    if s2 == 0:
        base.append("stages.semantic.enabled=false")
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", args.config, "--workdir",
           str(workdir), "--no-progress"]
    for o in base + list(args.common) + overrides:
        cmd += ["--set", o]
    workdir.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(workdir.parent / f"{name}.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return workdir, time.time() - t0, cmd


def _utterances(corpus: pathlib.Path, split: str, limit: int):
    from secoustic_jax.data.features import utterance_mel
    from secoustic_jax.data.manifest import audio_path, load_manifest

    recs, _ = load_manifest(corpus / f"{split}.jsonl")
    recs = sorted(recs, key=lambda r: r["id"])[:limit]
    return [(r["speaker"], utterance_mel(str(audio_path(r)))) for r in recs]


def write_json(path, res: dict) -> None:
    """A bench result: written to `path` (parents made) and printed."""
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(path).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


def score(workdir: pathlib.Path, utts, token_path: bool) -> dict:
    """Full-utterance MSEs of the acoustic and token paths (see the module docstring)."""
    from secoustic_jax.eval.checkpoints import load_codec

    codec, _ = load_codec(workdir)
    hop = codec.config.hop
    out = {"mel_acoustic": [], "mel_token": [], "mel_token_other": [], "mel_token_swap": [],
           "mel_token_head": [], "mel_token_tail": []}
    by_spk: dict[str, list[int]] = {}
    for i, (spk, _) in enumerate(utts):
        by_spk.setdefault(spk, []).append(i)
    gs = [codec.prompt_embedding(m[None])[0] for _, m in utts] if token_path else None
    for i, (spk, mel) in enumerate(utts):
        t = mel.shape[0] // hop * hop
        mel = mel[:t]
        enc = codec.encode_mel(mel[None])
        rec = codec.decode_acoustic(enc.acoustic)[0, :t]
        out["mel_acoustic"].append(float(np.mean((rec - mel) ** 2)))
        if not token_path:
            continue
        same = by_spk[spk]
        other = same[(same.index(i) + 1) % len(same)]
        swap_spk = sorted(by_spk)[(sorted(by_spk).index(spk) + 1) % len(by_spk)]
        for key, g in (("mel_token", gs[i]), ("mel_token_other", gs[other]),
                       ("mel_token_swap", gs[by_spk[swap_spk][0]])):
            err = np.mean((codec.decode_tokens(enc.tokens, g[None])[0, :t] - mel) ** 2, axis=1)
            out[key].append(float(np.mean(err)))
            if key == "mel_token":
                out["mel_token_head"].append(float(np.mean(err[:128])))
                if t > 256:
                    out["mel_token_tail"].append(float(np.mean(err[256:])))
    return {k: float(np.mean(v)) for k, v in out.items() if v}


def probe(workdir: pathlib.Path, corpus: pathlib.Path) -> dict:
    """Speaker-probe accuracies (eval/disentangle.py, no baselines) -> {probe_<feature>}."""
    from secoustic_jax.eval import disentangle
    from secoustic_jax.eval.checkpoints import load_codec

    codec, _ = load_codec(workdir)
    utts = disentangle.load_utterances([corpus / f"{s}.jsonl" for s in
                                        ("train", "valid", "test", "test_unseen")])
    res = disentangle.run(codec, utts, baselines=False)
    return {f"probe_{k}": v["accuracy"] for k, v in res["features"].items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/tiny.py")
    ap.add_argument("--corpus", default="cache/demo_corpus")
    ap.add_argument("--steps", type=int, nargs=2, default=(600, 0), metavar=("S1", "S2"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", action="append", required=True, help="name:a.b=v,c.d=w")
    ap.add_argument("--common", action="append", default=[], help="override for every variant")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--also-split", action="append", default=[],
                    help="score this split too (keys suffixed _<split>), e.g. test_unseen")
    ap.add_argument("--limit", type=int, default=35, help="utterances scored")
    ap.add_argument("--workdir", default="runs/ab")
    ap.add_argument("--keep", action="store_true", help="reuse finished workdirs (resume)")
    ap.add_argument("--probe", action="store_true",
                    help="also the speaker probe (G, pooled S, tokens) on every corpus split")
    ap.add_argument("--token-path", action="store_true",
                    help="score the token path with no stage-2 steps (a warm-started stage 3)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    token_path = args.steps[1] > 0 or args.token_path
    utts = _utterances(pathlib.Path(args.corpus), args.split, args.limit)
    extra = {s: _utterances(pathlib.Path(args.corpus), s, args.limit) for s in args.also_split}
    out_path = pathlib.Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.is_file() else {"runs": []}
    for text in args.variant:
        name, overrides = parse_variant(text)
        workdir, wall, cmd = train_variant(args, name, overrides)
        scores = score(workdir, utts, token_path=token_path)
        for split, split_utts in extra.items():
            scores.update({f"{k}_{split}": v for k, v in
                           score(workdir, split_utts, token_path=token_path).items()})
        if args.probe:
            scores.update(probe(workdir, pathlib.Path(args.corpus)))
        row = {"name": name, "overrides": overrides, "common": args.common, "steps": args.steps,
               "seed": args.seed, "train_wall_s": wall, "split": args.split,
               "utterances": len(utts), "command": " ".join(cmd[1:]), **scores}
        results["runs"] = [r for r in results["runs"] if r["name"] != name] + [row]
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k != "command"}), flush=True)
    keys = [k for k in ("mel_acoustic", "mel_token", "mel_token_head", "mel_token_tail",
                        "mel_token_other", "mel_token_swap",
                        "probe_G", "probe_S_pooled", "probe_tokens")
            + tuple(f"{k}_{s}" for s in args.also_split for k in ("mel_acoustic", "mel_token"))
            if k in results["runs"][0]]
    print("| variant | overrides | " + " | ".join(keys) + " | train s |")
    for r in results["runs"]:
        print(f"| {r['name']} | {' '.join(r['overrides']) or '-'} | "
              + " | ".join(f"{r.get(k, float('nan')):.4f}" for k in keys)
              + f" | {r['train_wall_s']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
