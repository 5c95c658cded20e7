"""Write images and labels exactly as the real datasets store them (atomically).

Used by tests and generators to build trees that the readers must accept, so the on-disk formats are
defined next to the code that reads them: Cityscapes 'L' PNG label ids, GTA5 palette PNGs coloured with the
Cityscapes palette (index = label id), SYNTHIA 16-bit 3-channel PNGs (R = class id, G = instance id).
"""
from __future__ import annotations

import io
import os

import cv2
import numpy as np
from PIL import Image

from jal_deploy.atomic import atomic_path, write_bytes
from jal_deploy.labels import ID_TO_COLOR

from .layout import FORMATS, DatasetError

GTA5_PALETTE: list[int] = ID_TO_COLOR.ravel().tolist()


def write_image(path: str | os.PathLike, bgr: np.ndarray) -> None:
    """Write a (H, W, 3) BGR uint8 image (PNG, or any format OpenCV picks from the suffix)."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), bgr):
            raise DatasetError(f"OpenCV could not write {path}")


def encode_raw_label(ids: np.ndarray, fmt: str, instances: np.ndarray | None = None) -> bytes:
    """PNG bytes of raw label ids (Cityscapes label ids, or SYNTHIA class ids) in `fmt`'s on-disk format."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"label ids must be (H, W), got {ids.shape}")
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "synthia":
        if ids.min() < 0 or ids.max() > 65535:
            raise ValueError("SYNTHIA ids must fit in 16 bits")
        bgr = np.zeros((*ids.shape, 3), dtype=np.uint16)
        bgr[:, :, 2] = ids  # R: class id
        if instances is not None:
            bgr[:, :, 1] = instances  # G: instance id
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        if not ok:
            raise DatasetError("OpenCV could not encode a SYNTHIA label")
        return buf.tobytes()
    if ids.min() < 0 or ids.max() > 255:
        raise ValueError(f"{fmt} label ids must fit in 8 bits")
    im = Image.fromarray(ids.astype(np.uint8))  # 'L'
    if fmt == "gta5":
        im.putpalette(GTA5_PALETTE)  # makes it a palette ('P') image; the indices stay the label ids
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


def write_raw_label(path: str | os.PathLike, ids: np.ndarray, fmt: str, instances: np.ndarray | None = None) -> None:
    """Write raw label ids in `fmt`'s on-disk format."""
    write_bytes(path, encode_raw_label(ids, fmt, instances))
