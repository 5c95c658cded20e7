"""The paper's loss terms, one small function each (named as in Eq. 10).

Label convention: the paper's (Eq. 2), D(P) is the probability that P comes from the **source** domain,
source = 1, target = 0. (AdaptSegNet's code uses the opposite labels; with BCE-with-logits the two are
mirror images.) So "fool D" means pushing target maps towards label 1, and the mean sigmoid of D on target
maps is the paper's Fig. 3 signal: higher = more target maps taken for source.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from jal_deploy.labels import IGNORE

SOURCE, TARGET = 1.0, 0.0


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear to the image size with align_corners=True, as the reference training and evaluation."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def seg_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 1: pixel-wise cross-entropy on source labels (255 ignored), logits upsampled to label size.
    A batch whose pixels are all ignored (a crop of rejected pseudo labels) gives 0, not cross-entropy's NaN."""
    if not bool((labels != IGNORE).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(upsample(logits, labels.shape[-2:]), labels, ignore_index=IGNORE)


def decoder_disagreement(log_low: torch.Tensor, log_high: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Per pixel, KL(softmax(high) || softmax(low)) from the two decoders' log-softmax maps, classes along `dim`:
    what `rectified_seg_losses` discounts by, and `decoder_agreement_probe.py` measures."""
    return (log_high.exp() * (log_high - log_low)).sum(dim)


def rectified_seg_losses(low: torch.Tensor, high: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pseudo-label losses of both decoders rectified by their disagreement (Zheng & Yang, IJCV 2021): per labelled
    pixel, D = KL(softmax(high) || softmax(low)) and each decoder's cross-entropy is weighted by exp(-D); the mean
    of D is returned too (`kl_tgt`), to be added to the loss, so that disagreeing cannot become a way out.
    Pseudo labels are wrong far more often where the two decoders disagree, so such pixels teach the student less,
    whatever their class, without a second threshold; a mistake both decoders make is not discounted."""
    size = labels.shape[-2:]
    log_low, log_high = F.log_softmax(upsample(low, size), 1), F.log_softmax(upsample(high, size), 1)
    valid = labels != IGNORE
    if not bool(valid.any()):
        zero = (low.sum() + high.sum()) * 0.0
        return {"seg1_tgt": zero, "seg2_tgt": zero, "kl_tgt": zero}
    kl = decoder_disagreement(log_low, log_high)
    keep = torch.exp(-kl)

    def ce(log_prob):
        nll = F.nll_loss(log_prob, labels, ignore_index=IGNORE, reduction="none")
        return (nll * keep)[valid].sum() / valid.sum()

    return {"seg1_tgt": ce(log_low), "seg2_tgt": ce(log_high), "kl_tgt": kl[valid].mean()}


def discriminator_maps(prob: torch.Tensor, d_input: str = "softmax") -> torch.Tensor:
    """What a discriminator sees of softmax maps (B, C, H, W). `onehot`: the argmax as one-hot maps, with the
    softmax's gradient passed straight through. A source-trained network is more confident on source images than
    on target ones, so a discriminator on softmax maps can win on confidence alone, and the segmentation network
    then fools it by growing confident, in whatever classes it already predicts; one-hot maps leave only the
    layout of the classes to compare."""
    if d_input == "softmax":
        return prob
    hard = F.one_hot(prob.argmax(1), prob.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
    return hard + prob - prob.detach()


def normalised_entropy(prob: torch.Tensor) -> torch.Tensor:
    """Per-pixel entropy of softmax maps (B, C, H, W) divided by log(C): 0 certain, 1 uniform."""
    return -(prob * torch.log(prob.clamp_min(1e-12))).sum(1) / math.log(prob.shape[1])


def _bce(d_logits: torch.Tensor, label: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(d_logits, torch.full_like(d_logits, label))


def adv_loss(discriminator, prob: torch.Tensor) -> torch.Tensor:
    """Eqs. 3, 5 and 9: the segmentation network wants D to call a target map "source"."""
    return _bce(discriminator(prob), SOURCE)


def dis_loss(discriminator, prob_source: torch.Tensor, prob_target: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Eqs. 2 and 8 on detached maps, each half weighted 1/2 as the references. Also returns D's accuracy
    on each domain and its mean source-probability on target (Fig. 3)."""
    ds, dt = discriminator(prob_source.detach()), discriminator(prob_target.detach())
    loss = 0.5 * (_bce(ds, SOURCE) + _bce(dt, TARGET))
    with torch.no_grad():
        stats = {"acc_source": (ds > 0).float().mean().item(), "acc_target": (dt < 0).float().mean().item(),
                 "p_target": torch.sigmoid(dt).mean().item()}
    return loss, stats
