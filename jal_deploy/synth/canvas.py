"""Pinhole camera over a flat ground plane, and a canvas that paints label, instance and material at once.

World: X to the right, Y up (ground at Y = 0), Z forward; the camera sits at (0, height, z) looking along Z
(z = 0 for a still frame; a driving camera moves z forward through the same world, so everything that
turns a world Z into a depth goes through the camera and clips at ZNEAR in front of it).
Primitives are painted far to near (painter's algorithm) as ids into one buffer, from which label,
instance, material and tint maps are expanded at the end, so they can never disagree.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from jal_deploy.labels import IGNORE

ZNEAR = 0.6          # metres: geometry closer than this is clipped
SHIFT = 3            # OpenCV fixed-point bits: sub-pixel vertices (1/8 px)
_ONE = 1 << SHIFT


@dataclass(frozen=True)
class Camera:
    width: int
    height_px: int
    f: float          # focal length, pixels
    cx: float         # column of the vanishing point
    horizon: float    # row of the horizon
    height: float     # camera height above the ground, metres
    z: float = 0.0    # camera position along world Z, metres (how far it has driven)

    def project(self, X, Y, Z):
        """World points -> pixel (u, v); depths closer than ZNEAR are clamped to it."""
        Z = np.maximum(np.asarray(Z, dtype=np.float64) - self.z, ZNEAR)
        return self.cx + self.f * np.asarray(X) / Z, self.horizon + self.f * (self.height - np.asarray(Y)) / Z

    def px(self, metres: float, z: float) -> float:
        """Size in pixels of `metres` seen at world Z = z."""
        return self.f * metres / max(z - self.z, ZNEAR)

    def metres(self, pixels: float, z: float) -> float:
        return pixels * max(z - self.z, ZNEAR) / self.f


def _tint(t) -> tuple[int, int, int]:
    return tuple(min(255, max(0, int(round(float(v) * 128)))) for v in t)


def _fixed(points) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64) * _ONE).astype(np.int32)


class Canvas:
    """A primitive-id buffer: every paint call draws one integer into `pid`, and `rows[pid]` holds what
    that primitive is: (train id, material, instance index, void label id, tint R, G, B).

    One OpenCV call per primitive keeps the painter's algorithm cheap; `maps()` expands the ids into the
    label / instance / material / tint / void maps at the end, so they can never disagree.
    Tint is an RGB multiplier (128 = 1.0); void is the Cityscapes label id written where the label is void
    (0 unlabeled, 1 ego vehicle, 4 static).
    """

    def __init__(self, width: int, height: int):
        self.pid = np.zeros((height, width), np.int32)
        self.rows: list[tuple[int, ...]] = [(IGNORE, 0, 0, 0, 128, 128, 128)]
        self._ids: dict[tuple[int, ...], int] = {self.rows[0]: 0}
        self.inst_class: list[int] = [IGNORE]

    def new_instance(self, cls: int) -> int:
        self.inst_class.append(int(cls))
        return len(self.inst_class) - 1

    def id(self, cls, mat, tint=(1, 1, 1), inst=0, void=0) -> int:
        key = (int(cls), int(mat), int(inst), int(void) if cls == IGNORE else 0, *_tint(tint))
        i = self._ids.get(key)
        if i is None:
            i = self._ids[key] = len(self.rows)
            self.rows.append(key)
        return i

    def polys(self, polys, cls, mat, tint=(1, 1, 1), inst=0, void=0):
        if len(polys) == 0:
            return
        try:  # one conversion for a batch of same-sized polygons
            pts = list(_fixed(np.asarray(polys, dtype=np.float64)))
        except ValueError:
            pts = [_fixed(p) for p in polys]
        cv2.fillPoly(self.pid, pts, self.id(cls, mat, tint, inst, void), cv2.LINE_8, SHIFT)

    def ellipse(self, centre, axes, cls, mat, tint=(1, 1, 1), inst=0, angle=0.0, thickness=-1, void=0):
        c, a = tuple(int(v) for v in _fixed(centre)), tuple(int(max(v, 1)) for v in _fixed(axes))
        t = thickness if thickness < 0 else max(1, int(round(thickness)))
        cv2.ellipse(self.pid, c, a, angle, 0, 360, self.id(cls, mat, tint, inst, void), t, cv2.LINE_8, SHIFT)

    def line(self, p0, p1, width, cls, mat, tint=(1, 1, 1), inst=0):
        a, b = tuple(int(v) for v in _fixed(p0)), tuple(int(v) for v in _fixed(p1))
        cv2.line(self.pid, a, b, self.id(cls, mat, tint, inst), max(1, int(round(width))), cv2.LINE_8, SHIFT)

    def shade(self, polys, factor: float):
        """Darken whatever is under the polygons (contact shadows on the ground); labels untouched."""
        mask = np.zeros(self.pid.shape, np.uint8)
        cv2.fillPoly(mask, [_fixed(p) for p in polys], 1, cv2.LINE_8, SHIFT)
        under = np.flatnonzero(np.bincount(self.pid[mask > 0], minlength=len(self.rows)))
        lut = np.arange(len(self.rows), dtype=np.int32)
        for i in under:
            cls, mat, inst, void, *t = self.rows[i]
            lut[i] = self.id(cls, mat, np.array(t) / 128.0 * factor, inst, void)
        self.pid[mask > 0] = lut[self.pid[mask > 0]]

    def maps(self) -> dict[str, np.ndarray]:
        tab = np.array(self.rows, dtype=np.int32)
        col = lambda c, dt: np.take(np.ascontiguousarray(tab[:, c].astype(dt)), self.pid, axis=0)  # noqa: E731
        return {"label": col(0, np.uint8), "material": col(1, np.uint8), "instances": col(2, np.uint16),
                "void": col(3, np.uint8), "tint": col(slice(4, 7), np.uint8)}


# corner index = 4*iz + 2*iy + ix over (x0|x1, y0|y1, z0|z1); faces as corner indices
_NEAR, _LEFT, _RIGHT, _TOP = (0, 1, 3, 2), (0, 4, 6, 2), (1, 5, 7, 3), (2, 3, 7, 6)
_BITS = np.array([[i & 1, (i >> 1) & 1, i >> 2] for i in range(8)])


def box(cv: Canvas, cam: Camera, x0, x1, y0, y1, z0, z1, cls, mat, tint=(1, 1, 1), inst=0,
        near_mat=None, side_mat=None, top_mat=None, void=0):
    """Axis-aligned box: paints the faces the camera sees (the side facing it, the top, the near face)."""
    if z1 - cam.z <= ZNEAR:
        return
    z0 = max(z0, cam.z + ZNEAR)
    c = np.where(_BITS, (x1, y1, z1), (x0, y0, z0))
    uv = np.stack(cam.project(c[:, 0], c[:, 1], c[:, 2]), 1)
    t = tuple(float(v) for v in tint)
    side = side_mat if side_mat is not None else mat
    if x0 > 0:
        cv.polys([uv[list(_LEFT)]], cls, side, [v * 0.78 for v in t], inst, void)
    if x1 < 0:
        cv.polys([uv[list(_RIGHT)]], cls, side, [v * 0.78 for v in t], inst, void)
    if y1 < cam.height:
        cv.polys([uv[list(_TOP)]], cls, top_mat if top_mat is not None else mat, [v * 1.12 for v in t], inst, void)
    cv.polys([uv[list(_NEAR)]], cls, near_mat if near_mat is not None else mat, t, inst, void)


def quads_on_plane(cam: Camera, axis: str, const: float, a0, a1, b0, b1) -> list[np.ndarray]:
    """Projected rectangles [a0,a1]x[b0,b1] on the plane X=const (a=Z, b=Y) or Z=const (a=X, b=Y).

    Rectangles wholly behind the near plane are dropped (a moving camera passes them); on X=const the
    projection's depth clamp clips the rest exactly, as X and Y are fixed along each edge.
    """
    a0, a1, b0, b1 = (np.asarray(v, dtype=np.float64) for v in (a0, a1, b0, b1))
    if axis == "x":
        ahead = a1 - cam.z > ZNEAR
        a0, a1, b0, b1 = (v[ahead] for v in (a0, a1, b0, b1))
    elif const - cam.z <= ZNEAR:
        return []
    corners_a = np.stack([a0, a1, a1, a0], 1)
    corners_b = np.stack([b0, b0, b1, b1], 1)
    if axis == "x":
        u, v = cam.project(np.full_like(corners_a, const), corners_b, corners_a)
    else:
        u, v = cam.project(corners_a, corners_b, np.full_like(corners_a, const))
    return list(np.stack([u, v], 2))
