#!/usr/bin/env python
"""Can output-space alignment see a colour swap? Label statistics of source and target, with and without it.

Output-space adaptation pushes the target predictions towards what source label maps look like. A model that
follows the target's swapped colours predicts the target's true labels with the swapped classes exchanged. This
script measures, on the labelled trees of a `jal-data synth` generation, how far the source label statistics are
from (a) the true target labels and (b) the target labels with each swap applied: the total-variation distance
of the class shares, and the mean over positions of the total-variation distance of p(class | position). When
(b) is not farther from the source than (a), the swap makes the target look *more* like the source, and
alignment has no reason to undo it.

    python bench/label_statistics.py runs/ablation/data/train-seed0            # the benchmark's frames
    python bench/label_statistics.py DIR --generate --frames 200               # generate first (both variants)
    python bench/label_statistics.py TREE --checkpoint RUN/checkpoints/last.pth  # + where a model's predictions sit

With `--checkpoint`, each model's predictions on the target train images (deployed decoder, at the size it was
trained on, labels unused) are one more row: how far they are from the source labels, and from the truth.

numpy only; the swap pairs are the generator's (`styles.DOMAINS['cityscapes'].appearance.swaps`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from jal_deploy.labels import CLASS_NAMES_19
from jal_deploy.synth import DOMAINS, generate
from training.baselines import layout_counts

GRID = (64, 32)  # (W, H) positions the labels are counted on


def swapped(counts: np.ndarray, pairs) -> np.ndarray:
    out = counts.copy()
    for a, b in pairs:
        out[[a, b]] = out[[b, a]]
    return out


def shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum((1, 2))
    return total / total.sum()


def tv_shares(a: np.ndarray, b: np.ndarray) -> float:
    return 0.5 * float(np.abs(shares(a) - shares(b)).sum())


def tv_positions(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over positions labelled in both of the total variation between p(class | position)."""
    sa, sb = a.sum(0), b.sum(0)
    both = (sa > 0) & (sb > 0)
    pa, pb = a / np.maximum(sa, 1), b / np.maximum(sb, 1)
    return float((0.5 * np.abs(pa - pb).sum(0))[both].mean())


def predictions(checkpoint: Path, tree: Path, limit: int) -> tuple[np.ndarray, float, float]:
    """(C, H, W) counts of the model's predicted classes on the first `limit` target train images, and the mean
    normalised entropy of its high-level softmax (the maps the discriminators see) on those and on as many source
    images: how much less sure of itself the model is on the target."""
    import torch
    from torch.utils.data import DataLoader

    from training.checkpoints import load_trained
    from training.data import Augment, SegmentationDataset
    from training.evaluate import deployed_output
    from training.losses import normalised_entropy, upsample

    model, meta = load_trained(checkpoint)
    size = tuple(meta["train"]["data"]["target_size"]) if meta["train"] else (1024, 512)
    target = SegmentationDataset(tree / "cityscapes", "cityscapes", split="train", labelled=False,
                                 augment=Augment(size=size), limit=limit)
    source = SegmentationDataset(tree / "gta5", "gta5", labelled=False, augment=Augment(size=size), limit=limit)
    w, h = GRID
    counts = np.zeros((model.num_classes, h * w), np.int64)
    flat = np.arange(h * w)
    entropy = {}
    with torch.no_grad():
        for name, ds in (("target", target), ("source", source)):
            total = 0.0
            for batch in DataLoader(ds, batch_size=4):
                out = model(batch["image"])
                prob = torch.softmax(out["high"].float(), 1)
                total += float(normalised_entropy(prob).mean((1, 2)).sum())
                if name == "target":
                    pred = upsample(deployed_output(out).float(), (h, w)).argmax(1).numpy()
                    for p in pred:
                        counts += np.bincount(p.ravel() * (h * w) + flat, minlength=counts.size).reshape(counts.shape)
            entropy[name] = total / len(ds)
    return counts.reshape(-1, h, w).astype(np.float64), entropy["target"], entropy["source"]


def report(tree: Path, pairs, checkpoints=(), limit: int = 200) -> str:
    src = layout_counts(tree / "gta5", "gta5", size=GRID).astype(np.float64)
    tgt = layout_counts(tree / "cityscapes", "cityscapes", split="train", size=GRID).astype(np.float64)
    names = [f"{CLASS_NAMES_19[a]} <-> {CLASS_NAMES_19[b]}" for a, b in pairs]
    variants = [("true target labels", ())] + [(f"{n} swapped", (p,)) for n, p in zip(names, pairs)]
    variants.append(("all swapped", tuple(pairs)))
    classes = sorted({c for p in pairs for c in p})
    head = " / ".join(CLASS_NAMES_19[c] for c in classes)
    lines = [f"{tree}: {'(no label shift) ' if _no_shift(tree) else ''}distance of the source labels to ...",
             f"  {'':34s} {'TV(class shares)':>16s} {'mean TV(p(c|pos))':>18s}   shares % ({head})"]
    for name, p in variants:
        t = swapped(tgt, p)
        lines.append(f"  {name:34s} {tv_shares(src, t):16.3f} {tv_positions(src, t):18.3f}   "
                     + " / ".join(f"{100 * shares(t)[c]:.1f}" for c in classes))
    lines.append(f"  {'(source labels)':34s} {'':16s} {'':18s}   "
                 + " / ".join(f"{100 * shares(src)[c]:.1f}" for c in classes))
    if checkpoints:
        lines.append(f"  predictions on {limit} target train images: distance to the source labels "
                     f"(to the true target labels); shares; entropy on target / source images")
    for ckpt in checkpoints:
        pred, h_target, h_source = predictions(Path(ckpt), tree, limit)
        run = [p for p in Path(ckpt).parent.parent.parts if p != "train"]  # RUN/checkpoints/x.pth, rounds' RUN/train
        name = "/".join(run[-2:])
        lines.append(f"  {name[-34:]:34s} {tv_shares(src, pred):7.3f} ({tv_shares(tgt, pred):.3f}) "
                     f"{tv_positions(src, pred):8.3f} ({tv_positions(tgt, pred):.3f})   "
                     + " / ".join(f"{100 * shares(pred)[c]:.1f}" for c in classes)
                     + f"   {h_target:.3f} / {h_source:.3f}")
    return "\n".join(lines)


def _no_shift(tree: Path) -> bool:
    manifest = tree / "synth.json"
    return manifest.is_file() and json.loads(manifest.read_text()).get("label_shift") is False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", type=Path, nargs="+", help="jal-data synth folders (with gta5/ and cityscapes/)")
    ap.add_argument("--generate", action="store_true",
                    help="generate into TREES[0]/shift and TREES[0]/no-shift first (source + target train frames)")
    ap.add_argument("--frames", type=int, default=200, help="frames per domain with --generate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", nargs="*", default=[], help="jal-train checkpoints whose predictions to add")
    ap.add_argument("--limit", type=int, default=200, help="target train images the checkpoints predict")
    args = ap.parse_args(argv)
    trees = args.trees
    if args.generate:
        root = args.trees[0]
        counts = {"gta5": args.frames, "synthia": 0, "cs_train": args.frames, "cs_val": 0}
        trees = []
        for name, shift in (("shift", True), ("no-shift", False)):
            if not (root / name / "synth.json").is_file():
                generate(root / name, seed=args.seed, counts=counts, force=(root / name).exists(), progress=False,
                         label_shift=shift)
            trees.append(root / name)
    pairs = DOMAINS["cityscapes"].appearance.swaps
    for tree in trees:
        print(report(tree, pairs, args.checkpoint, args.limit) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
