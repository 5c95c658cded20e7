"""`bench/round_upper_bounds.py`: the labels its `precise` bound trains on."""
from pathlib import Path

import cv2
import numpy as np


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
