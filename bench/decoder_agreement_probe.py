"""Where a teacher's pseudo labels are wrong, do its two decoders disagree? The premise of the rectified round.

`method.pseudo_rectify` discounts each pseudo-labelled pixel by exp(-D), D = KL(softmax(Dec2^T) || softmax(Dec1^T))
of the student, which starts as the teacher. This measures on the teacher whether D and the decoders' argmax
agreement single out the wrong labels: for every pixel a pseudo-label tree kept, against the real target labels,
per class: kept pixels, precision, the share the decoders dispute (argmaxes differ), the precision where they agree
and where they dispute, and the mean exp(-D) on right and on wrong labels. It reads target labels, so it is a
diagnostic, never a choice of the pipeline. Nothing is trained or written.

    python bench/decoder_agreement_probe.py runs/cr-c2f4k-cpu/seed0/cr+jal-wtm/checkpoints/last.pth \
        --pseudo runs/cr-c2f4k-cpu/seed0/cr+jal-wtm+sp+ssl/round1/pseudo \
        --target runs/cr-c2f4k-cpu/data/train-seed0/cityscapes
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jal_deploy.datasets import label_path, read_label  # noqa: E402
from jal_deploy.labels import IGNORE, get_protocol  # noqa: E402
from jal_deploy.machine import cpu_summary  # noqa: E402
from training.checkpoints import load_trained  # noqa: E402
from training.data import Augment, SegmentationDataset  # noqa: E402
from training.evaluate import target_decoders  # noqa: E402
from training.losses import decoder_disagreement, upsample  # noqa: E402

# per class of the pseudo label: kept, right, disputed, right among the disputed, sum of exp(-D) on right / wrong
FIELDS = ("kept", "right", "disputed", "right_disputed", "keep_right", "keep_wrong")


@torch.no_grad()
def agreement_counts(checkpoint: Path, pseudo_root: Path, target_root: Path, split: str = "train",
                     limit: int = 0) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """({field: per-class array} summed over the split's frames (the first `limit`, 0 = all), for the kept pixels
    whose real label is known; the class names)."""
    model, meta = load_trained(checkpoint)
    model.eval()
    size = tuple(meta["train"]["data"]["target_size"])
    protocol = get_protocol(meta["train"]["data"]["protocol"])
    lut, n = protocol.from_trainid19, protocol.num_classes
    dataset = SegmentationDataset(target_root, "cityscapes", split=split, labelled=False, augment=Augment(size=size),
                                  protocol=protocol.name)
    counts = {f: np.zeros(n, dtype=np.float64) for f in FIELDS}
    samples = dataset.samples[:limit] if limit else dataset.samples
    for i, sample in enumerate(samples):
        pseudo = lut[read_label(label_path(pseudo_root, "cityscapes", sample.image, split), "cityscapes")]
        real = lut[read_label(sample, "cityscapes")]
        low, high = target_decoders(model(dataset[i]["image"][None]))
        log_low, log_high = (F.log_softmax(upsample(x.float(), pseudo.shape), 1)[0] for x in (low, high))
        keep = torch.exp(-decoder_disagreement(log_low, log_high, dim=0)).numpy()
        disputed = (log_low.argmax(0) != log_high.argmax(0)).numpy()
        valid = (pseudo != IGNORE) & (real != IGNORE)
        c, right = pseudo[valid].astype(np.int64), pseudo[valid] == real[valid]
        d, k = disputed[valid], keep[valid]
        for field, weights in (("kept", None), ("right", right), ("disputed", d), ("right_disputed", right & d),
                               ("keep_right", k * right), ("keep_wrong", k * ~right)):
            counts[field] += np.bincount(c, weights=weights, minlength=n)
    return counts, tuple(protocol.class_names)


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


def report(counts: dict[str, np.ndarray], class_names) -> str:
    """A markdown table per class and in total (classes with kept pixels only)."""
    c = counts
    rows = [(name, *(c[f][i] for f in FIELDS)) for i, name in enumerate(class_names) if c["kept"][i] > 0]
    rows.append(("all kept pixels", *(c[f].sum() for f in FIELDS)))
    lines = ["| class | kept pixels | precision | disputed | precision where they agree | where they dispute "
             "| mean exp(-D), right labels | wrong labels |", "|---|---|---|---|---|---|---|---|"]
    for name, kept, right, disputed, right_disputed, keep_right, keep_wrong in rows:
        vals = [right / kept, disputed / kept, _ratio(right - right_disputed, kept - disputed),
                _ratio(right_disputed, disputed), _ratio(keep_right, right), _ratio(keep_wrong, kept - right)]
        cells = [f"{100 * v:.1f} %" for v in vals[:4]] + [f"{v:.3f}" for v in vals[4:]]
        lines.append(f"| {name} | {int(kept)} | " + " | ".join(cells).replace("nan %", "-").replace("nan", "-")
                     + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="the teacher that made the pseudo labels")
    ap.add_argument("--pseudo", type=Path, required=True, help="its pseudo-label tree (jal-train pseudo-label --out)")
    ap.add_argument("--target", type=Path, required=True, help="the labelled Cityscapes-format target tree")
    ap.add_argument("--split", default="train")
    ap.add_argument("--limit", type=int, default=0, help="the first N frames (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    counts, names = agreement_counts(args.checkpoint, args.pseudo, args.target, args.split, args.limit)
    print(f"{args.checkpoint}; {cpu_summary()}, torch {torch.__version__}, {args.threads} threads, "
          f"{time.perf_counter() - t0:.0f} s")
    print(report(counts, names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
