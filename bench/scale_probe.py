#!/usr/bin/env python
"""Is a run's remaining gap in scale? Its last checkpoint scored on a target val at several input sizes.

The target cameras of the synthetic benchmark have a longer focal length than the source's, so target objects
look larger. If that mismatch kept an adapted network from its own source accuracy, feeding the target images
smaller (objects at the source's scale) would score better than the size it was trained at. Each size is scored
as training evaluates it (deployed decoder, logits upsampled to the full-size labels), with the BatchNorm
statistics re-estimated on the run's target train frames at that size when the run used target statistics.
Use a development val, never the held-out one: a size picked here would be picked with target labels.

    python bench/scale_probe.py runs/warm-mix/seed0/cr --val DEV/cityscapes --sizes 192x96 160x80 134x67 240x120
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import from_dict, merge_overrides  # noqa: E402
from training.engine import Trainer  # noqa: E402


def size(text: str) -> list[int]:
    w, _, h = text.partition("x")
    if not (w.isdigit() and h.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxHEIGHT, e.g. 192x96")
    return [int(w), int(h)]


def probe(run: Path, val: Path, sizes: list[list[int]], threads: int = 0) -> list[dict]:
    """[{'size', 'miou', 'per_class'}] in %, one per size, of run's checkpoints/last.pth on val."""
    checkpoint = run / "checkpoints" / "last.pth"
    for needed in (run / "config.json", checkpoint):
        if not needed.is_file():
            raise SystemExit(f"{run}: no {needed.relative_to(run)} (not a finished jal-train run)")
    config = json.loads((run / "config.json").read_text())
    rows = []
    for wh in sizes:
        cfg = from_dict(merge_overrides(config, {
            "model": {"init": str(checkpoint), "init_fmt": "auto"},  # BatchNorm as the run was evaluated
            "data": {"target_size": wh, "val_root": str(val)},
            "run": {"threads": threads or config["run"]["threads"]}}))
        with tempfile.TemporaryDirectory() as scratch:  # nothing is trained or saved
            result = Trainer(cfg, scratch, progress=False).evaluate()[cfg.data.protocol]
        rows.append({"size": wh, "miou": 100 * result["miou"],
                     "per_class": {k: 100 * v for k, v in result["per_class"].items()}})
        print(f"{wh[0]}x{wh[1]}: mIoU {rows[-1]['miou']:.2f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished run folder (config.json, checkpoints/last.pth)")
    ap.add_argument("--val", type=Path, required=True, help="a Cityscapes-format tree with a labelled val split")
    ap.add_argument("--sizes", type=size, nargs="+", required=True, help="input sizes WxH (the first: the reference)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: the run's)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    rows = probe(args.run, args.val, args.sizes, args.threads)
    names = list(rows[0]["per_class"])
    print("\n| size | mIoU | " + " | ".join(names) + " |\n|" + "---|" * (len(names) + 2))
    for r in rows:
        print(f"| {r['size'][0]}x{r['size'][1]} | {r['miou']:.2f} | "
              + " | ".join(f"{r['per_class'][n]:.0f}" for n in names) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
