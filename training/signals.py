"""Label-free signals of a trained model on unlabelled target images: what a pipeline can know about a stage
without target labels, and what its `pick` stage chooses the final model by.

- `entropy`: mean normalised entropy of the deployed decoder's softmax (lower: more confident).
- `flip_agreement`: share of pixels whose label is the same for the image and its mirror image (higher: a
  prediction that holds under a change the labels do not see; consistency under augmentation tracks accuracy
  under shift better than confidence, which self-training inflates).
- `decoder_kl`: mean KL(Dec2 || Dec1) of the two decoders (lower: they agree).
- `share_drift`: total variation distance between the predicted class shares on the target and the class shares
  of the source labels (how far the prediction's composition moved from the source prior).
- `d_prob`: mean D2 source-probability of the target maps under the model's own D2 (adversarial stages only;
  each stage has its own judge, so it is not compared across stages).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .baselines import layout_counts
from .checkpoints import load_trained
from .data import Augment, SegmentationDataset
from .evaluate import target_decoders
from .losses import decoder_disagreement, normalised_entropy, upsample
from .models import Discriminator

# each pick rule: the signal it ranks stages by, and whether higher is better
RULE_SIGNAL = {"entropy": ("entropy", False), "flip-agreement": ("flip_agreement", True),
               "decoder-agreement": ("decoder_kl", False), "share-drift": ("share_drift", False)}


@functools.lru_cache(maxsize=8)
def source_shares(root: str | Path, fmt: str, protocol: str = "19", limit: int = 200) -> np.ndarray:
    """Class shares of the source labels (the prior the prediction's composition is compared with), counted once per
    tree for all the stages of a pipeline (the array is shared: read it, never write it)."""
    counts = layout_counts(root, fmt, protocol, limit=limit).sum(axis=(1, 2)).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


@torch.no_grad()
def label_free_signals(checkpoint: str | Path, target_root: str | Path, size: tuple[int, int],
                       shares: np.ndarray | None = None, frames: int = 100, device: str = "cpu") -> dict:
    """The signals above for `checkpoint` on the first `frames` target train images (their labels unused)."""
    model, meta = load_trained(checkpoint)
    dev = torch.device(device)
    model.to(dev).eval()
    d2 = None
    if "d2" in meta["discriminators"]:
        d2 = Discriminator(model.num_classes, meta["train"]["model"]["ndf"]).to(dev).eval()
        d2.load_state_dict(meta["discriminators"]["d2"])
    data = SegmentationDataset(target_root, "cityscapes", split="train", labelled=False,
                               augment=Augment(size=tuple(size)), limit=frames)
    sums = {"entropy": 0.0, "flip_agreement": 0.0, "decoder_kl": 0.0, "d_prob": 0.0}
    counts = np.zeros(model.num_classes, np.float64)
    n = 0
    for batch in DataLoader(data, batch_size=1):
        x = batch["image"].to(dev)
        low, high = (upsample(t.float(), x.shape[-2:]) for t in target_decoders(model(x)))
        prob = F.softmax(high, 1)
        labels = prob.argmax(1)
        mirrored = upsample(target_decoders(model(x.flip(-1)))[1].float(), x.shape[-2:]).argmax(1).flip(-1)
        sums["entropy"] += normalised_entropy(prob).mean().item()
        sums["flip_agreement"] += (labels == mirrored).float().mean().item()
        sums["decoder_kl"] += decoder_disagreement(F.log_softmax(low, 1), F.log_softmax(high, 1)).mean().item()
        if d2 is not None:
            sums["d_prob"] += torch.sigmoid(d2(prob)).mean().item()
        counts += np.bincount(labels.flatten().cpu().numpy(), minlength=model.num_classes)
        n += 1
    if n == 0:
        raise ValueError(f"no target train images under {target_root}")
    out = {k: v / n for k, v in sums.items()}
    out["d_prob"] = out["d_prob"] if d2 is not None else None
    predicted = counts / counts.sum()
    out["share_drift"] = None if shares is None else float(0.5 * np.abs(predicted - shares).sum())
    out["frames"] = n
    return out


def pick(stages: list[dict], by: str) -> dict:
    """The stage record a rule chooses among `stages` (each with 'name' and 'signals'); `last` is the newest."""
    if by == "last":
        return stages[-1]
    key, higher = RULE_SIGNAL[by]
    usable = [s for s in stages if s["signals"].get(key) is not None]
    if not usable:
        raise ValueError(f"no stage has the signal {key!r} that `by: {by}` ranks by")
    return (max if higher else min)(usable, key=lambda s: s["signals"][key])
