"""Label tables: Cityscapes ids, the 19 train classes, SYNTHIA ids and the 19/16/13-class protocols.

The single source of truth for every id, name and colour in the project (runtime, datasets, training,
export metadata). Values follow `cityscapesscripts.helpers.labels`; tests cross-check them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE = 255


@dataclass(frozen=True)
class CityscapesLabel:
    name: str
    id: int
    train_id: int
    category: str
    has_instances: bool
    color: tuple[int, int, int]  # RGB


# fmt: off
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = tuple(CityscapesLabel(*row) for row in (
    ("unlabeled",             0, 255, "void",         False, (0, 0, 0)),
    ("ego vehicle",           1, 255, "void",         False, (0, 0, 0)),
    ("rectification border",  2, 255, "void",         False, (0, 0, 0)),
    ("out of roi",            3, 255, "void",         False, (0, 0, 0)),
    ("static",                4, 255, "void",         False, (0, 0, 0)),
    ("dynamic",               5, 255, "void",         False, (111, 74, 0)),
    ("ground",                6, 255, "void",         False, (81, 0, 81)),
    ("road",                  7,   0, "flat",         False, (128, 64, 128)),
    ("sidewalk",              8,   1, "flat",         False, (244, 35, 232)),
    ("parking",               9, 255, "flat",         False, (250, 170, 160)),
    ("rail track",           10, 255, "flat",         False, (230, 150, 140)),
    ("building",             11,   2, "construction", False, (70, 70, 70)),
    ("wall",                 12,   3, "construction", False, (102, 102, 156)),
    ("fence",                13,   4, "construction", False, (190, 153, 153)),
    ("guard rail",           14, 255, "construction", False, (180, 165, 180)),
    ("bridge",               15, 255, "construction", False, (150, 100, 100)),
    ("tunnel",               16, 255, "construction", False, (150, 120, 90)),
    ("pole",                 17,   5, "object",       False, (153, 153, 153)),
    ("polegroup",            18, 255, "object",       False, (153, 153, 153)),
    ("traffic light",        19,   6, "object",       False, (250, 170, 30)),
    ("traffic sign",         20,   7, "object",       False, (220, 220, 0)),
    ("vegetation",           21,   8, "nature",       False, (107, 142, 35)),
    ("terrain",              22,   9, "nature",       False, (152, 251, 152)),
    ("sky",                  23,  10, "sky",          False, (70, 130, 180)),
    ("person",               24,  11, "human",        True,  (220, 20, 60)),
    ("rider",                25,  12, "human",        True,  (255, 0, 0)),
    ("car",                  26,  13, "vehicle",      True,  (0, 0, 142)),
    ("truck",                27,  14, "vehicle",      True,  (0, 0, 70)),
    ("bus",                  28,  15, "vehicle",      True,  (0, 60, 100)),
    ("caravan",              29, 255, "vehicle",      True,  (0, 0, 90)),
    ("trailer",              30, 255, "vehicle",      True,  (0, 0, 110)),
    ("train",                31,  16, "vehicle",      True,  (0, 80, 100)),
    ("motorcycle",           32,  17, "vehicle",      True,  (0, 0, 230)),
    ("bicycle",              33,  18, "vehicle",      True,  (119, 11, 32)),
))
# fmt: on

TRAIN_LABELS: tuple[CityscapesLabel, ...] = tuple(
    sorted((lab for lab in CITYSCAPES_LABELS if lab.train_id != IGNORE), key=lambda lab: lab.train_id)
)
CLASS_NAMES_19: tuple[str, ...] = tuple(lab.name for lab in TRAIN_LABELS)
PALETTE_19: np.ndarray = np.array([lab.color for lab in TRAIN_LABELS], dtype=np.uint8)  # RGB, (19, 3)
TRAINID_TO_ID: np.ndarray = np.array([lab.id for lab in TRAIN_LABELS], dtype=np.uint8)
# Cityscapes label id -> RGB colour (256 rows): `_gtFine_color.png` and the palette of GTA5 label PNGs.
ID_TO_COLOR: np.ndarray = np.zeros((256, 3), dtype=np.uint8)
for _lab in CITYSCAPES_LABELS:
    ID_TO_COLOR[_lab.id] = _lab.color


def _lut(pairs: dict[int, int], size: int = 256) -> np.ndarray:
    lut = np.full(size, IGNORE, dtype=np.uint8)
    for src, dst in pairs.items():
        lut[src] = dst
    return lut


# Cityscapes (and GTA5, which uses Cityscapes ids) label id -> 19-class train id; everything else 255.
ID_TO_TRAINID: np.ndarray = _lut({lab.id: lab.train_id for lab in TRAIN_LABELS})

# SYNTHIA-RAND-CITYSCAPES class id (first channel of GT/LABELS) -> 19-class train id.
SYNTHIA_NAMES: dict[int, str] = {
    0: "void", 1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence", 6: "vegetation", 7: "pole",
    8: "car", 9: "traffic sign", 10: "pedestrian", 11: "bicycle", 12: "motorcycle", 13: "parking-slot",
    14: "road-work", 15: "traffic light", 16: "terrain", 17: "rider", 18: "truck", 19: "bus", 20: "train",
    21: "wall", 22: "lanemarking",
}
SYNTHIA_TO_TRAINID_PAIRS: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12, 8: 13, 18: 14,
    19: 15, 20: 16, 12: 17, 11: 18,
}
SYNTHIA_TO_TRAINID: np.ndarray = _lut(SYNTHIA_TO_TRAINID_PAIRS, size=65536)
_TRAINID_SYNTHIA = {v: k for k, v in SYNTHIA_TO_TRAINID_PAIRS.items()}
TRAINID_TO_SYNTHIA: np.ndarray = np.array([_TRAINID_SYNTHIA[t] for t in range(19)], dtype=np.uint16)


@dataclass(frozen=True)
class Protocol:
    """A class subset of the 19 Cityscapes train classes, as the benchmarks evaluate them.

    `train_ids` are 19-class train ids in output order: class k of a model trained under this protocol is
    19-class train id `train_ids[k]`. `eval_subsets` names smaller protocols scored from the same outputs
    (SYNTHIA: 16-class mIoU and 13-class mIoU*).
    """

    name: str
    train_ids: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.train_ids)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(CLASS_NAMES_19[t] for t in self.train_ids)

    @property
    def palette(self) -> np.ndarray:
        return PALETTE_19[list(self.train_ids)]

    @property
    def from_trainid19(self) -> np.ndarray:
        """LUT (256,) mapping a 19-class train id label map to this protocol's class indices (else 255)."""
        return _lut({t: k for k, t in enumerate(self.train_ids)})

    def indices_within(self, other: "Protocol") -> list[int]:
        """Positions of this protocol's classes among `other`'s outputs (e.g. the 13 classes inside 16)."""
        missing = set(self.train_ids) - set(other.train_ids)
        if missing:
            raise ValueError(f"protocol {self.name} is not a subset of {other.name}")
        return [other.train_ids.index(t) for t in self.train_ids]


_DROP_16 = {9, 14, 16}  # terrain, truck, train: absent from SYNTHIA
_DROP_13 = _DROP_16 | {3, 4, 5}  # also wall, fence, pole
PROTOCOLS: dict[str, Protocol] = {
    "19": Protocol("19", tuple(range(19))),
    "16": Protocol("16", tuple(t for t in range(19) if t not in _DROP_16)),
    "13": Protocol("13", tuple(t for t in range(19) if t not in _DROP_13)),
}


def get_protocol(name: str | int) -> Protocol:
    try:
        return PROTOCOLS[str(name)]
    except KeyError:
        raise ValueError(f"unknown class protocol {name!r}; choose one of {sorted(PROTOCOLS)}") from None


def colorize(labels: np.ndarray, palette: np.ndarray = PALETTE_19, bgr: bool = True) -> np.ndarray:
    """Label map (H, W) of class indices -> colour image (H, W, 3); ignore/unknown indices are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = palette
    out = lut[labels.astype(np.uint8, copy=False)]
    return out[..., ::-1].copy() if bgr else out
