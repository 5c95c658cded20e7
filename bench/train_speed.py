#!/usr/bin/env python
"""Training speed and peak memory of the real JAL+WTM iteration (Trainer.train_step) at the paper's sizes.

Generates a few synthetic frames at the preset's sizes, then times `--iters` iterations after `--warmup`,
for each requested AMP mode, and prints each table row as soon as it is measured. The weights are random (no
ImageNet init is downloaded), so the segmentation network's BatchNorm statistics are estimated on a few
frames and its step size is zero: the timed iterations do all the work of a real one and stay finite. On a
GPU: R101 at 1280x720 source (cropped 1024x512) and 1024x512 target. On CPU use a small arch to check the
code path, e.g.
    python bench/train_speed.py --device cpu --set model.arch=deeplabv2-r18 model.width=0.25 --iters 2
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from jal_deploy.machine import cpu_summary
from jal_deploy.synth import generate
from training.config import parse_set, resolve
from training.engine import Trainer
from training.models.norm import estimate_statistics


def calibrate_frozen_batchnorm(trainer: Trainer, batches: int = 4) -> None:
    """Real runs start from an ImageNet init, which carries real BatchNorm statistics; random weights under frozen
    BatchNorm have none (a GPU run stopped on a NaN loss at iteration 2), so they are estimated on a few source
    batches and the timed iterations are those of a network in a trained one's numeric range."""
    if trainer.cfg.model.bn_mode == "frozen":
        estimate_statistics(trainer.model, (next(trainer.source_iter)["image"].to(trainer.device)
                                            for _ in range(batches)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gta5-cityscapes-r101")
    ap.add_argument("--method", default="jal-wtm")
    ap.add_argument("--amp", nargs="+", default=["none", "bf16"])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--set", dest="sets", nargs="*", default=[])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jal-speed-"))
    probe = resolve(args.preset, {"model": {"init_required": "false"}, **parse_set(args.sets)})
    w, h = probe.data.source_size
    t0 = time.perf_counter()
    # frames first: the generator's worker processes fork before this process touches CUDA
    generate(work / "data", seed=0, counts={"gta5": 8, "synthia": 0, "cs_train": 8, "cs_val": 2}, size=(w, h),
             progress=False)
    print(f"generated 18 frames at {w}x{h} in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch: pass --device cpu (and a small arch) to check the code path")
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({cpu_summary()})"
    print(f"\n{args.preset} / {args.method} on {device}: source {probe.data.source_size} crop {probe.data.crop}, "
          f"target {probe.data.target_size}, batch {probe.data.batch_size}")
    print(f"{'amp':6s} {'it/s':>7s} {'s/it':>7s} {'peak GiB':>9s}", flush=True)
    for amp in args.amp:
        overrides = parse_set(args.sets)
        overrides.setdefault("model", {})["init_required"] = "false"
        overrides["method"] = {"name": args.method}
        # Random weights do not train at the paper's step size (without an ImageNet init the segmentation loss
        # went 8 -> 64 -> 1e3 -> 1e17 in four R101 steps on CPU, statistics estimated or not), and a diverged
        # run stops. A zero step size times the same arithmetic: every gradient and optimizer update is computed.
        overrides.setdefault("optim", {}).update(lr="0", lr_wtm="0")
        overrides.setdefault("data", {}).update(source_root=str(work / "data/gta5"),
                                               target_root=str(work / "data/cityscapes"), workers=2)
        overrides.setdefault("run", {}).update(amp=amp, device=args.device, tensorboard="false",
                                              channels_last=str(args.channels_last))
        cfg = resolve(args.preset, overrides)
        t0 = time.perf_counter()
        trainer = Trainer(cfg, work / f"run-{amp}", progress=False)
        calibrate_frozen_batchnorm(trainer)
        print(f"amp {amp}: trainer built, BatchNorm statistics estimated, in {time.perf_counter() - t0:.0f} s",
              flush=True)
        for i in range(args.warmup):
            t0 = time.perf_counter()
            trainer.train_step()
            print(f"amp {amp}: warm-up iteration {i + 1} in {time.perf_counter() - t0:.1f} s", flush=True)
        if args.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(args.iters):
            trainer.train_step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - start) / args.iters
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else float("nan")
        print(f"{amp:6s} {1 / dt:7.2f} {dt:7.3f} {peak:9.2f}", flush=True)  # a time limit keeps the rows printed
        del trainer
        if args.device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
