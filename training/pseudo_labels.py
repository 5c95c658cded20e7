"""Pseudo labels for self-training, with class-balanced thresholds as Bidirectional Learning (Li et al. 2019).

The adapted model's deployed decoder (Dec2^T when the model has a WTM on Dec2, else Dec2) predicts every target
image; softmax maps are upsampled to the image's full size. Per class c, the threshold is the given percentile
(median by default) of the max-probability of the pixels predicted as c, capped at `cap` (0.9); a pixel under
its class threshold becomes ignore. The output is a Cityscapes tree: `gtFine/{split}/{city}/*_gtFine_labelIds.png`
(label ids; ignore = id 0 "unlabeled", which every reader maps to 255) and `leftImg8bit/{split}`, a link to the
target images, so the training loaders, `jal-data check` and the official evaluator read it as it is.

Two passes: the first counts confidences (a 10,000-bin histogram per class, so the thresholds are exact to 1e-4
whatever the split's size), the second writes the files. The first pass keeps its predictions (3 bytes a pixel)
while they fit in `cache_bytes` (1 GiB: a 600-frame 512x256 split whole, about 170 Cityscapes frames), so the
second predicts only the rest again. The thresholds are saved in `pseudo_labels.json` after the first pass: an
interrupted run resumes at the first missing file and writes exactly the files an uninterrupted run writes.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from jal_deploy.atomic import write_text
from jal_deploy.datasets import image_dir, image_size, label_path, read_label, write_raw_label
from jal_deploy.labels import IGNORE, TRAINID_TO_ID, get_protocol
from jal_deploy.metrics import ConfusionMatrix

from .checkpoints import load_trained
from .data import Augment, SegmentationDataset
from .evaluate import deployed_output
from .spatial_prior import source_spatial_prior

N_BINS = 10_000
JSON_NAME = "pseudo_labels.json"
CACHE_BYTES = 1 << 30  # pass 1's predictions kept for pass 2 (a label byte and a uint16 bin per pixel)


class PseudoLabelError(RuntimeError):
    """Pseudo labelling that cannot start or continue, with a message a user can act on."""


@dataclass
class PseudoLabelOptions:
    split: str = "train"
    list_file: str = ""
    cap: float = 0.9            # the highest class threshold (Bidirectional Learning: 0.9)
    percentile: float = 50.0    # of the confidences of the pixels predicted as the class (50 = median)
    flip: bool = False          # average the softmax of the image and its mirror image
    batch: int = 1
    size: tuple[int, int] = ()  # network input (W, H); () = the checkpoint's data.target_size
    device: str = "auto"
    spatial_prior: bool = False  # CBST-SP: weight the probabilities by where each class lies in the source labels
    prior_root: str = ""        # the labelled tree the prior counts ("" = the checkpoint's data.source_root)
    prior_format: str = ""      # its format ("" = the checkpoint's data.source)


def class_thresholds(hist: np.ndarray, percentile: float, cap: float) -> np.ndarray:
    """Per class, the confidence bin of the `percentile`-th pixel (sorted ascending, index round(n * p / 100)
    as Bidirectional Learning), capped at `cap`; a pixel is kept when its bin is >= its class's."""
    cap_bin = int(round(cap * N_BINS))
    out = np.zeros(len(hist), dtype=np.int64)
    for c, counts in enumerate(hist):
        n = int(counts.sum())
        if n:
            k = min(int(round(n * percentile / 100.0)), n - 1)
            out[c] = min(int(np.searchsorted(np.cumsum(counts), k, side="right")), cap_bin)
    return out


