"""mIoU of a model on a labelled tree, with the protocol the benchmarks use for that dataset.

The confusion matrix runs over the model's own classes; the scores reported follow the data: Cityscapes and
GTA5 trees score the model's classes (19, or 16 for a SYNTHIA-trained model, with the 13-class mIoU* too),
SYNTHIA trees score the 16 classes SYNTHIA has (and 13) whatever the model predicts.
"""
from __future__ import annotations

import cv2
import numpy as np

from jal_deploy.labels import get_protocol
from jal_deploy.metrics import ConfusionMatrix, Flicker, TemporalConsistency, format_iou_table
from jal_deploy.temporal import MotionEstimator

TOP_CONFUSIONS = 5  # largest errors listed under the table and in report.json


def eval_protocols(model_protocol: str, fmt: str | None) -> list[str]:
    if model_protocol == "19":
        return ["16", "13"] if fmt == "synthia" else ["19"]
    return {"16": ["16", "13"], "13": ["13"]}.get(model_protocol, [model_protocol])


class Evaluation:
    def __init__(self, model_protocol: str, fmt: str | None):
        self.base = get_protocol(model_protocol)
        self.cm = ConfusionMatrix(self.base.num_classes)
        self.to_model = self.base.from_trainid19  # 19-class train ids -> model class indices (else ignore)
        self.protocols = eval_protocols(model_protocol, fmt)
        self.images = 0

    def update(self, labels: np.ndarray, label19: np.ndarray) -> None:
        """labels: predicted model class indices; label19: ground truth 19-class train ids, same size."""
        self.cm.update(labels, self.to_model[label19])
        self.images += 1

    def results(self) -> dict:
        scores = {}
        for name in self.protocols:
            proto = get_protocol(name)
            idx = proto.indices_within(self.base)
            scores[name] = {"miou": _num(self.cm.miou(idx)),
                            "per_class": {k: _num(v) for k, v in self.cm.per_class(proto.class_names, idx).items()}}
        first = scores[self.protocols[0]]
        return {"miou": first["miou"], "per_class": first["per_class"], "protocol": self.protocols[0],
                "protocols": scores, "images": self.images, "pixel_accuracy": _num(self.cm.pixel_accuracy()),
                "confusion": {"classes": list(self.base.class_names), "matrix": self.cm.matrix.tolist()},
                "top_confusions": self.cm.confusions(self.base.class_names, TOP_CONFUSIONS)}

    def table(self, res: dict | None = None) -> str:
        """The printed IoU table with the largest confusions; `res`: `results()` when the caller has them."""
        res = res if res is not None else self.results()
        summary = {summary_name(n): res["protocols"][n]["miou"] for n in self.protocols}
        return format_iou_table({k: (np.nan if v is None else v) for k, v in res["per_class"].items()},
                                summary={k: (np.nan if v is None else v) for k, v in summary.items()},
                                title=f"{self.images} images, protocol {res['protocol']}") + confusion_lines(res)


class VideoConsistency:
    """How steady a labelled video's predictions are: TC (consecutive predictions agreeing once warped by
    optical flow) and the flicker rate (labels changing where the truth does not). TC's flow is DIS (preset
    medium) at the frame's full resolution, computed here on its own: finer than the runtime's, and the same
    for every method scored."""

    def __init__(self):
        self.flow = MotionEstimator(width=1 << 16, check=False, preset=cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self.tc, self.flicker = TemporalConsistency(), Flicker()
        self.previous: tuple[np.ndarray, np.ndarray] | None = None

    def update(self, frame: np.ndarray, labels: np.ndarray, label19: np.ndarray) -> None:
        """The next frame, its predicted class indices and its true 19-class train ids."""
        motion = self.flow(frame)
        if self.previous is not None and motion is not None:
            before, truth_before = self.previous
            if not motion.cut:  # a cut has nothing to agree with
                self.tc.update(labels, motion.warp(before, nearest=True), motion.valid)
            self.flicker.update(before, labels, truth_before, label19)
        self.previous = (labels, label19)

    def gap(self) -> None:
        """A frame is missing (failed to decode, no label): the next pair starts afresh."""
        self.previous = None
        self.flow.reset()

    def results(self) -> dict:
        return {"tc": _num(self.tc.score), "flicker": _num(self.flicker.rate), "tc_pairs": len(self.tc.scores)}


def confusion_lines(res: dict, model: str | None = None) -> str:
    """The largest confusions under a table, one per line ('' when there is none); `model` names whose they
    are when a table compares two."""
    top = res.get("top_confusions") or []
    if not top:
        return ""
    whose = f" of {model}" if model else ""
    return f"\nLargest confusions{whose} (share of the true class's pixels):\n" + "\n".join(
        f"  {c['true']:>14s} -> {c['predicted']:<14s} {100 * c['share']:5.1f} %" for c in top)


def summary_name(protocol: str) -> str:
    """The row label of a protocol's mIoU in printed tables (SYNTHIA's 13-class mean is the starred mIoU*)."""
    return "mIoU* (13 classes)" if protocol == "13" else f"mIoU ({protocol} classes)"


def _num(v: float) -> float | None:
    """JSON has no NaN: a class absent from ground truth and predictions is null."""
    return None if not np.isfinite(v) else float(v)
