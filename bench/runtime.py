#!/usr/bin/env python
"""Raw backend inference FPS vs end-to-end `jal-segment` FPS on the same model and video, in one run.

raw:        the backend alone on frames already decoded and resized, batch 1 (what the network costs)
end-to-end: `run_job` exactly as jal-segment runs it (decode, resize, infer, upsample, render + encode the
            annotated video), and once more writing nothing (--save none); unscored, although a generated drive
            has labels: mIoU and TC (with its own optical flow) are measurement, not segmentation
Each is measured --repeats times, alternating, and the median is printed with the ratio.

    python bench/runtime.py                                   # shipped demo model, generated street video
    python bench/runtime.py --model models/jal-wtm-ssl-synthetic-r18.int8.onnx
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from jal_deploy.job import run_job
from jal_deploy.machine import cpu_summary
from jal_deploy.segmenter import Segmenter
from jal_deploy.sources import open_source
from jal_deploy.synth import generate_video

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "jal-wtm-ssl-synthetic-r18.onnx"


def raw_fps(seg: Segmenter, frames: list[np.ndarray], warmup: int = 10) -> float:
    inputs = [seg.preprocess(f)[None] for f in frames]
    for x in inputs[:warmup]:
        seg.infer(x)
    start = time.perf_counter()
    for x in inputs:
        seg.infer(x)
    return len(inputs) / (time.perf_counter() - start)


def end_to_end_fps(seg: Segmenter, video: Path, out: Path, save: tuple[str, ...]) -> tuple[float, dict]:
    result = run_job(seg, open_source(str(video)), out, save=save, progress=False, log=lambda *_: None, score=False)
    return result.stats.fps, result.stats.to_dict()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--video", type=Path, help="default: a generated 150-frame street drive at --size")
    ap.add_argument("--size", default="512x256")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, help="backend CPU threads (default: the backend's own choice)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jal-bench-runtime-"))
    video = args.video
    if video is None:
        w, h = (int(v) for v in args.size.split("x"))
        video = generate_video(tmp / "street.mp4", seed=0, frames=150, size=(w, h), progress=False)["path"]
    frames = [item.frame for item in open_source(str(video))]
    seg = Segmenter.from_path(args.model, device=args.device, threads=args.threads)
    print(f"model {args.model.name} ({seg.describe()}), video {Path(video).name}: {len(frames)} frames "
          f"{frames[0].shape[1]}x{frames[0].shape[0]}, inference at {seg.inference_size(frames[0].shape[1], frames[0].shape[0])}; "
          f"threads {args.threads or 'default'}\nCPU: {cpu_summary()}")
    raw, e2e_video, e2e_none, detail = [], [], [], {}
    for _ in range(args.repeats):
        raw.append(raw_fps(seg, frames))
        fps, detail["video"] = end_to_end_fps(seg, Path(video), tmp / "out-video", ("video",))
        e2e_video.append(fps)
        fps, detail["none"] = end_to_end_fps(seg, Path(video), tmp / "out-none", ())
        e2e_none.append(fps)
    r, v, n = (statistics.median(x) for x in (raw, e2e_video, e2e_none))
    print(f"raw backend inference     {r:8.1f} FPS  (runs: {', '.join(f'{x:.1f}' for x in raw)})")
    for name, fps, d in (("annotated mp4", v, detail["video"]), ("no outputs   ", n, detail["none"])):
        print(f"end to end, {name} {fps:8.1f} FPS  = {100 * fps / r:5.1f} % of raw  (ms/frame {d['ms_per_frame']}; "
              f"bound by the {d['bound']} thread, busy {100 * d['bound_busy']:.0f} %)")


if __name__ == "__main__":
    main()
