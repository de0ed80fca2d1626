"""bench/reproduction_bars.py: the bars of issue 14 from a run's eval_summary.json and
disentangle.json, with the token rate named where the model is not the 86 Hz one."""

from __future__ import annotations

import json
import pathlib

import pytest

from _bench_helpers import bench_module



def _module():
    return bench_module("reproduction_bars")


def _example(tmp_path, tokens_per_s: float, g: float, s_pooled: float) -> pathlib.Path:
    def cond(pesq, wer, **extra):
        return {"metrics": {"pesq_wb": {"mean": pesq}, **extra}, "corpus": {"wer": wer}}

    bits = tokens_per_s * 12.679700005769249  # log2(6561)
    sets = {name: {"voc": cond(2.9, 0.15), "acoustic": cond(2.8, 0.2),
                   "token": {**cond(1.7, 0.25), "codebook": {"nominal_bitrate_bps": bits,
                                                             "num_codes": 6561}}}
            for name in ("E2", "E2-unseen")}
    sets["E2"]["vc"] = {"metrics": {"sim_tgt": {"mean": 0.8}, "sim_src": {"mean": 0.7}},
                        "corpus": {"success_rate": 0.75}}
    (tmp_path / "eval_summary.json").write_text(json.dumps({"summary": sets}))
    (tmp_path / "disentangle.json").write_text(json.dumps({"features": {
        "G": {"accuracy": g}, "S_pooled": {"accuracy": s_pooled}}}))
    return tmp_path


@pytest.mark.parametrize("hz,named", [(86.13, False), (21.53, True)])
def test_token_bars_name_the_rate_of_a_model_that_is_not_86hz(tmp_path, hz, named):
    bars = _module()
    example = _example(tmp_path, hz, g=0.95, s_pooled=0.70)
    assert bars.token_rate_hz(json.loads((example / "eval_summary.json").read_text())["summary"]) \
        == pytest.approx(hz)  # exact up to float rounding of bits / log2(6561)
    rows = bars.rows(example)
    token = [r for r in rows if r[0].startswith("token")]
    assert len(token) == 4 and all(("this model 21.5 Hz" in r[0]) == named for r in token)
    verdict = {r[0].split(" =")[0]: r[3] for r in rows}
    assert verdict["probe S_pooled <= G - 0.30"] is False  # 0.70 > 0.95 - 0.30
    assert verdict["speaker probe G >= 0.90"] and verdict["VC success >= 0.7"]
    assert "missed by 0.050" in bars.table(example)
