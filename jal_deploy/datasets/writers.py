"""Write images and labels exactly as the real datasets store them (atomically).

Used by tests and generators to build trees that the readers must accept, so the on-disk formats are
defined next to the code that reads them: Cityscapes 'L' PNG label ids, GTA5 palette PNGs coloured with the
Cityscapes palette (index = label id), SYNTHIA 16-bit 3-channel PNGs (R = class id, G = instance id).
"""
from __future__ import annotations

import os

import cv2
import numpy as np
from PIL import Image

from jal_deploy.atomic import atomic_path
from jal_deploy.labels import CITYSCAPES_LABELS

from .layout import FORMATS, DatasetError


def _gta5_palette() -> list[int]:
    palette = np.zeros((256, 3), dtype=np.uint8)
    for lab in CITYSCAPES_LABELS:
        palette[lab.id] = lab.color
    return palette.ravel().tolist()


def write_image(path: str | os.PathLike, bgr: np.ndarray) -> None:
    """Write a (H, W, 3) BGR uint8 image (PNG, or any format OpenCV picks from the suffix)."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), bgr):
            raise DatasetError(f"OpenCV could not write {path}")


def write_raw_label(path: str | os.PathLike, ids: np.ndarray, fmt: str, instances: np.ndarray | None = None) -> None:
    """Write raw label ids (Cityscapes label ids, or SYNTHIA class ids) in `fmt`'s on-disk format."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"label ids must be (H, W), got {ids.shape}")
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; choose one of {', '.join(FORMATS)}")
    with atomic_path(path) as tmp:
        if fmt == "synthia":
            if ids.min() < 0 or ids.max() > 65535:
                raise ValueError("SYNTHIA ids must fit in 16 bits")
            bgr = np.zeros((*ids.shape, 3), dtype=np.uint16)
            bgr[:, :, 2] = ids  # R: class id
            if instances is not None:
                bgr[:, :, 1] = instances  # G: instance id
            if not cv2.imwrite(str(tmp), bgr):
                raise DatasetError(f"OpenCV could not write {path}")
            return
        if ids.min() < 0 or ids.max() > 255:
            raise ValueError(f"{fmt} label ids must fit in 8 bits")
        im = Image.fromarray(ids.astype(np.uint8))  # 'L'
        if fmt == "gta5":
            im.putpalette(_gta5_palette())  # makes it a palette ('P') image; the indices stay the label ids
        im.save(tmp, format="PNG")
