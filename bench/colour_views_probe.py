"""A colour-blind network's predictions averaged over random colour matrices of each image, against one pass.

The colour-randomised (`cr`) networks are trained on source images each seen under its own random colour matrix,
so a target image in its own colours is one draw of the nuisance they were trained to ignore, and their answer
still moves with the draw. Averaging the softmax of the image and of `--views` random colour matrices of it (the
training augmentation itself, test-time augmentation over the nuisance) marginalises that draw. This scores one
checkpoint both ways, with its own BatchNorm statistics, on the held-out source frames (no target label: the
label-free check) and on the target val, and prints both. Nothing is trained or written.

    python bench/colour_views_probe.py runs/c2f-warm-cpu/seed0/cr+jal-wtm/checkpoints/last.pth \
        --source runs/c2f-warm-cpu/data/source-val-seed1000 --target runs/c2f-warm-cpu/data/eval-seed1127 --views 8
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jal_deploy.labels import get_protocol  # noqa: E402
from jal_deploy.machine import cpu_summary  # noqa: E402
from jal_deploy.metrics import ConfusionMatrix  # noqa: E402
from training.checkpoints import load_trained  # noqa: E402
from training.data import Augment, SegmentationDataset  # noqa: E402
from training.evaluate import deployed_output  # noqa: E402
from training.losses import upsample  # noqa: E402
from training.photometric import RandomConvolution  # noqa: E402

VIEW_SEED = 9000  # view k draws its matrices from seed VIEW_SEED + k: none of them is a training draw


@torch.no_grad()
def confusion_by_views(model, dataset, styles: list, num_classes: int,
                       counts: list[int]) -> dict[int, ConfusionMatrix]:
    """{n: confusion of the softmax averaged over the first n styles} for each n in counts, in one pass. The
    dataset is read once per style; give it `cache=True` so that each frame is decoded once."""
    cms = {n: ConfusionMatrix(num_classes) for n in counts}
    for i in range(len(dataset)):
        prob = 0
        for n, style in enumerate(styles[: max(counts)], start=1):
            dataset.style = style
            item = dataset[i]
            label = item["label"].numpy()  # the same for every style
            # logits upsampled first, as the evaluation does: one view is exactly the plain evaluation
            logits = upsample(deployed_output(model(item["image"][None])).float(), label.shape[-2:])
            prob = prob + F.softmax(logits, dim=1)
            if n in cms:
                pred = prob.argmax(1)[0].numpy().astype(np.int64)
                cms[n].update(pred[None], label[None])
    return cms


def probe(checkpoint: Path, source: Path, target: Path, views: int) -> dict[str, dict[int, ConfusionMatrix]]:
    """{frames: {n: confusion of the first n views}} on the held-out source frames and the target val; n is 1 (the
    image alone), 1 + views // 2 and 1 + views."""
    if views < 1:
        raise SystemExit("--views must be >= 1")
    model, meta = load_trained(checkpoint)
    size = tuple(meta["train"]["data"]["target_size"])
    styles = [None] + [RandomConvolution(seed=VIEW_SEED + k, kernels=(1,), mix=False) for k in range(views)]
    counts = sorted({1, 1 + views // 2, 1 + views})
    trees = {"held-out source val": (source / "gta5", "gta5", None),
             "target val": (target / "cityscapes", "cityscapes", "val")}
    out = {}
    for name, (root, fmt, split) in trees.items():
        dataset = SegmentationDataset(root, fmt, split=split, augment=Augment(size=size), resize_label=False,
                                      cache=True)
        out[name] = confusion_by_views(model, dataset, styles, model.num_classes, counts)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--source", type=Path, required=True, help="a tree with gta5/ (held-out labelled source frames)")
    ap.add_argument("--target", type=Path, required=True, help="a tree with cityscapes/ (the target val)")
    ap.add_argument("--views", type=int, default=8, help="random colour matrices averaged with the image itself")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = probe(args.checkpoint, args.source, args.target, args.views)
    names = get_protocol("19").class_names
    counts = sorted(next(iter(results.values())))
    print(f"{args.checkpoint}; {cpu_summary()}, torch {torch.__version__}, {args.threads} threads, "
          f"{time.perf_counter() - t0:.0f} s")
    heads = ["one pass" if n == 1 else f"image + {n - 1} colour matrices" for n in counts]
    print("| frames | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(counts))
    for name, cms in results.items():
        print(f"| {name} | " + " | ".join(f"{100 * cms[n].miou():.2f}" for n in counts) + " |")
    for name, cms in results.items():
        first, most = cms[1].per_class(names), cms[counts[-1]].per_class(names)
        print(f"{name}, IoU per class, one pass -> all views: " + ", ".join(
            f"{c} {100 * first[c]:.0f}->{100 * most[c]:.0f}" for c in names
            if not (math.isnan(first[c]) or math.isnan(most[c]))))  # NaN: the class is absent from these frames
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
