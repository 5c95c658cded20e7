"""The synthetic benchmark's baselines and its ablation script (the real table is a benchmark, not a test)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jal_deploy.datasets import find_samples, read_label
from jal_deploy.datasets.writers import write_image, write_raw_label
from jal_deploy.labels import TRAINID_TO_ID
from training.baselines import layout_prior, prior_scores

ROOT = Path(__file__).resolve().parents[1]


def _write_cityscapes_val(root: Path, labels: list[np.ndarray]) -> None:
    for i, train_ids in enumerate(labels):
        stem = f"ulm_000000_{i:06d}"
        write_image(root / "leftImg8bit" / "val" / "ulm" / f"{stem}_leftImg8bit.png",
                    np.zeros((*train_ids.shape, 3), np.uint8))
        write_raw_label(root / "gtFine" / "val" / "ulm" / f"{stem}_gtFine_labelIds.png", TRAINID_TO_ID[train_ids],
                        "cityscapes")


def test_layout_prior_is_the_per_pixel_mode_of_the_source_labels(synth_root):
    prior = layout_prior(synth_root / "gta5", "gta5", size=(32, 16))
    stack = np.stack([read_label(s, "gta5") for s in find_samples(synth_root / "gta5", "gta5")])
    assert prior.shape == (16, 32) and prior.dtype == np.uint8
    assert prior[-1, 16] == 0 and prior[0, 16] == 10  # road at the bottom, sky at the top
    assert set(np.unique(prior)) <= set(np.unique(stack[stack != 255]))


def test_prior_scores_a_known_split_exactly(tmp_path):
    road_sky = np.zeros((4, 6), np.uint8)
    road_sky[:2] = 10
    _write_cityscapes_val(tmp_path, [road_sky, np.full((4, 6), 13, np.uint8)])
    cm = prior_scores(road_sky, tmp_path)
    # frame 1 is all car: 12 of its pixels are predicted road, 12 sky; frame 0 is exactly the prior
    iou = cm.iou()
    assert iou[10] == pytest.approx(12 / 24) and iou[0] == pytest.approx(12 / 24) and iou[13] == 0.0
    assert cm.miou() == pytest.approx((0.5 + 0.5 + 0.0) / 3)


def _bench(out, *args):
    cmd = [sys.executable, str(ROOT / "bench/synthetic_ablation.py"), "--out", str(out), "--quick", "--threads", "1",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_quick_ablation_prints_every_baseline_resumes_and_refuses_another_protocol(tmp_path):
    rows = ["prior", "source-only", "jal-wtm", "oracle"]
    first = _bench(tmp_path, "--seeds", "0", "--rows", *rows)
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["rows"]) == {*rows, "source-only@source-val"}
    assert summary["protocol"]["eval_seed"] != summary["protocol"]["data_seed"]  # held-out val
    jal = summary["rows"]["jal-wtm"]
    so, oracle = summary["rows"]["source-only"]["mean"], summary["rows"]["oracle"]["mean"]
    assert jal["gap_closed"] == [pytest.approx((jal["mean"] - so) / (oracle - so))]
    for row in rows:
        assert f"\n{row} " in first.stdout and 0 <= summary["rows"][row]["mean"] <= 100
    assert "gap closed" in first.stdout and ("AVX2" in first.stdout or "instruction sets unknown" in first.stdout)
    assert (tmp_path / "seed0" / "pretrain-oracle" / "result.json").is_file()
    again = _bench(tmp_path, "--seeds", "0", "--rows", *rows)  # everything finished: nothing retrains
    assert again.returncode == 0 and "iter " not in again.stdout
    assert json.loads((tmp_path / "summary.json").read_text())["rows"] == summary["rows"]
    other = _bench(tmp_path, "--seeds", "0", "--rows", *rows, "--adapt-iters", "5")
    assert other.returncode != 0 and "another protocol" in other.stderr
