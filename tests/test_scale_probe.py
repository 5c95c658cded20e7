"""bench/scale_probe.py: a finished run scored at other input sizes, its own size reproducing its evaluation."""
import csv

import pytest

from tests.test_training import tiny_cfg
from training.config import merge_overrides, resolve
from training.engine import Trainer


def test_scale_probe_reproduces_the_runs_own_evaluation_at_its_size(synth_root, tmp_path, bench_module):
    probe = bench_module("scale_probe")
    cfg = tiny_cfg(synth_root, "source-only", iters=2)
    cfg = resolve("synthetic-tiny", merge_overrides(cfg.to_dict(), {"model": {"target_bn_frames": 2}}))
    run = tmp_path / "run"
    Trainer(cfg, run, progress=False).run()
    with open(run / "eval.csv", newline="") as f:
        final = float(list(csv.DictReader(f))[-1]["miou"])

    rows = probe.probe(run, synth_root / "cityscapes", [[96, 48], [64, 32]], threads=1)
    assert [r["size"] for r in rows] == [[96, 48], [64, 32]]
    assert rows[0]["miou"] == pytest.approx(100 * final, abs=1e-3)
    assert len(rows[1]["per_class"]) == 19 and 0 <= rows[1]["miou"] <= 100

    with pytest.raises(SystemExit, match="no config.json"):
        probe.probe(tmp_path, synth_root / "cityscapes", [[96, 48]])
    with pytest.raises(Exception, match="WIDTHxHEIGHT"):
        probe.size("96by48")
