"""jal-segment end to end: outputs, videos, labelled trees (cross-checked with the official evaluator) and
every bad input a user can hand it."""
import copy
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from jal_deploy.cli.segment import main as segment
from jal_deploy.datasets import find_samples, read_label
from jal_deploy.labels import CLASS_NAMES_19
from jal_deploy.metrics import ConfusionMatrix


def _run(*args):
    return CliRunner().invoke(segment, [*map(str, args), "--no-progress"], catch_exceptions=False)


def _video(path: Path, frames: list[np.ndarray], fps=12.0, fourcc="MJPG") -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def _val_frames(synth_root, n):
    files = sorted((synth_root / "cityscapes" / "leftImg8bit").rglob("*.png"))
    return [cv2.imread(str(files[i % len(files)])) for i in range(n)]


def _count_frames(path: Path) -> tuple[int, float]:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n, cap.get(cv2.CAP_PROP_FPS)


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if p.is_file()]


def test_help_shows_examples():
    out = CliRunner().invoke(segment, ["--help"]).output
    assert "Examples:" in out and "cityscapes:PATH" in out and "--vid-stride" in out


def test_labelled_tree_reports_miou_that_the_official_evaluator_confirms(runtime_models, synth_root, tmp_path,
                                                                         monkeypatch):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official
    if not hasattr(np, "in1d"):  # cityscapesscripts 2.3.0 calls np.in1d, removed in NumPy 2.4
        monkeypatch.setattr(np, "in1d", np.isin, raising=False)
    out = tmp_path / "out"
    res = _run(f"cityscapes:{synth_root / 'cityscapes'}", "-m", runtime_models["labels"], "-o", out,
               "--save", "labelid,trainid", "--batch", "3")
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["per_class"]) == set(CLASS_NAMES_19) and report["protocol"] == "19"
    assert "mIoU (19 classes)" in res.output and "FPS" in res.output

    samples = find_samples(synth_root / "cityscapes", "cityscapes", split="val")
    cm = ConfusionMatrix(19)
    preds, gts = [], []
    for s in samples:
        train_ids = cv2.imread(str(out / "trainIds" / f"{s.name}.png"), cv2.IMREAD_UNCHANGED)
        gt = read_label(s, "cityscapes")
        assert train_ids.shape == gt.shape  # full label resolution
        cm.update(train_ids, gt)
        preds.append(str(out / "labelIds" / f"{s.name}_labelIds.png"))
        gts.append(str(s.label))
    assert report["miou"] == pytest.approx(cm.miou(), abs=1e-12)
    assert report["confusion"]["classes"] == list(CLASS_NAMES_19)
    assert report["confusion"]["matrix"] == cm.matrix.tolist()
    assert report["top_confusions"] == cm.confusions(CLASS_NAMES_19, 5) and len(report["top_confusions"]) == 5
    worst = report["top_confusions"][0]
    assert f"{worst['true']:>14s} -> {worst['predicted']:<14s} {100 * worst['share']:5.1f} %" in res.output

    args = copy.copy(official.args)
    args.evalInstLevelScore, args.evalPixelAccuracy, args.quiet, args.JSONOutput = False, False, True, False
    args.exportFile = str(tmp_path / "official.json")
    theirs = official.evaluateImgLists(preds, gts, args)
    for name in CLASS_NAMES_19:
        ours = report["per_class"][name]
        if ours is None:
            assert math.isnan(theirs["classScores"][name])
        else:
            assert ours == pytest.approx(theirs["classScores"][name], abs=1e-6), name
    assert report["miou"] == pytest.approx(theirs["averageScoreClasses"], abs=1e-6)


def test_synthia_tree_is_scored_on_its_16_and_13_classes(runtime_models, synth_root, tmp_path):
    res = _run(f"synthia:{synth_root / 'synthia'}", "-m", runtime_models["labels"], "-o", tmp_path, "--save", "none")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["protocol"] == "16" and len(report["per_class"]) == 16 and set(report["protocols"]) == {"16", "13"}
    assert "mIoU* (13 classes)" in res.output and not (tmp_path / "overlay").exists()


def test_folder_with_a_corrupt_image_lists_it_and_writes_the_rest(runtime_models, synth_root, tmp_path):
    src = tmp_path / "frames"
    (src / "sub").mkdir(parents=True)
    for i, f in enumerate(_val_frames(synth_root, 3)):
        cv2.imwrite(str(src / ("sub" if i == 2 else "") / f"f{i}.png"), f)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    out = tmp_path / "out"
    res = _run(src, "-m", runtime_models["labels"], "-o", out, "--save", "overlay,color,side")
    assert res.exit_code == 1 and "Skipped 1 item(s)" in res.output and "broken.png" in res.output
    assert sorted(p.relative_to(out).as_posix() for p in (out / "color").rglob("*.png")) == \
        ["color/f0.png", "color/f1.png", "color/sub/f2.png"]
    side = cv2.imread(str(out / "side" / "f0.jpg"))
    assert side.shape == (64, 256, 3)
    report = json.loads((out / "report.json").read_text())
    assert report["skipped"][0]["item"] == "broken" and report["timing"]["frames"] == 4
    assert _no_temp_files(out)


