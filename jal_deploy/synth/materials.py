"""Materials: what a pixel looks like, independent of the class it is labelled with.

The scene paints a material index per pixel next to its label. Indices 0..18 are the base material of the
19 Cityscapes train classes (road asphalt, sidewalk paving, facade, leaves...); the detail materials after
them (windows, lane markings, tyres, lamps, skin...) let one class show several appearances, the way real
objects do, without touching the label. Colours here are the *unstyled* world; every domain style in
`styles.py` transforms this table (hue, saturation, swaps) before rendering.
"""
from __future__ import annotations

import numpy as np

from jal_deploy.labels import CLASS_NAMES_19

N_CLASSES = len(CLASS_NAMES_19)
# The train ids double as base materials (looked up by name, never restated).
(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK,
 BUS, TRAIN, MOTORCYCLE, BICYCLE) = (CLASS_NAMES_19.index(n) for n in (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"))

# detail materials
(WINDOW, WINDOW_LIT, LANE, KERB, GLASS, TYRE, LAMP_RED, LAMP_AMBER, LAMP_GREEN, HEADLIGHT, TAILLIGHT,
 HOUSING, TRUNK, SKIN, TROUSERS, SIGN_BLUE, SIGN_RED, SIGN_WHITE, ROOF, RAIL, HOOD, STATIC) = range(19, 41)
N_MATERIALS = 41

# name: (RGB, fine texture, mid texture, coarse texture); texture amplitudes in grey levels (0..255 scale).
# Person/rider/vehicle bodies are near-neutral: the per-object tint gives them their paint or clothes.
_TABLE: dict[int, tuple[tuple[int, int, int], float, float, float]] = {
    ROAD: ((84, 80, 88), 7, 3, 6),
    SIDEWALK: ((176, 160, 138), 5, 4, 6),
    BUILDING: ((150, 112, 96), 4, 4, 10),
    WALL: ((158, 158, 166), 5, 3, 8),
    FENCE: ((128, 96, 64), 4, 3, 4),
    POLE: ((96, 100, 108), 2, 1, 2),
    LIGHT: ((44, 44, 40), 2, 1, 1),
    SIGN: ((225, 190, 40), 2, 1, 1),
    VEGETATION: ((62, 116, 44), 16, 14, 8),
    TERRAIN: ((150, 162, 86), 10, 6, 8),
    SKY: ((136, 178, 226), 1, 2, 10),
    PERSON: ((150, 150, 150), 3, 2, 2),
    RIDER: ((150, 150, 150), 3, 2, 2),
    CAR: ((150, 150, 150), 2, 1, 2),
    TRUCK: ((196, 196, 190), 2, 2, 3),
    BUS: ((186, 60, 48), 2, 1, 2),
    TRAIN: ((214, 208, 196), 2, 1, 2),
    MOTORCYCLE: ((70, 70, 76), 3, 1, 1),
    BICYCLE: ((150, 150, 150), 2, 1, 1),
    WINDOW: ((58, 70, 88), 3, 2, 2),
    WINDOW_LIT: ((206, 196, 150), 3, 2, 2),
    LANE: ((228, 226, 214), 3, 1, 2),
    KERB: ((192, 190, 184), 3, 2, 3),
    GLASS: ((42, 52, 64), 2, 1, 2),
    TYRE: ((24, 24, 26), 2, 1, 1),
    LAMP_RED: ((236, 48, 36), 2, 0, 0),
    LAMP_AMBER: ((244, 170, 36), 2, 0, 0),
    LAMP_GREEN: ((44, 224, 128), 2, 0, 0),
    HEADLIGHT: ((250, 248, 228), 1, 0, 0),
    TAILLIGHT: ((178, 24, 24), 2, 0, 0),
    HOUSING: ((36, 36, 34), 2, 1, 1),
    TRUNK: ((92, 70, 50), 6, 4, 2),
    SKIN: ((206, 164, 134), 2, 1, 1),
    TROUSERS: ((150, 150, 150), 3, 2, 1),
    SIGN_BLUE: ((36, 76, 176), 2, 1, 1),
    SIGN_RED: ((204, 36, 36), 2, 1, 1),
    SIGN_WHITE: ((236, 236, 232), 2, 1, 1),
    ROOF: ((96, 84, 80), 5, 4, 8),
    RAIL: ((126, 124, 122), 2, 1, 1),
    HOOD: ((38, 40, 46), 2, 1, 4),
    STATIC: ((74, 90, 80), 3, 2, 2),
}
assert sorted(_TABLE) == list(range(N_MATERIALS))

BASE_RGB: np.ndarray = np.array([_TABLE[m][0] for m in range(N_MATERIALS)], dtype=np.float32)
TEXTURE_AMP: np.ndarray = np.array([_TABLE[m][1:] for m in range(N_MATERIALS)], dtype=np.float32)  # (M, 3)
