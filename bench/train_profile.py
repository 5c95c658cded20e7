#!/usr/bin/env python
"""Where a CPU training iteration goes: data loading, the labelled pass, the adversarial part, and the knobs
that change them (frame cache, loader workers, threads, channels-last, bf16 autocast), for a grid of widths and
sizes.

Each line is the median seconds per iteration of `Trainer.train_step` over --iters iterations after a
warm-up, measured one configuration at a time in this process (nothing else should run meanwhile):
- `data`: drawing one labelled batch from the loader alone (decode + resize + augment, or the cache);
- `source-only`: data + forward/backward of the labelled batch + SGD step;
- `adaptsegnet` / `jal-wtm`: + the target forward, the adversarial terms through D1/D2 (and D_wtm, the
  transferred decoders) and the discriminator updates: the difference to `source-only` is their cost.

    python bench/train_profile.py                                   # the synthetic-bench preset's settings
    python bench/train_profile.py --grid 0.25x192x96 0.5x256x128 0.5x384x192 1.0x384x192
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from jal_deploy.machine import cpu_summary
from jal_deploy.synth import generate
from training.config import parse_set, resolve
from training.engine import Trainer


def seconds_per_iter(cfg, out: Path, iters: int, warmup: int) -> tuple[float, float]:
    """(median s/iter of train_step, median s per labelled batch drawn alone)."""
    trainer = Trainer(cfg, out, progress=False)
    if cfg.data.cache:  # measure the steady state: every frame already decoded once
        for stream in (trainer.source_iter, trainer.target_iter):
            if stream is not None:
                for i in range(len(stream._dataset)):
                    stream._dataset[i]
    for _ in range(warmup):
        trainer.train_step()
    steps = []
    for _ in range(iters):
        start = time.perf_counter()
        trainer.train_step()
        steps.append(time.perf_counter() - start)
    draws = []
    for _ in range(iters):
        start = time.perf_counter()
        next(trainer.source_iter)
        draws.append(time.perf_counter() - start)
    return statistics.median(steps), statistics.median(draws)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="synthetic-bench")
    ap.add_argument("--grid", nargs="+", default=None, metavar="WIDTHxWxH",
                    help="network width and training size per line (default: the preset's)")
    ap.add_argument("--methods", nargs="+", default=["source-only", "adaptsegnet", "jal-wtm"])
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--knobs", action="store_true",
                    help="also vary the frame cache, loader workers, threads and channels-last (source-only), and "
                         "bf16 autocast (every method; fast on CPUs with AMX or AVX-512 BF16)")
    ap.add_argument("--set", dest="sets", nargs="*", default=[])
    args = ap.parse_args()
    base = resolve(args.preset, {"data": {"synthetic": False}})
    grid = args.grid or [f"{base.model.width}x{base.data.source_size[0]}x{base.data.source_size[1]}"]
    work = Path(tempfile.mkdtemp(prefix="jal-profile-"))
    generate(work / "data", seed=0, counts={"gta5": 32, "synthia": 0, "cs_train": 32, "cs_val": 2}, size=(512, 256),
             progress=False)
    print(f"CPU: {cpu_summary()}; preset {args.preset}, batch {base.data.batch_size}; median of {args.iters}")
    print(f"{'width':>5s} {'size':>8s} {'method':12s} {'knobs':34s} {'s/iter':>7s} {'data s/batch':>12s}")

    def measure(width: float, w: int, h: int, method: str, knobs: dict, label: str) -> None:
        overrides = parse_set(args.sets)
        overrides.setdefault("data", {}).update(source_root=str(work / "data/gta5"), synthetic=False,
                                               target_root=str(work / "data/cityscapes"), source_size=(w, h),
                                               target_size=(w, h), val_limit=1, **knobs.get("data", {}))
        overrides.setdefault("model", {})["width"] = width
        overrides["method"] = {"name": method}
        overrides.setdefault("run", {}).update(tensorboard=False, **knobs.get("run", {}))
        cfg = resolve(args.preset, overrides)
        step, draw = seconds_per_iter(cfg, work / f"run-{width}-{w}-{method}-{label}", args.iters, args.warmup)
        print(f"{width:5.2f} {f'{w}x{h}':>8s} {method:12s} {label:34s} {step:7.3f} {draw:12.4f}", flush=True)

    for cell in grid:
        width, w, h = cell.split("x")
        width, w, h = float(width), int(w), int(h)
        for method in args.methods:
            measure(width, w, h, method, {}, "preset")
        if args.knobs:
            for label, knobs in (("no cache, workers 0", {"data": {"cache": False, "workers": 0}}),
                                 ("no cache, 1 worker process", {"data": {"cache": False, "workers": 1}}),
                                 ("cache, 1 thread", {"run": {"threads": 1}}),
                                 ("cache, channels-last", {"run": {"channels_last": True}})):
                measure(width, w, h, "source-only", knobs, label)
            for method in args.methods:
                measure(width, w, h, method, {"run": {"amp": "bf16", "channels_last": True}},
                        "cache, bf16 + channels-last")


if __name__ == "__main__":
    main()
