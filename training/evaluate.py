"""Target-domain validation during training, with the shared metric and the reference protocol.

The deployed decoder is evaluated: Dec2^T when the model has a WTM on Dec2 (the paper reports Dec2^T),
else Dec2. Logits are upsampled bilinearly (align_corners=True) to the label's full size before argmax.
Selecting snapshots with these numbers uses target labels, which is not strictly unsupervised: the run
log says so.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from jal_deploy.labels import get_protocol
from jal_deploy.metrics import ConfusionMatrix

from .losses import upsample


def target_decoders(outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) logits of the decoders that see target images: Dec^T at a level with a WTM, else Dec."""
    return outputs.get("low_t", outputs["low"]), outputs.get("high_t", outputs["high"])


def deployed_output(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return target_decoders(outputs)[1]


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, train_protocol: str, eval_protocols, device,
             autocast=None) -> dict[str, dict]:
    """{protocol: {'miou': float, 'per_class': {name: iou}}} over the loader (labels at full size)."""
    was_training = model.training
    model.eval()
    base = get_protocol(train_protocol)
    cm = ConfusionMatrix(base.num_classes)
    try:
        for batch in loader:
            image = batch["image"].to(device)
            labels = batch["label"].numpy()
            with autocast() if autocast else contextlib.nullcontext():
                logits = deployed_output(model(image)).float()
            pred = upsample(logits, labels.shape[-2:]).argmax(1).cpu().numpy().astype(np.int64)
            cm.update(pred, labels)
    finally:
        model.train(was_training)
    results = {}
    for name in eval_protocols:
        proto = get_protocol(name)
        idx = proto.indices_within(base)
        results[name] = {"miou": cm.miou(idx), "per_class": cm.per_class(proto.class_names, idx)}
    return results
