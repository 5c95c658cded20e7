"""The README's main command (`./demo.sh` -> `jal-demo`) on a reduced size: data, video, mIoU table, FPS,
overlays and the annotated video, with the shipped model."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]


def test_demo_script_runs_the_main_job_end_to_end(tmp_path):
    env = {**os.environ, "VIRTUAL_ENV": sys.prefix,  # already installed: demo.sh skips venv creation and pip
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = tmp_path / "demo"
    proc = subprocess.run([str(REPO / "demo.sh"), "-o", str(out), "--val-frames", "4", "--video-frames", "6",
                           "--size", "256x128", "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mIoU (19 classes)" in proc.stdout and "FPS end to end" in proc.stdout and "Target val mIoU" in proc.stdout
    # source-only and adapted side by side: one table with both columns and the delta
    header = next(line for line in proc.stdout.splitlines() if line.startswith("class "))
    assert header.split() == ["class", "source-only", "adapted", "delta"]
    report = json.loads((out / "val" / "report.json").read_text())
    assert report["timing"]["frames"] == 4 and 0.0 <= report["miou"] <= 1.0 and len(report["per_class"]) == 19
    assert report["model"].endswith("source-only-synthetic-r18.onnx")
    assert report["compare"]["model"].endswith("jal-wtm-ssl-synthetic-r18.onnx")
    assert report["compare"]["miou_delta"] == report["compare"]["miou"] - report["miou"]
    pairs = list((out / "val" / "compare").rglob("*.jpg"))
    assert len(pairs) == 4 and cv2.imread(str(pairs[0])).shape[1] == 2 * 256
    video = cv2.VideoCapture(str(out / "street" / "street.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 6 and video.get(cv2.CAP_PROP_FRAME_WIDTH) == 256
    side = cv2.VideoCapture(str(out / "street-compare" / "street.mp4"))  # source-only | adapted, captioned
    assert int(side.get(cv2.CAP_PROP_FRAME_COUNT)) == 6 and side.get(cv2.CAP_PROP_FRAME_WIDTH) == 512
    grid = cv2.imread(str(out / "grid.png"))  # 4 frames x (image | source-only | adapted | ground truth)
    assert grid.shape[1] == 4 * 256 + 3 * 2 and grid.shape[0] > 4 * 128 and "grid.png" in proc.stdout
    # a second run reuses the generated data and video
    again = subprocess.run([str(REPO / "demo.sh"), "-o", str(out), "--val-frames", "4", "--video-frames", "6",
                            "--size", "256x128", "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and json.loads((out / "val" / "report.json").read_text())["miou"] == report["miou"]


def test_demo_without_the_model_says_what_to_do(tmp_path):
    from click.testing import CliRunner

    from jal_deploy.cli.demo import main
    res = CliRunner().invoke(main, ["-o", str(tmp_path), "-m", str(tmp_path / "none.onnx"), "--no-progress"])
    assert res.exit_code == 1 and "pass --model" in res.output
    res = CliRunner().invoke(main, ["-o", str(tmp_path), "--baseline", str(tmp_path / "none.onnx"), "--no-progress"])
    assert res.exit_code == 1 and "--no-compare" in res.output


def test_demo_without_comparison_runs_the_adapted_model_alone(tmp_path):
    from jal_deploy.demo import run_demo

    lines = []
    summary = run_demo(tmp_path, val_frames=2, video_frames=3, size=(256, 128), compare=False, progress=False,
                       log=lines.append)
    assert "baseline" not in summary and len(list((tmp_path / "val" / "overlay").rglob("*.jpg"))) == 2
    assert not (tmp_path / "street-compare").exists() and any("Target val mIoU" in str(line) for line in lines)
