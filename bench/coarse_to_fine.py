#!/usr/bin/env python
"""Coarse-to-fine colour-randomised pretraining: more shape learning per minute of a from-scratch pretraining.

The colour-randomised (`cr`) pretraining of the benchmark is underfit at the protocol's 2000 iterations: it has to
learn shape without colour, and four times more iterations lift it a lot (lab notebook,
docs/notebook.md). An iteration at half the width and height costs about a third. This script
compares, on the benchmark's seed-0 frames and the preset's network, from scratch:

  full         `--full-iters` iterations at the protocol's size (the `cr` pretraining of the table);
  coarse       `--coarse-iters` iterations at half the size;
  coarse+fine  the coarse run, then `--fine-iters` iterations at full size (initialised from it, poly restarted).

Each is scored on held-out *source* frames (the label-free criterion a pretraining can be chosen by: no target
label) and on a development target val (`--dev-seed`, never the held-out one of the table) with its own
statistics and with BatchNorm statistics re-estimated on 200 target train frames (AdaBN, no training step),
with the wall minutes of its training, beside the blind layout prior on the same val. Runs resume; finished
scores are kept.

    python bench/coarse_to_fine.py --out runs/coarse-to-fine
    python bench/coarse_to_fine.py --out /tmp/c2f --quick           # seconds: the code path, no numbers
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

from jal_deploy.machine import cpu_summary
from training.baselines import layout_prior, prior_scores
from training.config import merge_overrides, parse_set, resolve

# bench/, next to this script
from ablation_protocol import QUICK, Protocol, coarse_stage, ensure_data
from ablation_rows import CR_DATA
from ablation_runs import Interrupted, cached_result, pretraining_score, source_val_miou, train

SWAPPED = ("sidewalk", "building", "vegetation")  # the classes the target's colours exchange


def runs(args, p: Protocol, data: dict[str, Path], dev: Path) -> dict[str, dict]:
    """{name: overrides} of the three runs, in the order they must train."""
    base = merge_overrides({"data": {"synthetic": False, "source_root": str(data["train"] / "gta5"),
                                     "target_root": str(data["train"] / "cityscapes"),
                                     "val_root": str(dev / "cityscapes"), **CR_DATA},
                            "method": {"name": "source-only"},
                            "run": {"tensorboard": False, "seed": args.seed, "keep": 1,
                                    **({"threads": args.threads} if args.threads else {})}},
                           parse_set(list(p.overrides)))
    every = lambda iters: {"eval_every": max(1, iters // 4), "save_every": max(1, iters // 4)}  # noqa: E731
    return {
        "full": merge_overrides(base, {"optim": {"iters": args.full_iters}, "run": every(args.full_iters)}),
        "coarse": merge_overrides(coarse_stage(base, replace(p, coarse_iters=args.coarse_iters)),
                                  {"run": every(args.coarse_iters)}),
        "coarse+fine": merge_overrides(base, {
            "optim": {"iters": args.fine_iters}, "run": every(args.fine_iters),
            "model": {"init": str(args.out / "coarse" / "checkpoints" / "last.pth")}}),
    }


def scores(run_dir: Path, overrides: dict, p: Protocol, source_val: Path) -> dict:
    """Held-out source frames, and the development val with own / target statistics, at the run's own size."""
    def produce() -> dict:
        target = pretraining_score(run_dir, overrides, p.preset, p.target_bn_frames)
        return {"source_val": 100 * source_val_miou(run_dir, overrides, p.preset, source_val),
                "dev_own_stats": pretraining_score(run_dir, overrides, p.preset, 0)["miou"],
                "dev_target_stats": target["miou"], "per_class": target["per_class"]}
    return cached_result(run_dir, False, produce, name="scores.json")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full-iters", type=int, default=2000)
    ap.add_argument("--coarse-iters", type=int, default=4000)
    ap.add_argument("--fine-iters", type=int, default=1000)
    ap.add_argument("--dev-seed", type=int, default=2026, help="the development target val (200 frames)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--set", dest="sets", nargs="*", default=[], help="config overrides of every run (KEY=VALUE)")
    ap.add_argument("--quick", action="store_true", help="tiny frames, network and budgets: the code path only")
    args = ap.parse_args()
    p = Protocol(overrides=tuple(args.sets))
    if args.quick:
        p = replace(p, **{**QUICK, "overrides": QUICK["overrides"] + tuple(args.sets)}, target_bn_frames=4)
        args.full_iters, args.coarse_iters, args.fine_iters = 4, 4, 2
    args.out.mkdir(parents=True, exist_ok=True)
    data = ensure_data(args.out / "data", p)
    dev = ensure_data(args.out / "data", replace(p, eval_seed=args.dev_seed))["eval"]  # a val like the held-out one
    table, minutes = [], {}
    try:
        for name, overrides in runs(args, p, data, dev).items():
            result = train(args.out / name, overrides, p.preset)
            score = scores(args.out / name, overrides, p, data["source-val"])
            cfg = resolve(p.preset, overrides)
            minutes[name] = result["seconds"] / 60 + (minutes["coarse"] if name == "coarse+fine" else 0)
            table.append((name, cfg.optim.iters, "x".join(map(str, cfg.data.source_size)), minutes[name], score))
    except (Interrupted, KeyboardInterrupt):
        print(f"interrupted (what finished in {args.out} is kept): run the same command again to resume",
              file=sys.stderr)
        return 130
    print(f"\nColour-randomised pretraining, seed {args.seed}, {p.preset} {' '.join(p.overrides)}; source val: "
          f"{p.source_val_frames} held-out source frames; dev val: target seed {args.dev_seed}; torch "
          f"{torch.__version__} on {cpu_summary()}")
    print("| run | iterations | size | minutes (with the coarse run) | source val | dev val, own statistics "
          "| dev val, target statistics | " + " / ".join(SWAPPED) + " |")
    print("|---|---|---|---|---|---|---|---|")
    prior = 100 * prior_scores(layout_prior(data["train"] / "gta5", "gta5"), dev / "cityscapes").miou()
    print(f"| prior (blind layout, never looks at an image) | | | | | {prior:.2f} | {prior:.2f} | |")
    for name, iters, size, minutes, s in table:
        swapped = " / ".join(f"{s['per_class'][c]:.0f}" for c in SWAPPED)
        print(f"| {name} | {iters} | {size} | {minutes:.2f} | {s['source_val']:.2f} | {s['dev_own_stats']:.2f} "
              f"| {s['dev_target_stats']:.2f} | {swapped} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
