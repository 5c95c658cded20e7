"""ConfusionMatrix: hand-computed IoUs, ignore handling, worker merging, SYNTHIA mIoU*, and the official evaluator."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jal_deploy import labels as L
from jal_deploy.datasets import find_samples, read_label
from jal_deploy.metrics import ConfusionMatrix, format_iou_table

GT = np.array([0, 0, 0, 1, 1, 255, 255, 0])
PRED = np.array([0, 0, 1, 1, 0, 2, 3, 3])


def test_confusion_matrix_and_iou_by_hand():
    cm = ConfusionMatrix(4).update(PRED, GT)
    # Rows = ground truth. The two 255 pixels are ignored, so class 2 is in neither gt nor predictions.
    assert cm.matrix.tolist() == [[2, 1, 0, 1], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    iou = cm.iou()
    assert iou[0] == pytest.approx(2 / 5)  # tp 2 / (row 4 + col 3 - 2)
    assert iou[1] == pytest.approx(1 / 3)  # 1 / (2 + 2 - 1)
    assert math.isnan(iou[2])  # absent from both: excluded from the mean
    assert iou[3] == 0.0  # predicted, never in gt: counts as 0
    assert cm.miou() == pytest.approx((2 / 5 + 1 / 3 + 0) / 3)
    assert cm.pixel_accuracy() == pytest.approx(3 / 6)
    assert cm.total == 6


def test_confusions_are_the_largest_row_shares_off_the_diagonal():
    cm = ConfusionMatrix(4).update(PRED, GT)  # rows [2, 1, 0, 1], [1, 1, 0, 0]
    top = cm.confusions(["a", "b", "c", "d"], top=5)
    # b -> a: 1 of b's 2 pixels; a -> b and a -> d: 1 of a's 4 each (ties keep matrix order); nothing else is wrong
    assert top == [{"true": "b", "predicted": "a", "share": 0.5}, {"true": "a", "predicted": "b", "share": 0.25},
                   {"true": "a", "predicted": "d", "share": 0.25}]
    assert cm.confusions(["a", "b", "c", "d"], top=1) == top[:1]
    assert ConfusionMatrix(2).update(np.array([0, 1]), np.array([0, 1])).confusions(["x", "y"]) == []
    with pytest.raises(ValueError, match="3 names for 4 classes"):
        cm.confusions(["a", "b", "c"])


def test_ground_truth_outside_the_classes_is_ignored_whatever_the_prediction():
    gt = np.array([[255, 7, 1], [1, 1, 255]], dtype=np.uint8)  # 7 >= C is ignored like 255
    pred = np.array([[1, 0, 1], [1, 0, 0]], dtype=np.uint8)
    cm = ConfusionMatrix(3).update(pred, gt)
    assert cm.matrix.tolist() == [[0, 0, 0], [1, 2, 0], [0, 0, 0]]
    assert cm.iou(indices=[0, 1]).tolist() == [0.0, 2 / 3]


def test_update_rejects_mismatched_shapes_and_out_of_range_predictions():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"prediction shape \(2,\) differs from ground truth shape \(3,\)"):
        cm.update(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\), found 0..255"):
        cm.update(np.array([0, 255]), np.array([0, 1]))
    cm.update(np.array([0, 255]), np.array([0, 255]))  # an invalid prediction on an ignored pixel is fine
    assert cm.total == 1


def test_matrices_from_workers_sum_to_the_single_pass_result():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 20, (4, 8, 16))  # 19 is ignored
    pred = rng.integers(0, 19, (4, 8, 16))
    whole = ConfusionMatrix(19).update(pred, gt)
    parts = [ConfusionMatrix(19).update(pred[i], gt[i]) for i in range(4)]
    assert (ConfusionMatrix.merge(parts).matrix == whole.matrix).all()
    summed = parts[0] + parts[1]
    summed += parts[2]
    summed.add(parts[3])
    assert (summed.matrix == whole.matrix).all() and (parts[0].matrix != whole.matrix).any()
    with pytest.raises(ValueError, match="cannot add a 16-class matrix to a 19-class one"):
        whole.add(ConfusionMatrix(16))


def test_synthia_miou13_is_the_mean_of_the_16_class_ious_of_13_classes():
    p16, p13 = L.PROTOCOLS["16"], L.PROTOCOLS["13"]
    road, wall, sky = 0, 3, 10  # 19-class train ids
    gt19 = np.array([road, road, road, road, sky, 9], dtype=np.uint8)  # terrain (9) is not a 16-class class
    gt16 = p16.from_trainid19[gt19]
    assert gt16.tolist() == [0, 0, 0, 0, 9, 255]
    pred16 = p16.from_trainid19[np.array([road, road, wall, wall, sky, sky])]
    cm = ConfusionMatrix(16).update(pred16, gt16)
    iou = cm.per_class(p16.class_names)
    assert (iou["road"], iou["wall"], iou["sky"]) == (0.5, 0.0, 1.0)
    assert cm.miou() == pytest.approx(0.5)  # road, wall, sky
    idx = p13.indices_within(p16)
    # Road keeps its wall errors (2 / 4): the mIoU* is not a re-evaluation on a 13x13 matrix.
    assert cm.per_class(p13.class_names, idx)["road"] == 0.5
    assert cm.miou(idx) == pytest.approx(0.75)


def test_iou_table_prints_percentages_na_and_summary_rows():
    cm = ConfusionMatrix(4).update(PRED, GT)
    text = format_iou_table(cm.iou(), ["a", "bb", "c", "d"], title="demo")
    assert text.splitlines() == [
        "demo", "class  IoU(%)", "-" * 14, "a       40.00", "bb      33.33", "c         n/a", "d        0.00", "-" * 14,
        "mIoU    24.44",
    ]
    text = format_iou_table({"road": 0.5, "sky": 1.0}, summary={"mIoU (16)": 0.5, "mIoU* (13)": 0.75})
    assert text.splitlines()[-2:] == ["mIoU (16)    50.00", "mIoU* (13)   75.00"]


def _cityscapes_gt_tree(root: Path, rng: np.random.Generator, n: int, shape: tuple[int, int]) -> None:
    # Ids seen in gt include ignored ones (unlabeled, static, parking, guard rail); classes such as wall or
    # train appear nowhere (NaN for both evaluators); motorcycle is predicted but never in gt (IoU 0).
    ids = np.array([0, 4, 7, 8, 9, 11, 14, 21, 23, 24, 26, 33])
    for i in range(n):
        stem = f"lindau_000000_{i:06d}"
        image = _mk(root / f"leftImg8bit/val/lindau/{stem}_leftImg8bit.png")
        Image.fromarray(np.zeros((*shape, 3), np.uint8)).save(image)
        gt = ids[rng.integers(0, len(ids), shape)].astype(np.uint8)
        Image.fromarray(gt).save(_mk(root / f"gtFine/val/lindau/{stem}_gtFine_labelIds.png"))


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_per_class_iou_matches_the_official_cityscapes_evaluator(tmp_path: Path, monkeypatch):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    if not hasattr(np, "in1d"):  # cityscapesscripts 2.3.0 calls np.in1d, removed in NumPy 2.4
        monkeypatch.setattr(np, "in1d", np.isin, raising=False)
    rng = np.random.default_rng(3)
    _cityscapes_gt_tree(tmp_path / "cs", rng, n=3, shape=(24, 40))
    predicted = np.array([0, 1, 2, 8, 10, 11, 13, 17, 18])  # train ids the "model" outputs
    cm = ConfusionMatrix(19)
    pred_files, gt_files = [], []
    for sample in find_samples(tmp_path / "cs", "cityscapes"):
        gt = read_label(sample, "cityscapes", check_shape=True)
        pred = predicted[rng.integers(0, len(predicted), gt.shape)]
        keep = (gt != 255) & (rng.random(gt.shape) < 0.6)
        pred[keep] = gt[keep]  # a partly right model
        cm.update(pred, gt)
        pred_file = tmp_path / "results" / f"{sample.name}_pred.png"
        Image.fromarray(L.TRAINID_TO_ID[pred]).save(_mk(pred_file))  # the evaluator wants label ids
        pred_files.append(str(pred_file))
        gt_files.append(str(sample.label))

    args = copy.copy(official.args)
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.quiet = True
    args.JSONOutput = False
    args.exportFile = str(tmp_path / "result.json")
    result = official.evaluateImgLists(pred_files, gt_files, args)

    ours = cm.per_class(L.CLASS_NAMES_19)
    theirs = {name: result["classScores"][name] for name in L.CLASS_NAMES_19}
    assert [n for n, v in ours.items() if math.isnan(v)] == [n for n, v in theirs.items() if math.isnan(v)]
    assert math.isnan(ours["wall"]) and ours["motorcycle"] == 0.0 and 0.3 < ours["road"] < 1.0
    for name in L.CLASS_NAMES_19:
        if not math.isnan(ours[name]):
            assert ours[name] == pytest.approx(theirs[name], abs=1e-6), name
    assert cm.miou() == pytest.approx(result["averageScoreClasses"], abs=1e-6)
