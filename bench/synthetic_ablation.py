#!/usr/bin/env python
"""Table 4 on the embedded synthetic benchmark: target mIoU of each method, mean +- std over seeds.

Protocol (the synthetic analogue of the paper's ImageNet init + adaptation):
  1. per seed, train a source-only model from scratch on the GTA5-format source (`--pretrain-iters`,
     BatchNorm with batch statistics, source images only);
  2. from that checkpoint, train each method for `--adapt-iters` iterations with frozen BatchNorm
     statistics (so no method gains from target statistics) - the source-only row simply continues on
     source data for the same number of iterations;
  3. score each run on the Cityscapes-format target val as the mean of its last `--last-k` evaluations
     (no snapshot is selected with target labels), and the source-only model on a held-out source val set.
Runs are resumable: a finished run (result.json) is skipped. Prints a table and writes summary.json.

    python bench/synthetic_ablation.py --out runs/ablation            # 3 seeds, 5 methods
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from jal_deploy.machine import cpu_summary
from jal_deploy.synth import generate
from training.config import resolve
from training.data import Augment, SegmentationDataset
from training.engine import Trainer
from training.evaluate import evaluate

METHODS = ("source-only", "adaptsegnet", "jal", "wtm", "jal-wtm")


def ensure_data(root: Path, seed: int = 0) -> tuple[Path, Path]:
    bench, held_out = root / "benchmark", root / "source-val"
    if not (bench / "synth.json").is_file():
        generate(bench, seed=seed, force=bench.exists())
    if not (held_out / "synth.json").is_file():  # unseen source frames: another seed, GTA5 format only
        generate(held_out, seed=seed + 1000, counts={"gta5": 100, "synthia": 0, "cs_train": 0, "cs_val": 0},
                 force=held_out.exists())
    return bench, held_out


def run(out: Path, overrides: dict) -> dict:
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    cfg = resolve("synthetic-tiny", overrides)
    start = time.perf_counter()
    trainer = Trainer(cfg, out, resume=(out / "checkpoints" / "last.pth").is_file(), progress=True)
    summary = trainer.run()
    rows = [line.split(",") for line in (out / "eval.csv").read_text().splitlines()[1:]]
    result = {"evals": [(int(r[0]), float(r[2])) for r in rows if r[1] == "19"], "seconds": time.perf_counter() - start,
              "status": summary["status"]}
    if summary["status"] == "finished":
        done.write_text(json.dumps(result))
    return result


def source_val_miou(ckpt_dir: Path, cfg_overrides: dict, held_out: Path) -> float:
    cfg = resolve("synthetic-tiny", cfg_overrides)
    trainer = Trainer(cfg, ckpt_dir, resume=True, progress=False)
    ds = SegmentationDataset(held_out / "gta5", "gta5", augment=Augment(size=tuple(cfg.data.target_size)),
                             resize_label=False)
    return evaluate(trainer.model, DataLoader(ds, batch_size=1), "19", ["19"], torch.device("cpu"))["19"]["miou"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--pretrain-iters", type=int, default=1500)
    ap.add_argument("--adapt-iters", type=int, default=400)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--last-k", type=int, default=3)
    ap.add_argument("--set", dest="sets", nargs="*", default=[], help="extra key=value overrides for every run")
    args = ap.parse_args()
    from training.config import parse_set

    bench, held_out = ensure_data(args.out / "data")
    base = {"data": {"synthetic": False, "source_root": str(bench / "gta5"), "target_root": str(bench / "cityscapes")},
            "run": {"tensorboard": False}}
    extra = parse_set(args.sets)
    table: dict[str, list[float]] = {m: [] for m in args.methods}
    source_val, seconds = [], 0.0
    for seed in args.seeds:
        pre_dir = args.out / f"seed{seed}" / "pretrain"
        pre = {**base, "method": {"name": "source-only"}, "run": {**base["run"], "seed": seed,
               "eval_every": args.pretrain_iters, "save_every": args.pretrain_iters},
               "optim": {"iters": args.pretrain_iters}}
        seconds += run(pre_dir, _merge(pre, extra))["seconds"]
        init = pre_dir / "checkpoints" / "last.pth"
        for method in args.methods:
            ov = _merge({**base, "method": {"name": method},
                         "model": {"init": str(init), "bn_mode": "frozen"},
                         "optim": {"iters": args.adapt_iters, "lr": 2.5e-3, "lr_wtm": 1e-3},
                         "run": {**base["run"], "seed": seed, "eval_every": args.eval_every,
                                 "save_every": args.adapt_iters}}, extra)
            out = args.out / f"seed{seed}" / method
            res = run(out, ov)
            seconds += res["seconds"]
            last = [m for _, m in res["evals"][-args.last_k:]]
            table[method].append(100 * sum(last) / len(last))
            print(f"seed {seed} {method:12s} target mIoU {table[method][-1]:.2f} (last {len(last)} evals)")
            if method == "source-only":
                source_val.append(100 * source_val_miou(out, ov, held_out))
                print(f"seed {seed} source-only source-val mIoU {source_val[-1]:.2f}")

    print(f"\nSynthetic benchmark, target val mIoU (%) over seeds {args.seeds}; "
          f"{args.pretrain_iters} source-only + {args.adapt_iters} adaptation iterations; {seconds / 60:.1f} min "
          f"on {cpu_summary()}")
    print(f"{'method':14s} {'mean':>6s} {'std':>5s}  per seed")
    summary = {"seeds": args.seeds, "pretrain_iters": args.pretrain_iters, "adapt_iters": args.adapt_iters,
               "rows": {}, "source_val_source_only": source_val, "minutes": seconds / 60,
               "cpu": cpu_summary()}
    for method, values in table.items():
        mean = statistics.mean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        summary["rows"][method] = {"mean": mean, "std": std, "per_seed": values}
        print(f"{method:14s} {mean:6.2f} {std:5.2f}  " + " ".join(f"{v:.2f}" for v in values))
    if source_val:
        print(f"source-only on held-out source val: {statistics.mean(source_val):.2f} "
              f"(+- {statistics.stdev(source_val) if len(source_val) > 1 else 0.0:.2f})")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


if __name__ == "__main__":
    main()
