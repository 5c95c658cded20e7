"""The README's main job: generate the synthetic Cityscapes-format target val and a street video, then segment
both with the shipped demo model and its source-only counterpart side by side (both mIoU tables with the
per-class delta, FPS, captioned comparison images, the annotated video and a comparison video). CPU only, no
download.

The val frames are the ones the model card scores (same seed and subset: frames depend only on the seed and
their index), so the mIoU printed here is the card's number, measured again on this machine.
"""
from __future__ import annotations

import json
from pathlib import Path

from jal_deploy.grid import comparison_grid
from jal_deploy.job import run_job
from jal_deploy.segmenter import Segmenter
from jal_deploy.sources import open_source
from jal_deploy.synth import generate, generate_video

REPO_MODELS = Path(__file__).resolve().parents[1] / "models"
DEMO_MODEL = REPO_MODELS / "jal-wtm-ssl-synthetic-r18.onnx"
DEMO_BASELINE = REPO_MODELS / "source-only-synthetic-r18.onnx"  # the same network on the source labels alone


def _ensure_val(root: Path, frames: int, size: tuple[int, int], seed: int, progress: bool) -> Path:
    manifest = root / "synth.json"
    if manifest.is_file():
        doc = json.loads(manifest.read_text())
        same = (doc.get("seed") == seed and doc.get("size") == list(size)
                and doc.get("counts", {}).get("cs_val") == frames)
        # the demo's target is the default one: a tree of another shift family or without the label shift differs
        if same and doc.get("shift", "colour") == "colour" and doc.get("label_shift", True) is True:
            return root / "cityscapes"  # already generated with these settings: reuse
    generate(root, seed=seed, counts={"gta5": 0, "synthia": 0, "cs_train": 0, "cs_val": frames}, size=size,
             force=root.exists(), progress=progress)
    return root / "cityscapes"


def run_demo(out: str | Path = "runs/demo-segment", model: str | Path | None = None, val_frames: int = 100,
             video_frames: int = 75, size: tuple[int, int] = (512, 256), seed: int = 0, device: str = "auto",
             progress: bool = True, log=print, baseline: str | Path | None = None, compare: bool = True) -> dict:
    """`baseline` (default: the shipped source-only model) runs beside `model` unless `compare` is False."""
    out = Path(out)
    model = Path(model) if model else DEMO_MODEL
    if not model.is_file():
        raise FileNotFoundError(f"demo model {model} not found: run from a clone of the repository (models/ holds "
                                f"it) or pass --model")
    baseline = (Path(baseline) if baseline else DEMO_BASELINE) if compare else None
    if baseline is not None and not baseline.is_file():
        raise FileNotFoundError(f"baseline model {baseline} not found: pass --baseline, or --no-compare to run the "
                                f"adapted model alone")
    log(f"1/4 synthetic Cityscapes-format val: {val_frames} frames at {size[0]}x{size[1]} (seed {seed})")
    val_root = _ensure_val(out / "data", val_frames, size, seed, progress)
    video = out / "street.mp4"
    log(f"2/4 synthetic street video: {video_frames} frames")
    if not video.is_file() or _frames(video) != video_frames:
        generate_video(video, seed=seed, frames=video_frames, size=size, force=True, progress=progress)
    seg = Segmenter.from_path(model, device=device)
    base = Segmenter.from_path(baseline, device=device) if baseline is not None else None
    try:
        return _run(out, seg, base, model, baseline, val_root, video, progress, log)
    finally:
        seg.close()
        if base is not None:
            base.close()


def _run(out, seg, base, model, baseline, val_root, video, progress, log) -> dict:
    if base is None:
        log(f"3/4 jal-segment cityscapes:{val_root} -m {model} ({seg.describe()})")
        val = run_job(seg, open_source(f"cityscapes:{val_root}"), out / "val", save=("overlay",), progress=progress,
                      log=log)
        metrics, images = val.metrics, out / "val" / "overlay"
    else:  # the source-only model first, so the delta reads "what adaptation changed"
        log(f"3/4 jal-segment cityscapes:{val_root} -m {baseline} --compare {model} ({seg.describe()})")
        val = run_job(base, open_source(f"cityscapes:{val_root}"), out / "val", save=("compare",),
                      progress=progress, log=log, compare=seg, names=("source-only", "adapted"))
        metrics, images = val.compare, out / "val" / "compare"
    log(val.table)
    log(val.stats.line())
    log(f"4/4 jal-segment {video} -m {model}" + (f", and side by side with {baseline}" if base is not None else ""))
    drive = run_job(seg, open_source(str(video)), out / "street", save=("video",), progress=progress, log=log)
    log(drive.stats.line())
    summary = {"model": str(model), "backend": seg.describe(), "val": {"miou": metrics["miou"],
               "per_class": metrics["per_class"], "timing": val.stats.to_dict(), "images": str(images),
               "report": str(val.report)},
               "video": {**drive.outputs["video"], "timing": drive.stats.to_dict(), "report": str(drive.report)}}
    if base is not None:
        side = run_job(base, open_source(str(video)), out / "street-compare", save=("video",), progress=progress,
                       log=log, compare=seg, names=("source-only", "adapted"))
        grid = comparison_grid(val_root, {"source-only": base, "adapted": seg}, out / "grid.png")
        summary["baseline"] = {"model": str(baseline), "miou": val.metrics["miou"],
                               "per_class": val.metrics["per_class"], "miou_delta": val.compare["miou_delta"],
                               "agreement": val.compare["agreement"], "video": side.outputs["video"]["path"],
                               "grid": grid["path"]}
        log(f"Target val mIoU: source-only {100 * val.metrics['miou']:.2f} -> adapted {100 * metrics['miou']:.2f} "
            f"({100 * val.compare['miou_delta']:+.2f}; model card: models/README.md). Picture: {grid['path']}; "
            f"side-by-side images in {images}; videos {drive.outputs['video']['path']} and {side.outputs['video']['path']} (source-only | "
            f"adapted)")
    else:
        log(f"Target val mIoU {100 * metrics['miou']:.2f} % (model card: models/README.md); overlays in {images}; "
            f"annotated video {drive.outputs['video']['path']}")
    return summary


def _frames(video: Path) -> int:
    import cv2
    cap = cv2.VideoCapture(str(video))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return n
