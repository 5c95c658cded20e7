"""bench/label_statistics.py: the distances between label statistics that tell a class swap, and the script that
places a model's predictions and confidence against them."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_label_statistics_tell_a_swap_the_class_proportions_hide_from_one_the_layout_hides(bench_module):
    ls = bench_module("label_statistics")
    src = np.zeros((3, 4, 2))
    src[0, 2:] = 1          # class 0 at the bottom, class 1 at the top: equal shares
    src[1, :2] = 1
    assert ls.tv_shares(src, src) == 0 and ls.tv_positions(src, src) == 0
    flipped = ls.swapped(src, [(0, 1)])   # a swap of two equally large classes: shares identical, layout opposite
    assert ls.tv_shares(src, flipped) == 0 and ls.tv_positions(src, flipped) == pytest.approx(1.0)
    more = src.copy()
    more[2, 3] = 3          # a third class on the bottom row: shares 4/14, 4/14, 6/14 against 1/2, 1/2, 0
    assert ls.tv_shares(src, more) == pytest.approx(6 / 14)
    assert ls.tv_positions(src, more) == pytest.approx((2 * 0.75) / 8)  # 2 of 8 positions: p(c|pos) 1/4 vs 1


def test_label_statistics_script_reports_every_swap_of_a_generation(synth_root):
    out = subprocess.run([sys.executable, str(ROOT / "bench/label_statistics.py"), str(synth_root)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = out.stdout.splitlines()[2:7]
    assert [r.split()[0] for r in rows] == ["true", "road", "building", "all", "(source"]
    for r in rows[:4]:
        numbers = r.split("swapped")[-1].split("labels")[-1].split()
        assert 0 <= float(numbers[0]) <= 1 and 0 <= float(numbers[1]) <= 1, r  # the two distances
        assert len([n for n in numbers[2:] if n != "/"]) == 4  # shares of road, sidewalk, building, vegetation


def test_label_statistics_place_a_models_predictions_and_its_confidence(synth_root, tmp_path, bench_module):
    import torch
    from tests.test_training import tiny_cfg
    from training.checkpoints import load_trained
    from training.data import Augment, SegmentationDataset
    from training.engine import Trainer
    from training.evaluate import deployed_output
    from training.losses import upsample
    Trainer(tiny_cfg(synth_root, "adaptsegnet", iters=1), tmp_path / "run", progress=False).run()
    ckpt = tmp_path / "run" / "checkpoints" / "last.pth"
    ls = bench_module("label_statistics")
    counts, h_target, h_source = ls.predictions(ckpt, synth_root, limit=3)
    w, h = ls.GRID
    assert counts.shape == (19, h, w) and counts.sum() == 3 * w * h  # every position of 3 images, once
    assert 0 < h_target <= 1 and 0 < h_source <= 1
    model, _ = load_trained(ckpt)  # one image: its counts are the one-hot of the prediction made by hand
    image = SegmentationDataset(synth_root / "cityscapes", "cityscapes", split="train", labelled=False,
                                augment=Augment(size=(96, 48)), limit=1)[0]["image"]
    with torch.no_grad():
        pred = upsample(deployed_output(model(image[None])).float(), (h, w)).argmax(1)[0].numpy()
    one = ls.predictions(ckpt, synth_root, limit=1)[0]
    assert np.array_equal(one.argmax(0), pred) and np.array_equal(one.sum(0), np.ones((h, w)))
    out = subprocess.run([sys.executable, str(ROOT / "bench/label_statistics.py"), str(synth_root), "--checkpoint",
                          str(ckpt), "--limit", "2"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1].split()
    assert last[0].endswith("/run") and "entropy on target / source images" in out.stdout
    _, h_target2, h_source2 = ls.predictions(ckpt, synth_root, limit=2)  # the row prints what the function gives
    assert float(last[-3]) == pytest.approx(h_target2, abs=6e-4) and float(last[-1]) == pytest.approx(h_source2, abs=6e-4)
