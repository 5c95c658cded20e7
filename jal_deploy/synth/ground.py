"""The ground plane, vectorised: every pixel below the horizon is back-projected to (X, Z) on the road.

Labels come from where the point lies (road, sidewalk, verge: terrain or paving, cross street); materials
add lane markings, crosswalk stripes, kerbs, paving joints and tram rails, which stay labelled road or
sidewalk. Where things lie is decided at world Z (depth + the camera's z), so markings and verges stay put
under a driving camera; pixel-size decisions use the depth.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from jal_deploy.synth import materials as M
from jal_deploy.synth.canvas import Camera, Canvas

VERGE_PAVED, VERGE_TERRAIN = 0, 1


@dataclass
class Street:
    xl: float                  # road edges (world X, metres)
    xr: float
    sw_l: float                # sidewalk widths
    sw_r: float
    lane_lines: list[float]    # X of lane markings
    centre_line: float | None  # X of the solid centre line (two-way streets)
    crossing: tuple[float, float] | None = None  # Z range of a cross street
    rails: list[float] = field(default_factory=list)
    verge: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # side -> (z starts, kinds)

    @property
    def outer(self) -> tuple[float, float]:
        return self.xl - self.sw_l, self.xr + self.sw_r


def _thin(X, x, half, min_half):
    return np.abs(X - x) < np.maximum(half, min_half)


def paint_ground(cv: Canvas, cam: Camera, st: Street, terrain: bool) -> None:
    H, W = cv.pid.shape
    rows = np.arange(H) + 0.5
    below = rows > cam.horizon + 0.25
    cv.pid[~below] = cv.id(M.SKY, M.SKY)
    if not below.any():
        return
    r0 = int(np.argmax(below))
    Z = np.minimum(cam.f * cam.height / (rows[r0:] - cam.horizon), 5000.0)[:, None]   # (h, 1) depth
    X = (np.arange(W) + 0.5 - cam.cx)[None, :] * Z / cam.f                            # (h, W)
    Zw = Z + cam.z                                                                     # world Z of each row
    half_px = 0.5 * Z / cam.f                                                          # half a pixel, metres
    ol, orr = st.outer
    label = np.full(X.shape, M.SIDEWALK, np.uint8)
    road = (X >= st.xl) & (X <= st.xr)
    label[road] = M.ROAD
    for side, sel in ((-1, X < ol), (1, X > orr)):
        if side in st.verge:
            starts, kinds = st.verge[side]
            k = kinds[np.clip(np.searchsorted(starts, Zw[:, 0], side="right") - 1, 0, len(kinds) - 1)]
            if terrain:
                label[sel & (k[:, None] == VERGE_TERRAIN)] = M.TERRAIN
    if st.crossing:
        z0, z1 = st.crossing
        rowsel = (Zw >= z0) & (Zw <= z1)
        zc = rowsel & ~road
        label[zc & (Zw > z0 + 3.0) & (Zw < z1 - 3.0)] = M.ROAD
        label[zc & ((Zw <= z0 + 3.0) | (Zw >= z1 - 3.0))] = M.SIDEWALK
    mat = label.copy()
    # Markings: dashed lane lines, a solid centre line, solid edge lines; none inside the crossing.
    not_x = ~((Zw >= st.crossing[0]) & (Zw <= st.crossing[1])) if st.crossing else True
    dashed = (np.mod(Zw, 9.0) < 3.0)
    for x in st.lane_lines:
        mat[road & not_x & dashed & _thin(X, x, 0.07, half_px)] = M.LANE
    edges = [st.xl + 0.3, st.xr - 0.3] + ([st.centre_line] if st.centre_line is not None else [])
    for x in edges:
        mat[road & not_x & _thin(X, x, 0.08, half_px)] = M.LANE
    for x in st.rails:
        mat[road & _thin(X, x, 0.05, half_px * 0.8)] = M.RAIL
    if st.crossing:  # zebra crossing just before the cross street
        zb = (Zw >= st.crossing[0] - 4.0) & (Zw <= st.crossing[0] - 0.8)
        mat[road & zb & (np.mod(X - st.xl, 1.1) < 0.55)] = M.LANE
    # Kerb stones and paving joints (joints only where a tile spans several pixels).
    side_walk = (label == M.SIDEWALK)
    kerb = side_walk & (((X < st.xl) & (X > st.xl - 0.25)) | ((X > st.xr) & (X < st.xr + 0.25)))
    mat[kerb] = M.KERB
    near = Z < 0.1 * cam.f
    joints = side_walk & ~kerb & near & ((np.mod(X, 0.9) < 0.06) | (np.mod(Zw, 0.9) < 0.06))
    # Ground pixels -> primitive ids: the material decides the label (markings are road, kerbs sidewalk).
    key = mat.astype(np.int32) + 64 * joints
    lut = np.zeros(128, np.int32)
    for k in np.flatnonzero(np.bincount(key.ravel(), minlength=128)):
        m = k % 64
        cls = {M.LANE: M.ROAD, M.RAIL: M.ROAD, M.KERB: M.SIDEWALK}.get(m, m)
        lut[k] = cv.id(cls, m, (0.8,) * 3 if k >= 64 else (1, 1, 1))
    cv.pid[r0:] = lut[key]
