"""`jal-segment --compare`: two real exported models on the same frames: agreement (the definition export's parity
report uses), both tables and the per-class delta, captioned side-by-side images and video, refusals."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from jal_deploy.cli.segment import main as segment
from jal_deploy.metrics import Agreement, format_compare_table
from jal_deploy.segmenter import Segmenter
from jal_deploy.sources import open_source
from tests.test_segment_cli import _count_frames, _no_temp_files, _val_frames, _video


def _run(*args):
    return CliRunner().invoke(segment, [*map(str, args), "--no-progress"], catch_exceptions=False)


def test_agreement_is_pixel_weighted_over_images():
    a = Agreement().update(np.zeros((2, 2)), np.array([[0, 1], [0, 0]]))  # 3 of 4
    a.update(np.zeros((4, 4)), np.zeros((4, 4)))                           # 16 of 16
    assert a.same == 19 and a.total == 20 and a.percent == pytest.approx(95.0)
    assert np.isnan(Agreement().percent)
    with pytest.raises(ValueError, match="shapes"):
        a.update(np.zeros((2, 2)), np.zeros((2, 3)))


def test_compare_table_lists_both_columns_and_the_delta():
    table = format_compare_table({"road": 0.5, "sky": None}, {"road": 0.625, "sky": None}, "source-only", "adapted",
                                 summary={"mIoU": (0.5, 0.625)})
    lines = table.splitlines()
    assert lines[0].split() == ["class", "source-only", "adapted", "delta"]
    assert lines[2].split() == ["road", "50.00", "62.50", "+12.50"]
    assert lines[3].split() == ["sky", "n/a", "n/a"]
    assert lines[-1].split() == ["mIoU", "50.00", "62.50", "+12.50"]
    with pytest.raises(ValueError, match="same classes"):
        format_compare_table({"road": 0.5}, {"sky": 0.5}, "a", "b")


def test_labelled_tree_gives_both_tables_the_delta_and_the_agreement(runtime_models, synth_root, tmp_path):
    tree = f"cityscapes:{synth_root / 'cityscapes'}"
    a, b = runtime_models["labels"], runtime_models["logits"]
    alone = tmp_path / "alone"
    assert _run(tree, "-m", b, "-o", alone, "--save", "none").exit_code == 0
    out = tmp_path / "cmp"
    res = _run(tree, "-m", a, "--compare", b, "-o", out)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    other = json.loads((alone / "report.json").read_text())
    cmp = report["compare"]
    a_path, b_path = Path(a), Path(b)
    assert a_path.stem == b_path.stem  # same file name in two folders: the captions name the folders too
    assert cmp["names"] == [f"{a_path.parent.name}/{a_path.stem}", f"{b_path.parent.name}/{b_path.stem}"]
    assert cmp["miou"] == pytest.approx(other["miou"], abs=1e-12)  # the same number as running it alone
    assert cmp["miou_delta"] == pytest.approx(other["miou"] - report["miou"], abs=1e-12)
    for name, v in report["per_class"].items():
        if v is not None and cmp["per_class"][name] is not None:
            assert cmp["per_class_delta"][name] == pytest.approx(cmp["per_class"][name] - v, abs=1e-12)
    # agreement: the package's one definition, over every pixel of every frame
    sa, sb = Segmenter.from_path(a, device="cpu"), Segmenter.from_path(b, device="cpu")
    agreement = Agreement()
    for item in open_source(tree):
        agreement.update(sa.predict(item.frame), sb.predict(item.frame))
    assert cmp["agreement"] == pytest.approx(agreement.percent, abs=1e-9) and cmp["pixels"] == agreement.total
    assert 90.0 < cmp["agreement"] < 100.0  # same weights; nearest labels vs bilinear logits differ at boundaries
    assert "delta" in res.output and f"agree on {cmp['agreement']:.2f} %" in res.output
    for name, doc in zip(cmp["names"], (report, cmp)):  # each model's largest confusions, under its own name
        worst = doc["top_confusions"][0]
        assert f"Largest confusions of {name} " in res.output
        assert f"{worst['true']:>14s} -> {worst['predicted']:<14s} {100 * worst['share']:5.1f} %" in res.output
    # default outputs for a tree: the captioned pair, one per frame, nothing half-written
    files = sorted((out / "compare").rglob("*.jpg"))
    assert len(files) == 4 and not (out / "overlay").exists() and _no_temp_files(out)
    pair = cv2.imread(str(files[0]))
    assert pair.shape == (64 + 18, 2 * 128, 3)  # two 128x64 overlays under an 18-pixel caption band
    # white caption text on black: at this width the anti-aliased strokes are thinner than a pixel and peak at
    # 199 before JPEG with OpenCV 5.1, so "white" means clearly brighter than any JPEG ringing
    assert pair[:18].max() > 150 and pair[:18].min() == 0


def test_a_model_against_itself_agrees_everywhere(runtime_models, synth_root, tmp_path):
    res = _run(f"cityscapes:{synth_root / 'cityscapes'}", "-m", runtime_models["labels"], "--compare",
               runtime_models["labels"], "-o", tmp_path, "--save", "none")
    assert res.exit_code == 0, res.output
    cmp = json.loads((tmp_path / "report.json").read_text())["compare"]
    assert cmp["agreement"] == 100.0 and cmp["miou_delta"] == 0.0


def test_video_comparison_is_side_by_side_and_keeps_every_frame(runtime_models, synth_root, tmp_path):
    src = _video(tmp_path / "drive.avi", _val_frames(synth_root, 5), fps=10.0)
    out = tmp_path / "out"
    res = _run(src, "-m", runtime_models["labels"], "--compare", runtime_models["logits"], "-o", out,
               "--vid-stride", "2")
    assert res.exit_code == 0, res.output
    assert _count_frames(out / "drive.mp4") == (5, 10.0)
    cap = cv2.VideoCapture(str(out / "drive.mp4"))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (64 + 18, 256, 3)
    report = json.loads((out / "report.json").read_text())
    assert report["compare"]["pixels"] == 5 * 64 * 128 and "miou" not in report["compare"]


def test_refusals_are_readable_and_write_nothing(runtime_models, synth_root, tmp_path):
    tree = f"cityscapes:{synth_root / 'cityscapes'}"
    res = _run(tree, "-m", runtime_models["labels"], "--save", "compare", "-o", tmp_path / "a")
    assert res.exit_code == 1 and "needs a second model" in res.output
    res = _run(tree, "-m", runtime_models["labels"], "--compare", tmp_path / "missing.onnx", "-o", tmp_path / "b")
    assert res.exit_code == 1 and "missing.onnx" in res.output
    assert not (tmp_path / "a" / "report.json").exists() and not (tmp_path / "b").exists()


def test_models_of_different_class_sets_are_refused_before_any_work(runtime_models, synth_root, tmp_path):
    from export.api import export_checkpoint
    from tests.test_training import tiny_cfg
    from training.engine import Trainer

    cfg = tiny_cfg(synth_root, "source-only", iters=1)
    cfg.data.source, cfg.data.source_root = "synthia", str(synth_root / "synthia")
    cfg.data.protocol, cfg.data.eval_protocols, cfg.model.num_classes = "16", ("16", "13"), 16
    trainer = Trainer(cfg.validate(), tmp_path / "run16", progress=False)
    trainer.run()
    model16 = export_checkpoint(trainer.save("m16.pth"), tmp_path / "m16", log=lambda *_: None)["artefacts"]["onnx"]
    out = tmp_path / "out"
    res = _run(f"cityscapes:{synth_root / 'cityscapes'}", "-m", runtime_models["labels"], "--compare", model16,
               "-o", out)
    assert res.exit_code == 1 and "19-class protocol with one predicting 16 classes" in res.output
    assert not (out / "report.json").exists()


def test_the_second_model_runs_batched_in_the_pipeline(runtime_models, synth_root):
    from jal_deploy.pipeline import COMPARE, Stats, predictions
    tree = f"cityscapes:{synth_root / 'cityscapes'}"
    sa = Segmenter.from_path(runtime_models["labels"], device="cpu")
    sb = Segmenter.from_path(runtime_models["logits"], device="cpu")
    stats = Stats()
    preds = list(predictions(sa, open_source(tree), batch=3, stats=stats, compare=sb))
    assert len(preds) == 4 and stats.batches == 2 and stats.inferred == 4  # 3 + 1 frames, both models
    assert stats.seconds[COMPARE] > 0 and "compare" in stats.ms_per_frame()
    for p in preds:  # each the same labels as a call on its own
        assert np.array_equal(p.labels, sa.predict(p.item.frame)) and np.array_equal(p.other, sb.predict(p.item.frame))
    # --vid-stride --stride-fill repeat: both models' labels are reused together
    strided = list(predictions(sa, open_source(tree), batch=2, vid_stride=2, compare=sb, fill="repeat"))
    assert [p.reused for p in strided] == [False, True, False, True]
    assert all(np.array_equal(strided[i].other, strided[i - 1].other) for i in (1, 3))
    assert all(p.other is None for p in predictions(sa, open_source(tree), batch=2))  # no second model: no `other`
