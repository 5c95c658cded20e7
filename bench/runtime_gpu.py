#!/usr/bin/env python
"""The runtime on a GPU: the R101 deploy graph (Enc + folded Dec2^T + upsample + argmax, uint8 frames in,
labels out) exported with torch.export and run through jal_deploy's torch backend, fp32 and fp16/bf16
autocast, batch 1 and 8 at 1024x512; then `jal-segment`'s pipeline end to end on a generated street video.

Two numbers per setting: `backend` FPS includes the host->device copy of the frames and the device->host
copy of the labels (what an application sees); `graph` FPS runs the module on frames already on the GPU.
Random weights: speed does not depend on them. Target from the runtime issue: >= 200 FPS fp16.

    python bench/runtime_gpu.py                  # on a CUDA machine, from the repository root
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from export.deploy import DeployNet
from export.torch_program import export_program
from jal_deploy.backends.torch_backend import TorchBackend
from jal_deploy.job import run_job
from jal_deploy.labels import get_protocol
from jal_deploy.modelinfo import ModelInfo
from jal_deploy.segmenter import Segmenter
from jal_deploy.sources import open_source
from jal_deploy.synth import generate_video
from training.models import build_model


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="deeplabv2-r101")
    ap.add_argument("--size", default="1024x512")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "bf16"])
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--video-frames", type=int, default=100)
    ap.add_argument("--device", default="cuda", help="cpu only checks the code path (use a small --arch/--size)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch (pass --device cpu with a small arch to check the code path)")
    dev = args.device
    w, h = (int(v) for v in args.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="jal-runtime-gpu-"))
    proto = get_protocol("19")
    info = ModelInfo(arch=args.arch, class_names=list(proto.class_names), palette=proto.palette.tolist(),
                     input_size=[w, h], provenance={"weights": "random (speed benchmark)"})
    net = DeployNet(build_model(args.arch, num_classes=19).eval(), info.mean, info.std)
    t = time.perf_counter()
    path = export_program(net, info, tmp / "r101.pt2")
    print(f"{torch.cuda.get_device_name() if dev == 'cuda' else 'CPU'}, torch {torch.__version__}; exported {args.arch} deploy graph "
          f"({sum(p.numel() for p in net.parameters()) / 1e6:.1f} M params) in {time.perf_counter() - t:.0f} s")
    print(f"{'precision':9s} {'batch':>5s} {'backend FPS':>12s} {'graph FPS':>10s} {'ms/batch':>9s}")
    for precision in args.precisions:
        backend = TorchBackend(path, device=dev, precision=precision)
        for b in args.batches:
            frames = np.random.default_rng(0).integers(0, 256, (b, h, w, 3), dtype=np.uint8)
            on_gpu = torch.from_numpy(frames).to(dev)
            try:
                seconds = timed(lambda: backend(frames), args.iters, args.warmup)
                with torch.inference_mode(), backend._autocast():
                    graph = timed(lambda: backend.module(on_gpu), args.iters, args.warmup)
            except torch.OutOfMemoryError:
                print(f"{precision:9s} {b:5d}  out of memory")
                continue
            print(f"{precision:9s} {b:5d} {b * args.iters / seconds:12.1f} {b * args.iters / graph:10.1f} "
                  f"{1000 * seconds / args.iters:9.2f}")
        backend = None  # free the GPU memory before the next precision
        if dev == "cuda":
            torch.cuda.empty_cache()
    video = generate_video(tmp / "street.mp4", seed=0, frames=args.video_frames, size=(w, h), progress=False)["path"]
    for precision in ("fp16" if dev == "cuda" else "fp32",):
        seg = Segmenter(TorchBackend(path, device=dev, precision=precision))
        result = run_job(seg, open_source(str(video)), tmp / "out", save=("video",), progress=False,
                         log=lambda *_: None)
        s = result.stats
        print(f"end to end ({precision}, batch 1, {w}x{h} mp4v in, annotated mp4v out): {s.fps:.1f} FPS; "
              f"inference alone {s.inference_fps:.1f} FPS; ms/frame {s.to_dict()['ms_per_frame']}")


if __name__ == "__main__":
    main()