def kept_counts(hist: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per class, how many of its predicted pixels are at or above its threshold."""
    return np.array([hist[c, t:].sum() for c, t in enumerate(thresholds)], dtype=np.int64)


def kept_fractions(hist: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per class, the share of its predicted pixels at or above its threshold (NaN if never predicted)."""
    total = hist.sum(1)
    return np.where(total > 0, kept_counts(hist, thresholds) / np.maximum(total, 1), np.nan)


class _Predictor:
    """The deployed decoder -> (labels, confidence bins) at each image's full size: its softmax (the mean with the
    mirror image's with `flip`); with a spatial prior q(pos | c) (C, H, W), the probabilities become
    p(c | image, pos), proportional to softmax * q."""

    def __init__(self, model, device: torch.device, flip: bool, prior: np.ndarray | None = None):
        self.model, self.device, self.flip = model.to(device).eval(), device, flip
        self.prior = None if prior is None else torch.from_numpy(prior).to(device)
        self._priors: dict[tuple[int, int], torch.Tensor] = {}

    def _prior_at(self, h: int, w: int) -> torch.Tensor:
        if (h, w) not in self._priors:
            self._priors[(h, w)] = F.interpolate(self.prior[None], size=(h, w), mode="bilinear",
                                                 align_corners=False)[0]
        return self._priors[(h, w)]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, sizes: list[tuple[int, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        x = images.to(self.device)
        prob = F.softmax(deployed_output(self.model(x)).float(), dim=1)
        if self.flip:
            prob = (prob + F.softmax(deployed_output(self.model(x.flip(-1))).float(), dim=1).flip(-1)) / 2
        out = []
        for p, (w, h) in zip(prob, sizes):  # as Bidirectional Learning: probabilities upsampled, then max
            full = F.interpolate(p[None], size=(h, w), mode="bilinear", align_corners=True)[0]
            if self.prior is not None:
                full = full * self._prior_at(h, w)
                full = full / full.sum(0, keepdim=True).clamp_min(1e-30)
            conf, label = full.max(0)
            bins = (conf * N_BINS).long().clamp_(0, N_BINS - 1)
            out.append((label.cpu().numpy().astype(np.uint8), bins.cpu().numpy()))
        return out


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield list(range(start, min(n, start + size)))


def _link_images(target_root: Path, out: Path, split: str) -> None:
    """out/leftImg8bit/{split} -> the target images, so `out` is a complete Cityscapes tree."""
    link, images = out / "leftImg8bit" / split, image_dir(target_root, "cityscapes", split).resolve()
    if link.is_symlink() or link.exists():
        if link.resolve() != images:
            raise PseudoLabelError(f"{link} exists and is not a link to {images}; use another --out")
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(images, link, target_is_directory=True)
    except OSError as e:
        raise PseudoLabelError(f"cannot link {link} -> {images} ({e.strerror or e}): the pseudo-label tree needs "
                               "its images next to its labels; use a file system that supports links") from None


def make_pseudo_labels(checkpoint: str | Path, target_root: str | Path, out: str | Path,
                       options: PseudoLabelOptions = PseudoLabelOptions(), progress: bool = True,
                       command: str = "", log=print, cache_bytes: int = CACHE_BYTES) -> dict:
    """Write the pseudo-label tree `out` for the target images of `target_root` and return its summary (also
    saved as out/pseudo_labels.json): thresholds, kept fractions, and precision when the split has labels."""
    o = options
    if not 0 < o.cap <= 1 or not 0 <= o.percentile <= 100:
        raise PseudoLabelError(f"--cap must be in (0, 1] and --percentile in [0, 100], got {o.cap}, {o.percentile}")
    target_root, out = Path(target_root), Path(out)
    model, meta = load_trained(checkpoint)
    train = meta["train"]
    protocol = get_protocol(train["data"]["protocol"] if train else ("19" if model.num_classes == 19 else "16"))
    size = tuple(o.size) or tuple(train["data"]["target_size"] if train else (1024, 512))
    prior = None
    if o.spatial_prior:
        o = _resolve_prior_source(o, train)
        prior = source_spatial_prior(o.prior_root, o.prior_format, protocol.name)
    dataset = SegmentationDataset(target_root, "cityscapes", split=o.split, list_file=o.list_file or None,
                                  labelled=False, augment=Augment(size=size), protocol=protocol.name)
    samples = dataset.samples
    outputs = [label_path(out, "cityscapes", s.image, o.split) for s in samples]
    settings = {"checkpoint": str(Path(checkpoint).resolve()), "iteration": meta["provenance"]["iteration"],
                "target": str(target_root.resolve()), **asdict(o), "size": list(size)}
    # device and batch do not change the files; options left off are left out, so that trees made before those
    # options existed stay valid
    unused = ["device", "batch"]
    if not o.spatial_prior:
        unused += ["spatial_prior", "prior_root", "prior_format"]
    for key in unused:
        settings.pop(key)
    predict = _Predictor(model, _device(o.device), o.flip, prior)

    def predictions(indices, desc):
        bar = tqdm(total=len(samples), initial=len(samples) - len(indices), desc=desc, disable=not progress,
                   dynamic_ncols=True)
        for chunk in _batches(len(indices), max(1, o.batch)):
            idx = [indices[i] for i in chunk]
            images = torch.stack([dataset[i]["image"] for i in idx])
            for i, pred in zip(idx, predict(images, [image_size(samples[i].image) for i in idx])):
                yield i, pred
                bar.update(1)
        bar.close()

    summary = _read_summary(out, settings)
    cached: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # pass 1's predictions that pass 2 need not repeat
    if summary is None:  # pass 1: confidences of every frame -> thresholds
        hist = np.zeros((protocol.num_classes, N_BINS), dtype=np.int64)
        room = cache_bytes
        for i, (label, bins) in predictions(list(range(len(samples))), "confidences"):
            hist += np.bincount(label.astype(np.int64).ravel() * N_BINS + bins.ravel(),
                                minlength=hist.size).reshape(hist.shape)
            if 3 * label.size <= room:
                cached[i], room = (label, bins.astype(np.uint16)), room - 3 * label.size
        thresholds = class_thresholds(hist, o.percentile, o.cap)
        kept = kept_fractions(hist, thresholds)
        summary = {"command": command, "settings": settings, "frames": len(samples),
                   "classes": list(protocol.class_names), "threshold_bins": thresholds.tolist(), "status": "writing",
                   "thresholds": {n: t / N_BINS for n, t in zip(protocol.class_names, thresholds.tolist())},
                   "predicted_share": _named(protocol, hist.sum(1) / max(1, hist.sum())),
                   "kept_fraction": _named(protocol, kept),
                   "kept_total": float(kept_counts(hist, thresholds).sum() / max(1, hist.sum()))}
        write_text(out / JSON_NAME, json.dumps(summary, indent=1))
    _link_images(target_root, out, o.split)

    # pass 2: the files, skipping those already written
    thresholds = np.asarray(summary["threshold_bins"])
    to_id = np.zeros(256, dtype=np.uint8)  # class index -> Cityscapes label id; ignore -> 0 ("unlabeled")
    to_id[: protocol.num_classes] = TRAINID_TO_ID[list(protocol.train_ids)]
    todo = [i for i, path in enumerate(outputs) if not path.is_file()]
    rest = [i for i in todo if i not in cached]
    for i, (label, bins) in itertools.chain(((i, cached.pop(i)) for i in todo if i in cached),
                                            predictions(rest, "pseudo labels")):
        label[bins < thresholds[label]] = IGNORE
        write_raw_label(outputs[i], to_id[label], "cityscapes")

    if all(s.label is not None for s in samples):  # the split has real labels: how right are the kept pixels?
        summary["precision"] = _precision(samples, outputs, protocol)
    summary["status"] = "done"
    write_text(out / JSON_NAME, json.dumps(summary, indent=1))
    log(format_summary(summary))
    return summary


def _resolve_prior_source(o: PseudoLabelOptions, train: dict | None) -> PseudoLabelOptions:
    """The spatial prior's labelled tree and format: given, or the checkpoint's own source data."""
    data = (train or {}).get("data", {})
    root, fmt = o.prior_root or data.get("source_root", ""), o.prior_format or data.get("source", "")
    if not root or not fmt:
        raise PseudoLabelError("--spatial-prior needs labelled source data: this checkpoint records none, so pass "
                               "--prior-root ROOT --prior-format gta5|synthia|cityscapes")
    if not Path(root).is_dir():
        raise PseudoLabelError(f"the spatial prior's source tree {root} does not exist; pass --prior-root")
    return dataclasses.replace(o, prior_root=str(Path(root).resolve()), prior_format=fmt)


def _named(protocol, values) -> dict:
    return {n: (None if np.isnan(v) else float(v)) for n, v in zip(protocol.class_names, values)}


def _read_summary(out: Path, settings: dict) -> dict | None:
    """The saved thresholds of an earlier run with the same settings (None: start with pass 1)."""
    path = out / JSON_NAME
    if not path.is_file():
        if (out / "gtFine").exists():
            raise PseudoLabelError(f"{out} holds labels but no {JSON_NAME}; use another --out")
        return None
    summary = json.loads(path.read_text())
    saved = summary.get("settings", {})
    if saved != settings:  # a key only one side has (e.g. spatial_prior) counts as changed too
        changed = sorted(k for k in {*settings, *saved} if saved.get(k) != settings.get(k))
        raise PseudoLabelError(f"{out} holds pseudo labels made with other settings ({', '.join(changed)}); "
                               "use another --out, or delete it to start again")
    return summary


def _precision(samples, outputs, protocol) -> dict:
    """Per class: of the kept pixels labelled c (where the real label is known), the share that is c."""
    lut = protocol.from_trainid19
    cm = ConfusionMatrix(protocol.num_classes)
    for sample, path in zip(samples, outputs):
        pseudo, real = lut[read_label(path, "cityscapes")], lut[read_label(sample, "cityscapes")]
        if pseudo.shape != real.shape:
            raise PseudoLabelError(f"{path} is {pseudo.shape[::-1]} but its real label {sample.label} is "
                                   f"{real.shape[::-1]}")
        valid = (pseudo != IGNORE) & (real != IGNORE)
        cm.update(pseudo[valid], real[valid])  # matrix[real, pseudo]
    labelled = cm.matrix.sum(0)
    per_class = np.where(labelled > 0, np.diag(cm.matrix) / np.maximum(labelled, 1), np.nan)
    return {"per_class": _named(protocol, per_class),
            "overall": float(np.trace(cm.matrix) / max(1, cm.matrix.sum()))}


def format_summary(summary: dict) -> str:
    precision = (summary.get("precision") or {}).get("per_class", {})
    lines = [f"{'class':15s} {'threshold':>9s} {'predicted':>9s} {'kept':>7s}" + (" precision" if precision else "")]

    def pct(v):
        return "      -" if v is None else f"{100 * v:6.1f}%"

    for name in summary["classes"]:
        threshold = f"{summary['thresholds'][name]:9.4f}" if summary["predicted_share"][name] else f"{'-':>9s}"
        row = (f"{name:15s} {threshold} {pct(summary['predicted_share'][name]):>9s} "
               f"{pct(summary['kept_fraction'][name]):>7s}")
        lines.append(row + (f"   {pct(precision.get(name))}" if precision else ""))
    overall = f"; precision of the kept pixels {100 * summary['precision']['overall']:.1f}%" if precision else ""
    lines.append(f"kept {100 * summary['kept_total']:.1f}% of {summary['frames']} frames' pixels{overall}")
    return "\n".join(lines)
