"""`bench/round_upper_bounds.py`: the labels its `precise` bound trains on, and the bounds on a quick bench folder."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest


def test_the_precise_upper_bound_keeps_only_pseudo_labels_that_agree_with_the_truth(bench_module, tmp_path):
    bounds = bench_module("round_upper_bounds")
    name = Path("gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png")
    ids = {"pseudo": [[7, 7, 8], [11, 0, 7]], "truth": [[7, 8, 8], [11, 11, 0]]}  # road 7, sidewalk 8, building 11
    for tree, labels in ids.items():
        (tmp_path / tree / name).parent.mkdir(parents=True)
        cv2.imwrite(str(tmp_path / tree / name), np.array(labels, dtype=np.uint8))
    (tmp_path / "truth" / "leftImg8bit" / "train").mkdir(parents=True)
    out = bounds.precise_tree(tmp_path / "pseudo", tmp_path / "truth", tmp_path / "precise")
    # wrong (sidewalk called road), ignored, or on a pixel the truth leaves void: id 0, which every reader ignores
    assert cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED).tolist() == [[7, 0, 8], [11, 0, 0]]
    assert (out / "leftImg8bit" / "train").is_dir() and (out / "done").is_file()
    (out / name).unlink()  # a finished tree is kept as it is, not written again
    assert bounds.precise_tree(tmp_path / "pseudo", tmp_path / "truth", tmp_path / "precise") == out
    assert not (out / name).exists()


def test_the_bounds_retrain_a_finished_quick_round_on_better_labels(bench_module, tmp_path, capsys):
    root = Path(__file__).resolve().parents[1]
    bench = [sys.executable, str(root / "bench/synthetic_ablation.py"), "--out", str(tmp_path), "--quick", "--threads",
             "1", "--seeds", "0", "--rows", "source-only", "cr+jal-wtm+sp+ssl1", "oracle"]
    made = subprocess.run(bench, capture_output=True, text=True, cwd=root, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    bounds = bench_module("round_upper_bounds")
    assert bounds.main([str(tmp_path), "--seed", "0", "--round-stem", "cr+jal-wtm+sp", "--iters", "3",
                        "--bounds", "precise", "true", "own"]) == 0
    round_cfg = json.loads((tmp_path / "seed0/cr+jal-wtm+sp+ssl/round1/train/config.json").read_text())
    for bound, labels in (("precise", tmp_path / "seed0/bound-precise-labels"),
                          ("true", tmp_path / "data/train-seed0/cityscapes"),
                          ("own", Path(round_cfg["data"]["target_labels"]))):  # the round itself at another length
        run = tmp_path / "seed0" / f"bound-{bound}-3it"
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["data"]["target_labels"] == str(labels) and cfg["optim"]["iters"] == 3
        assert cfg["model"]["init"] == round_cfg["model"]["init"]  # the round's own start, only the labels differ
        assert [int(r["iteration"]) for r in csv.DictReader(open(run / "eval.csv"))][-1] == 3
        assert (run / "result.json").is_file()
    printed = capsys.readouterr().out
    assert "round 1 (cr+jal-wtm+sp):" in printed and "bound-precise-3it:" in printed and "bound-true-3it:" in printed
    assert "bound-own-3it:" in printed
    # --start: the same round from another finished run of the seed; a run that is not there is refused
    assert bounds.main([str(tmp_path), "--seed", "0", "--iters", "3", "--bounds", "own", "--start", "source-only"]) == 0
    cfg = json.loads((tmp_path / "seed0/bound-own-3it-from-source-only/config.json").read_text())
    assert cfg["model"]["init"] == str(tmp_path / "seed0/source-only/checkpoints/last.pth")
    assert cfg["data"]["target_labels"] == round_cfg["data"]["target_labels"]
    for same in ([], ["--iters", str(round_cfg["optim"]["iters"])]):  # `own` alone would be the round again
        with pytest.raises(SystemExit, match="give it another --iters or a --start"):
            bounds.main([str(tmp_path), "--seed", "0", "--bounds", "own", *same])
    with pytest.raises(SystemExit, match="no such checkpoint"):
        bounds.main([str(tmp_path), "--seed", "0", "--bounds", "own", "--start", "no-such-row"])


def test_a_folder_that_is_not_a_bench_folder_is_refused_with_a_message(bench_module, tmp_path):
    with pytest.raises(SystemExit, match="no protocol.json"):
        bench_module("round_upper_bounds").main([str(tmp_path)])
