"""Prove an artefact matches PyTorch: the reference is the *unfolded* trained model with WTM applied on the
fly (Dec2^T = WTM2 * Dec2 at every call), so folding errors show up too.

Reported per artefact: max abs error of the logits (when the artefact outputs logits), argmax agreement in
percent, and the mIoU delta on a labelled validation subset when one is given.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from jal_deploy.metrics import Agreement, ConfusionMatrix
from training.evaluate import deployed_output
from training.models import TwoLevelSegmenter

# Minimum argmax agreement (%) per precision; fp32 differs from PyTorch only by float rounding.
THRESHOLDS = {"fp32": 99.9, "fp16": 99.0, "int8": 95.0}


@dataclass
class ParityReport:
    artefact: str
    precision: str
    images: int
    max_abs_logit_error: float | None
    argmax_agreement: float
    miou_reference: float | None = None
    miou_artefact: float | None = None
    tf32: bool | None = None  # TensorRT engines: whether float32 layers may compute in TF32

    @property
    def miou_delta(self) -> float | None:
        if self.miou_reference is None or self.miou_artefact is None:
            return None
        return self.miou_artefact - self.miou_reference

    @property
    def passed(self) -> bool:
        return self.argmax_agreement >= THRESHOLDS[self.precision]

    def to_dict(self) -> dict:
        return {**asdict(self), "miou_delta": self.miou_delta, "threshold": THRESHOLDS[self.precision],
                "passed": self.passed}

    def line(self) -> str:
        name = f"{self.artefact} (TF32 allowed)" if self.tf32 else self.artefact
        parts = [f"{name}: argmax agreement {self.argmax_agreement:.3f} % over {self.images} images"]
        if self.max_abs_logit_error is not None:
            parts.append(f"max |logit error| {self.max_abs_logit_error:.2e}")
        if self.miou_delta is not None:
            parts.append(f"mIoU {100 * self.miou_artefact:.2f} vs {100 * self.miou_reference:.2f} "
                         f"(delta {100 * self.miou_delta:+.2f})")
        return ", ".join(parts) + (" [ok]" if self.passed else f" [FAILED: needs >= {THRESHOLDS[self.precision]} %]")


@torch.no_grad()
def reference_logits(model: TwoLevelSegmenter, bgr: np.ndarray, mean, std) -> np.ndarray:
    """(N, H, W, 3) uint8 BGR frames -> (N, C, H, W) logits of the unfolded model at full size."""
    x = torch.from_numpy(bgr).permute(0, 3, 1, 2).float()
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    logits = deployed_output(model.eval()(x))
    return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True).numpy()


def compare(name: str, precision: str, model: TwoLevelSegmenter, run_artefact, frames, mean, std,
            labels=None, num_classes: int | None = None) -> ParityReport:
    """`run_artefact(bgr_batch) -> labels (N,H,W) or logits (N,C,H,W)`; frames: list of (1,H,W,3) uint8."""
    agreement = Agreement()
    max_err = None
    cm_ref = cm_art = None
    if labels is not None:
        cm_ref, cm_art = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
    for i, frame in enumerate(frames):
        ref = reference_logits(model, frame, mean, std)
        out = np.asarray(run_artefact(frame))
        if out.ndim == 4 and out.shape[-2:] != ref.shape[-2:]:  # scores at the network's stride: upsampled
            out = F.interpolate(torch.from_numpy(out.astype(np.float32)), size=ref.shape[-2:], mode="bilinear",
                                align_corners=True).numpy()     # as the graph would (and the runtime does)
        if out.ndim == 4:
            err = float(np.abs(out.astype(np.float32) - ref).max())
            max_err = err if max_err is None else max(max_err, err)
            out = out.argmax(1)
        ref_labels = ref.argmax(1)
        agreement.update(out, ref_labels)
        if labels is not None:
            cm_ref.update(ref_labels[0], labels[i])
            cm_art.update(out[0].astype(np.int64), labels[i])
    return ParityReport(name, precision, len(frames), max_err, agreement.percent,
                        cm_ref.miou() if cm_ref else None, cm_art.miou() if cm_art else None)
