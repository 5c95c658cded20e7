"""Online self-training on cross-domain mixed images (`method.mix=classmix`; DACS, Tranheden et al., WACV 2021).

Offline rounds label the target once per round with a fixed model, and a round's labels conflate what the
teacher cannot see: small classes on the target fall into the large ones around them, and the student learns
that. ClassMix pastes the pixels of half the classes of each labelled source image, with their true labels,
onto a target image labelled by a teacher that is the exponential moving average of the student. The student
then learns small classes in target surroundings from true labels, and the large target classes from labels
that improve with every step instead of every round. Target pixels are weighted by the share of the teacher's
pixels on that image above a confidence threshold (DACS's 0.968); pasted pixels weigh 1.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from jal_deploy.labels import IGNORE

from .evaluate import deployed_output, target_decoders
from .losses import upsample


def class_masks(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, H, W) bool: for each labelled image, the pixels of half of its classes (rounded up), drawn at random;
    ignored pixels are never pasted."""
    masks = torch.zeros_like(labels, dtype=torch.bool)
    for b, lab in enumerate(labels):
        classes = lab.unique()
        classes = classes[classes != IGNORE]
        if classes.numel():
            chosen = classes[torch.randperm(classes.numel(), generator=generator)[: (classes.numel() + 1) // 2]]
            masks[b] = torch.isin(lab, chosen.to(lab.device))
    return masks


def to_size(images: torch.Tensor, labels: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Source images (bilinear) and labels (nearest) at the target images' size, when the two streams differ."""
    if tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    if tuple(labels.shape[-2:]) != tuple(size):
        labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
    return images, labels


def mix_batch(xs: torch.Tensor, ys: torch.Tensor, xt: torch.Tensor, pseudo: torch.Tensor, confidence: torch.Tensor,
              masks: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mixed images, their labels, and each pixel's loss weight: 1 on pasted source pixels, on target pixels
    the share of that target image's pixels whose teacher confidence exceeds `threshold`."""
    m = masks[:, None].to(xt.dtype)
    images = m * xs + (1 - m) * xt
    labels = torch.where(masks, ys, pseudo)
    quality = (confidence > threshold).flatten(1).float().mean(1)[:, None, None]
    weights = torch.where(masks, torch.ones_like(confidence), quality.expand_as(confidence))
    return images, labels, weights


def weighted_seg_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Pixel-weighted cross-entropy at the label size (ignore 255), the mean over the labelled pixels."""
    logits = upsample(logits, labels.shape[-2:])
    valid = labels != IGNORE
    if not bool(valid.any()):
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="none")
    return (ce * weights)[valid].sum() / valid.sum()


class MeanTeacher:
    """The EMA copy of the student that labels the target images. Its decay ramps up as DACS's does,
    min(1 - 1 / (step + 1), decay), so the first steps follow the student closely."""

    def __init__(self, student: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(student)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay, self.steps = decay, 0

    @torch.no_grad()
    def update(self, student: torch.nn.Module) -> None:
        alpha = min(1.0 - 1.0 / (self.steps + 1), self.decay)
        for t, s in zip(self.model.parameters(), student.parameters()):
            t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
        for t, s in zip(self.model.buffers(), student.buffers()):
            t.copy_(s)
        self.steps += 1

    @torch.no_grad()
    def label(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(confidence, class) per pixel of the deployed target decoder's softmax (Dec2^T where the model has a
        WTM), normalised with the batch's own statistics as the student's target batches are."""
        out = self.model(images)
        logits = deployed_output(out).float()
        prob = F.softmax(upsample(logits, images.shape[-2:]), dim=1)
        return prob.max(1)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.steps = state["steps"]


def mix_terms(teacher: MeanTeacher, student, xs: torch.Tensor, ys: torch.Tensor, xt: torch.Tensor,
              generator: torch.Generator, threshold: float, autocast, to_device) -> dict:
    """The student's two losses (`mix1` low level, `mix2` high level, through the target decoders) on the ClassMix
    images of one source and one target batch."""
    xs, ys = to_size(xs, ys, tuple(xt.shape[-2:]))
    with autocast():
        confidence, pseudo = teacher.label(xt)
    masks = class_masks(ys.cpu(), generator).to(ys.device)
    images, labels, weights = mix_batch(xs, ys, xt, pseudo, confidence, masks, threshold)
    with autocast():
        low, high = target_decoders(student(to_device(images)))
        return {"mix1": weighted_seg_loss(low.float(), labels, weights),
                "mix2": weighted_seg_loss(high.float(), labels, weights)}
