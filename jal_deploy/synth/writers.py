"""Write frames exactly in the public layouts of GTA5, SYNTHIA-RAND-CITYSCAPES and Cityscapes.

- GTA5: `images/00001.png` (RGB) and `labels/00001.png`, an 8-bit palette PNG whose pixel index is the
  Cityscapes label id and whose palette holds the Cityscapes colours.
- SYNTHIA: `RGB/0000000.png` and `GT/LABELS/0000000.png`, 16-bit 3-channel: the SYNTHIA class id in the
  first channel in RGB order (index 2 of what OpenCV reads), instance ids in G, 0 in B.
- Cityscapes: `leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png` and, under
  `gtFine/`, `_gtFine_labelIds.png` (8-bit), `_gtFine_instanceIds.png` (16-bit, id*1000+k for classes
  with instances, else the label id) and `_gtFine_color.png` (RGB).
Every file is encoded in memory and written atomically (temp file + rename).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from jal_deploy.atomic import write_bytes
from jal_deploy.datasets.writers import encode_raw_label
from jal_deploy.labels import CITYSCAPES_LABELS, ID_TO_COLOR, IGNORE, TRAINID_TO_ID, TRAINID_TO_SYNTHIA
from jal_deploy.synth.scene import Scene

CITIES = {"train": ("auberg", "brenville"), "val": ("corlund", "dellingen")}  # made up
CS_FRAME = 19  # Cityscapes' annotated frame is the 20th of each 30-frame snippet

_HAS_INSTANCES = {lab.id for lab in CITYSCAPES_LABELS if lab.has_instances}
_TRAIN_LUT = np.zeros(256, np.uint8)
_TRAIN_LUT[: len(TRAINID_TO_ID)] = TRAINID_TO_ID
_SYNTHIA_LUT = np.zeros(256, np.uint16)
_SYNTHIA_LUT[: len(TRAINID_TO_SYNTHIA)] = TRAINID_TO_SYNTHIA


def _png(arr: np.ndarray, level: int = 3) -> bytes:
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, level])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _rgb_png(rgb: np.ndarray) -> bytes:
    return _png(np.ascontiguousarray(rgb[..., ::-1]), level=1)  # textured photos: level 1 is ~2x faster, ~5% larger


def label_ids(scene: Scene) -> np.ndarray:
    """Cityscapes label ids: train classes via TRAINID_TO_ID, void pixels keep their void id (0, 1, 4)."""
    ids = _TRAIN_LUT[scene.label]
    void = scene.label == IGNORE
    ids[void] = scene.void[void]
    return ids


def write_gta5(root: Path, index: int, image: np.ndarray, scene: Scene) -> str:
    name = f"{index + 1:05d}.png"
    write_bytes(root / "images" / name, _rgb_png(image))
    write_bytes(root / "labels" / name, encode_raw_label(label_ids(scene), "gta5"))
    return name


def write_synthia(root: Path, index: int, image: np.ndarray, scene: Scene) -> str:
    name = f"{index:07d}.png"
    write_bytes(root / "RGB" / name, _rgb_png(image))
    write_bytes(root / "GT" / "LABELS" / name,
                encode_raw_label(_SYNTHIA_LUT[scene.label], "synthia", instances=scene.instances))
    return name


def cityscapes_stem(split: str, index: int) -> tuple[str, str]:
    cities = CITIES[split]
    city = cities[index % len(cities)]
    return city, f"{city}_{index // len(cities):06d}_{CS_FRAME:06d}"


def instance_ids(scene: Scene, ids: np.ndarray) -> np.ndarray:
    """Cityscapes instanceIds: label id * 1000 + k (k counts the visible instances of that class from 0)."""
    visible = np.flatnonzero(np.bincount(scene.instances.ravel(), minlength=len(scene.inst_class)))
    lut = np.zeros(len(scene.inst_class), np.uint16)
    seen: dict[int, int] = {}
    for j in visible[visible > 0]:
        cid = int(TRAINID_TO_ID[scene.inst_class[j]])
        if cid in _HAS_INSTANCES:
            lut[j] = cid * 1000 + seen.setdefault(cid, 0)
            seen[cid] += 1
    out = ids.astype(np.uint16)
    has = lut[scene.instances] > 0
    out[has] = lut[scene.instances][has]
    return out


def write_cityscapes(root: Path, split: str, index: int, image: np.ndarray, scene: Scene) -> str:
    city, stem = cityscapes_stem(split, index)
    write_bytes(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", _rgb_png(image))
    gt = root / "gtFine" / split / city
    ids = label_ids(scene)
    write_bytes(gt / f"{stem}_gtFine_labelIds.png", _png(ids))
    write_bytes(gt / f"{stem}_gtFine_instanceIds.png", _png(instance_ids(scene, ids)))
    write_bytes(gt / f"{stem}_gtFine_color.png", _rgb_png(ID_TO_COLOR[ids]))
    return f"{city}/{stem}_leftImg8bit.png"