def test_video_keeps_every_frame_and_the_frame_rate(runtime_models, synth_root, tmp_path):
    src = _video(tmp_path / "drive.avi", _val_frames(synth_root, 9), fps=12.0)
    out = tmp_path / "out"
    res = _run(src, "-m", runtime_models["labels"], "-o", out, "--vid-stride", "2", "--stride-fill", "repeat")
    assert res.exit_code == 0, res.output
    assert _count_frames(out / "drive.mp4") == (9, 12.0)
    report = json.loads((out / "report.json").read_text())
    assert report["timing"]["inferred"] == 5 and report["outputs"]["video"]["frames"] == 9


def test_h264_through_pyav(runtime_models, synth_root, tmp_path):
    pytest.importorskip("av", reason="PyAV (extra 'video') is not installed")
    src = _video(tmp_path / "drive.avi", _val_frames(synth_root, 4))
    res = _run(src, "-m", runtime_models["labels"], "-o", tmp_path / "out", "--codec", "h264", "--video-style", "side")
    assert res.exit_code == 0, res.output
    import av
    with av.open(str(tmp_path / "out" / "drive.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (256, 64)
        assert sum(1 for _ in container.decode(stream)) == 4


def test_frame_that_fails_to_decode_mid_video_is_listed_and_the_video_stays_complete(runtime_models, synth_root,
                                                                                     tmp_path):
    good = _video(tmp_path / "good.avi", _val_frames(synth_root, 12))
    data = bytearray(good.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    assert len(starts) == 12
    data[starts[5]:starts[5] + 300] = b"\x00" * 300  # frame 5's JPEG header and tables
    bad = tmp_path / "bad.avi"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    res = _run(bad, "-m", runtime_models["labels"], "-o", out)
    assert res.exit_code == 1 and "frame 5 of video" in res.output
    assert _count_frames(out / "bad.mp4")[0] == 12  # the broken frame repeats the previous one
    assert _no_temp_files(out)


def test_truncated_and_unreadable_videos(runtime_models, synth_root, tmp_path):
    good = _video(tmp_path / "good.avi", _val_frames(synth_root, 20))
    cut = tmp_path / "cut.avi"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    out = tmp_path / "out"
    res = _run(cut, "-m", runtime_models["labels"], "-o", out)
    assert res.exit_code == 1 and "truncated or corrupt" in res.output
    n, _ = _count_frames(out / "cut.mp4")
    assert 0 < n < 20 and json.loads((out / "report.json").read_text())["status"] == "truncated"
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    res = _run(garbage, "-m", runtime_models["labels"], "-o", tmp_path / "out2")
    assert res.exit_code == 1 and "cannot open video" in res.output and not (tmp_path / "out2").exists()


def test_unwritable_output_and_bad_model_fail_before_any_work(runtime_models, synth_root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = _run(synth_root / "cityscapes" / "leftImg8bit", "-m", runtime_models["labels"], "-o", blocker / "out")
    assert res.exit_code == 1 and "cannot write to" in res.output
    res = _run(synth_root / "cityscapes" / "leftImg8bit", "-m", tmp_path / "nope.onnx", "-o", tmp_path / "o")
    assert res.exit_code == 1 and "does not exist" in res.output
    res = _run(synth_root / "cityscapes" / "leftImg8bit", "-m", runtime_models["labels"], "--save", "video",
               "-o", tmp_path / "o")
    assert res.exit_code == 1 and "needs a video" in res.output


def test_ctrl_c_mid_video_finalises_the_video_and_exits_130(runtime_models, synth_root, tmp_path):
    src = _video(tmp_path / "long.avi", _val_frames(synth_root, 1500), fps=25.0)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "jal_deploy.cli.segment", str(src), "-m", runtime_models["labels"],
                             "-o", str(out), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob(".long.mp4.*")):  # the video is being written
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "Stopping" in output and "interrupted" in output
    report = json.loads((out / "report.json").read_text())
    written = report["outputs"]["video"]["frames"]
    assert report["status"] == "interrupted" and 0 < written < 1500
    assert _count_frames(out / "long.mp4")[0] == written
    assert _no_temp_files(out)


def test_a_dataset_tree_given_as_a_plain_folder_is_segmented_with_a_hint_to_score_it(runtime_models, synth_root,
                                                                                     tmp_path):
    tree = synth_root / "cityscapes"
    out = tmp_path / "out"
    res = _run(tree, "-m", runtime_models["labels"], "-o", out, "--save", "none")
    assert res.exit_code == 0, res.output
    hint = f"`cityscapes:{tree}` segments its val split and scores them against their labels"
    assert res.output.count(hint) == 2  # before the run, and again under the results
    report = json.loads((out / "report.json").read_text())
    assert any(hint in note for note in report["notes"]) and "miou" not in report
    images = sum(1 for p in tree.rglob("*.png"))
    assert report["timing"]["frames"] == images  # label maps included: the plain-folder behaviour is kept
    plain = _run(tree / "leftImg8bit", "-m", runtime_models["labels"], "-o", tmp_path / "plain", "--save", "none")
    assert plain.exit_code == 0 and "laid out as" not in plain.output  # an image folder alone: no hint
