"""Read images and labels of the three formats into BGR uint8 images and 19-class train id maps.

Labels are decoded with the library that reads each format as stored: Pillow for Cityscapes/GTA5 (GTA5 labels
are palette PNGs whose index is the label id; OpenCV would expand the palette to colours), OpenCV for SYNTHIA's
16-bit 3-channel PNGs (Pillow has no 16-bit RGB mode). Every failure is a DatasetError naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from jal_deploy.labels import CITYSCAPES_LABELS, ID_TO_TRAINID, SYNTHIA_NAMES, SYNTHIA_TO_TRAINID

from .layout import FORMATS, DatasetError, Sample

_PIL_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_MODE_HINTS = {
    "RGB": "8-bit RGB (a colour-coded label such as *_gtFine_color.png?)",
    "RGBA": "8-bit RGBA (a colour-coded label?)",
    "I;16": "16-bit single channel",
    "I": "32-bit integer",
    "1": "1-bit",
}


def label_lut(fmt: str) -> np.ndarray:
    """Raw label id -> 19-class train id (255 ignore): 256 entries, or 65536 for SYNTHIA's 16-bit ids."""
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return SYNTHIA_TO_TRAINID if fmt == "synthia" else ID_TO_TRAINID


def label_names(fmt: str) -> dict[int, str]:
    """The raw ids a format defines, with names; any other id found in a label is unknown."""
    if fmt == "synthia":
        return dict(SYNTHIA_NAMES)
    label_lut(fmt)
    return {lab.id: lab.name for lab in CITYSCAPES_LABELS}


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DatasetError(f"{what} {path} does not exist")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) BGR uint8, as OpenCV and the reference training code use."""
    path = Path(path)
    _require_file(path, "image")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot decode image {path}: corrupt, truncated or not an image")
    return img


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the file header only, without decoding pixels."""
    path = Path(path)
    _require_file(path, "image")
    try:
        with Image.open(path) as im:
            return im.size
    except _PIL_ERRORS as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None


def _read_ids_8bit(path: Path, fmt: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                hint = _MODE_HINTS.get(im.mode, f"mode {im.mode}")
                raise DatasetError(
                    f"label {path} is {hint}; {fmt} labels must be single-channel 8-bit label ids "
                    "(grayscale 'L' or palette 'P' PNG)"
                )
            im.load()
            ids = np.array(im)
    except _PIL_ERRORS as exc:
        raise DatasetError(f"cannot read label {path}: {exc}") from None
    if ids.dtype != np.uint8 or ids.ndim != 2:  # e.g. a 'P' image Pillow decoded unexpectedly
        raise DatasetError(f"label {path} decoded to {ids.dtype} {ids.shape}; expected 8-bit (H, W) label ids")
    return ids


def _read_ids_synthia(path: Path) -> np.ndarray:
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f"cannot decode label {path}: corrupt, truncated or not a PNG")
    if raw.dtype != np.uint16 or raw.ndim != 3 or raw.shape[2] not in (3, 4):
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        raise DatasetError(
            f"label {path} is {raw.dtype.itemsize * 8}-bit with {channels} channel(s); SYNTHIA GT/LABELS files are "
            "16-bit 3-channel PNGs (class id in R, instance id in G). Did you point at GT/COLOR?"
        )
    # OpenCV returns BGR: the class id (R, the first channel in RGB order) is index 2; index 1 holds instances.
    return np.ascontiguousarray(raw[:, :, 2])


def read_raw_label(path: str | os.PathLike, fmt: str) -> np.ndarray:
    """The label ids as stored: uint8 Cityscapes label ids (Cityscapes, GTA5) or uint16 SYNTHIA class ids."""
    label_lut(fmt)
    path = Path(path)
    _require_file(path, "label")
    return _read_ids_synthia(path) if fmt == "synthia" else _read_ids_8bit(path, fmt)


def read_label(sample_or_path: Sample | str | os.PathLike, fmt: str, check_shape: bool = False) -> np.ndarray:
    """(H, W) uint8 map of 19-class train ids, 255 = ignore (unknown raw ids map to 255 too).

    `check_shape` (Samples only) compares the label with its image's header size and raises on a mismatch.
    """
    if isinstance(sample_or_path, Sample):
        if sample_or_path.label is None:
            raise DatasetError(f"sample {sample_or_path.name} ({sample_or_path.image}) has no label")
        path = sample_or_path.label
    else:
        if check_shape:
            raise ValueError("check_shape needs a Sample (the image to compare with)")
        path = Path(sample_or_path)
    raw = read_raw_label(path, fmt)
    if check_shape:
        width, height = image_size(sample_or_path.image)
        if raw.shape != (height, width):
            raise DatasetError(
                f"label {path} is {raw.shape[1]}x{raw.shape[0]} but image {sample_or_path.image} is {width}x{height}"
            )
    return label_lut(fmt)[raw]
