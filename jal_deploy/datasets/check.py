"""Scan a whole dataset tree once and report what would break training or evaluation later.

`jal-data check` prints this report. Fatal problems (missing labels, unreadable files, wrong label dtypes)
would otherwise surface hours into a run; warnings (unknown ids, image/label size mismatches, stray labels)
are listed so a user can decide.
"""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jal_deploy.labels import IGNORE

from .layout import DatasetError, Sample, find_samples, label_path, orphan_labels
from .readers import image_size, label_lut, label_names, read_raw_label


@dataclass
class TreeReport:
    """What `check_tree` found. `problems` non-empty means the tree is unusable as given."""

    root: Path
    fmt: str
    split: str | None
    num_images: int = 0
    num_labels: int = 0
    missing_labels: list[tuple[Path, Path]] = field(default_factory=list)  # (image, expected label)
    orphan_labels: list[Path] = field(default_factory=list)
    bad_files: list[str] = field(default_factory=list)  # unreadable images/labels, wrong label dtypes
    size_mismatches: list[str] = field(default_factory=list)
    image_sizes: Counter = field(default_factory=Counter)  # (width, height) -> count
    id_hist: np.ndarray | None = None  # raw id -> pixel count over all labels read

    @property
    def unknown_ids(self) -> dict[int, int]:
        """Raw ids found in labels that the format does not define (they map to ignore), with pixel counts."""
        if self.id_hist is None:
            return {}
        known = label_names(self.fmt)
        return {int(i): int(self.id_hist[i]) for i in np.flatnonzero(self.id_hist) if int(i) not in known}

    @property
    def problems(self) -> list[str]:
        out = []
        if self.missing_labels:
            out.append(f"{len(self.missing_labels)} of {self.num_images} images have no label")
        if self.bad_files:
            out.append(f"{len(self.bad_files)} unreadable or wrongly encoded files")
        return out

    @property
    def warnings(self) -> list[str]:
        out = []
        if self.unknown_ids:
            out.append(f"unknown label ids {sorted(self.unknown_ids)} (mapped to ignore {IGNORE})")
        if self.size_mismatches:
            out.append(f"{len(self.size_mismatches)} labels differ in size from their image")
        if self.orphan_labels:
            out.append(f"{len(self.orphan_labels)} labels have no image")
        return out


def _scan_one(
    sample: Sample, fmt: str, read_labels: bool
) -> tuple[tuple[int, int] | None, np.ndarray | None, list[str], str | None]:
    """(image size, raw-id histogram, errors, size-mismatch note) of one sample; never raises DatasetError."""
    errors = []
    size = hist = mismatch = None
    try:
        size = image_size(sample.image)
    except DatasetError as exc:
        errors.append(str(exc))
    if read_labels and sample.label is not None:
        try:
            raw = read_raw_label(sample.label, fmt)
        except DatasetError as exc:
            errors.append(str(exc))
        else:
            hist = np.bincount(raw.ravel())  # up to the largest id present
            if size is not None and raw.shape != (size[1], size[0]):
                mismatch = f"{sample.label} is {raw.shape[1]}x{raw.shape[0]}, image is {size[0]}x{size[1]}"
    return size, hist, errors, mismatch


def check_tree(
    root: str | os.PathLike,
    fmt: str,
    split: str | None = None,
    list_file: str | os.PathLike | None = None,
    labels: bool = True,
    jobs: int = 4,
    progress: bool | None = None,
) -> TreeReport:
    """Read every label (and every image header) of a tree; raises DatasetError if there is nothing to scan.

    `labels=False` checks images only (the unlabelled target train split). `progress=None` shows a bar only on
    a terminal. Decoding runs in `jobs` threads (Pillow and OpenCV release the GIL while decoding).
    """
    samples = find_samples(root, fmt, split, list_file, require_labels=False)
    split = (split or "val") if fmt == "cityscapes" else None
    report = TreeReport(root=Path(root), fmt=fmt, split=split, num_images=len(samples))
    if labels:
        report.missing_labels = [(s.image, label_path(root, fmt, s.image, split)) for s in samples if s.label is None]
        report.num_labels = len(samples) - len(report.missing_labels)
        if list_file is None:
            report.orphan_labels = orphan_labels(root, fmt, samples, split)
        report.id_hist = np.zeros(len(label_lut(fmt)), dtype=np.int64)
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        results = pool.map(lambda s: _scan_one(s, fmt, labels), samples)
        bar = tqdm(results, total=len(samples), desc=f"checking {fmt}", unit="img",
                   disable=None if progress is None else not progress)
        for size, hist, errors, mismatch in bar:
            if size is not None:
                report.image_sizes[size] += 1
            if hist is not None:
                report.id_hist[: len(hist)] += hist
            report.bad_files.extend(errors)
            if mismatch:
                report.size_mismatches.append(mismatch)
    return report


def _named(items: list, show: int) -> list[str]:
    lines = [f"    {item}" for item in items[:show]]
    if len(items) > show:
        lines.append(f"    ... and {len(items) - show} more")
    return lines


def format_report(report: TreeReport, show: int = 10) -> str:
    """Human-readable report: counts, image sizes, missing pairs, label-id histogram, problems, warnings."""
    where = f"{report.fmt} tree {report.root}" + (f" (split {report.split})" if report.split else "")
    labelled = report.num_labels if report.id_hist is not None else "not checked"
    lines = [where, f"  images: {report.num_images}   labelled: {labelled}"]
    lines.append("image sizes (width x height):")
    for (w, h), n in report.image_sizes.most_common():
        lines.append(f"    {w}x{h}: {n}")
    if report.missing_labels:
        lines.append(f"images without label: {len(report.missing_labels)}")
        lines += _named([f"{img} -> expected {lab}" for img, lab in report.missing_labels], show)
    if report.orphan_labels:
        lines.append(f"labels without image: {len(report.orphan_labels)}")
        lines += _named(report.orphan_labels, show)
    if report.bad_files:
        lines.append(f"unreadable or wrongly encoded files: {len(report.bad_files)}")
        lines += _named(report.bad_files, show)
    if report.size_mismatches:
        lines.append(f"label/image size mismatches: {len(report.size_mismatches)}")
        lines += _named(report.size_mismatches, show)
    if report.id_hist is not None and report.id_hist.sum() > 0:
        total = report.id_hist.sum()
        names, lut, unknown = label_names(report.fmt), label_lut(report.fmt), report.unknown_ids
        lines.append(f"label ids ({total} pixels):")
        for i in np.flatnonzero(report.id_hist):
            i = int(i)
            n = int(report.id_hist[i])
            target = "UNKNOWN id" if i in unknown else ("ignored" if lut[i] == IGNORE else f"trainId {lut[i]}")
            lines.append(f"    {i:5d} {names.get(i, '?'):<22} {n:>12d} {100.0 * n / total:7.3f}%  {target}")
    for warning in report.warnings:
        lines.append(f"warning: {warning}")
    for problem in report.problems:
        lines.append(f"problem: {problem}")
    return "\n".join(lines)
