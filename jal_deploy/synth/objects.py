"""Street furniture, vegetation, people and vehicles as projected primitives.

Each function paints one object at world position (x, z) (metres, see canvas.py). Thin classes get a
minimum size in pixels (`minpx`, scaled with the frame width by the caller) so that poles, lights, signs
and people stay learnable at stride 8; they are also only placed within ~60 m (of the start of a drive).
Every random draw happens whether or not the object turns out visible, so a driving camera (canvas.py)
sees the same objects in every frame.
"""
from __future__ import annotations

import numpy as np

from jal_deploy.synth import materials as M
from jal_deploy.synth.canvas import IGNORE, ZNEAR, Camera, Canvas, box, quads_on_plane

CAR_PAINT = ((1.5, 0.32, 0.28), (0.32, 0.45, 1.2), (1.55, 1.55, 1.55), (0.3, 0.3, 0.33), (1.08, 1.1, 1.14),
             (0.35, 0.58, 0.45), (1.45, 1.2, 0.4), (0.6, 0.55, 0.5))
CLOTHES = ((0.35, 0.35, 0.4), (1.3, 0.3, 0.3), (0.35, 0.5, 1.1), (1.4, 1.4, 1.35), (0.5, 0.8, 0.45),
           (1.3, 1.05, 0.5), (0.75, 0.6, 0.45), (0.9, 0.4, 0.95))


def jitter(rng, base=(1.0, 1.0, 1.0), j=0.1):
    return np.asarray(base) * (1.0 + rng.uniform(-j, j)) * (1.0 + rng.uniform(-j / 2, j / 2, 3))


def _seg(p0, p1, w):
    """Quad of width w around the segment p0-p1 (2-D points)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    n = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-6) * w / 2
    return np.array([p0 + n, p1 + n, p1 - n, p0 - n])


class Flat:
    """A vertical cut-out at depth z: draw in metres (dx right of x, y up) mapped to pixels."""

    def __init__(self, cam: Camera, x: float, z: float, grow: float = 1.0):
        self.u0, self.v0 = cam.project(x, 0.0, z)
        self.k = cam.px(1.0, z) * grow

    def p(self, dx, y):
        return np.array([self.u0 + dx * self.k, self.v0 - y * self.k])


def pole(cv: Canvas, cam: Camera, x, z, height, minpx, width=0.22):
    w = max(width, cam.metres(minpx, z))
    box(cv, cam, x - w / 2, x + w / 2, 0.0, height, z, z + w, M.POLE, M.POLE, (1, 1, 1))
    return w


def street_lamp(cv, cam, rng, x, z, direction, minpx):
    h = rng.uniform(5.0, 7.5)
    w = pole(cv, cam, x, z, h, minpx)
    arm = rng.uniform(1.2, 2.2)
    xa = sorted((x, x + direction * arm))
    box(cv, cam, xa[0], xa[1], h - 0.35 * w / 0.22 - 0.05, h - 0.05, z, z + w, M.POLE, M.POLE)
    xe = x + direction * arm
    box(cv, cam, xe - 0.35, xe + 0.35, h - 0.45, h - 0.15, z - 0.1, z + 0.3, M.POLE, M.HOUSING)


def traffic_light(cv, cam, rng, x, z, minpx, arm=0.0):
    """Pole with a light housing on top, or (arm != 0) hanging from an arm over the road."""
    h = rng.uniform(3.0, 4.0) if arm == 0 else rng.uniform(5.2, 6.2)
    pole(cv, cam, x, z, h + (0.0 if arm == 0 else 0.3), minpx)
    g = max(1.0, minpx * 1.4 / cam.px(0.36, z))  # grow tiny lights to stay learnable
    hw, hh = 0.18 * g, 0.5 * g
    xl = x + arm
    if arm:
        lo, hi = sorted((x, xl))
        box(cv, cam, lo, hi, h, h + 0.22 * g, z, z + 0.22, M.POLE, M.POLE)
    y0 = h - 2 * hh - 0.1 if arm else h - 0.3
    box(cv, cam, xl - hw, xl + hw, y0, y0 + 2 * hh, z - 0.25, z, M.LIGHT, M.HOUSING)
    fl = Flat(cam, xl, z - 0.26)
    slot = int(rng.integers(3))
    lamp = (M.LAMP_RED, M.LAMP_AMBER, M.LAMP_GREEN)[slot]
    cv.ellipse(fl.p(0, y0 + 2 * hh * (0.82 - 0.32 * slot)), (0.12 * g * fl.k,) * 2, M.LIGHT, lamp)


def sign(cv, cam, rng, x, z, minpx):
    h = rng.uniform(2.0, 2.8)
    pole(cv, cam, x, z, h, minpx * 0.8)
    s = max(rng.uniform(0.6, 0.9), cam.metres(minpx * 2.5, z)) / 2
    fl = Flat(cam, x, z - 0.05)
    c = fl.p(0, h + s * 0.9)
    r = s * fl.k
    kind = int(rng.integers(4))
    if kind == 0:      # prohibition: red ring, white face
        cv.ellipse(c, (r, r), M.SIGN, M.SIGN_RED)
        cv.ellipse(c, (r * 0.72, r * 0.72), M.SIGN, M.SIGN_WHITE)
    elif kind == 1:    # warning triangle
        tri = np.array([[0, 1.0], [-0.95, -0.7], [0.95, -0.7]])
        cv.polys([c + tri * [r, -r]], M.SIGN, M.SIGN_RED)
        cv.polys([c + tri * [r * 0.62, -r * 0.62]], M.SIGN, M.SIGN_WHITE)
    elif kind == 2:    # blue mandatory / information
        cv.polys([c + np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * r], M.SIGN, M.SIGN_BLUE)
    else:              # priority road diamond (the Cityscapes sign colour)
        cv.polys([c + np.array([[0, -1.2], [1.2, 0], [0, 1.2], [-1.2, 0]]) * r], M.SIGN, M.SIGN)


def tree(cv, cam, rng, x, z, minpx, scale=1.0, tint=(1, 1, 1)):
    """Trunk (labelled vegetation, as in Cityscapes) and a crown of 3-5 overlapping ellipses."""
    th, r = rng.uniform(1.8, 3.2) * scale, rng.uniform(1.6, 3.2) * scale
    n = int(rng.integers(3, 6))
    d = rng.uniform(-0.55, 0.55, (n, 4)) * [1.0, 0.73, 0.27, 0.18] + [0.0, 0.05, 0.7, 0.9]  # dx, dy, a, aspect
    shade = rng.uniform(0.85, 1.1, n)
    t = jitter(rng, tint, 0.12)
    if cam.px(r, z) < 1.5:   # a speck: not worth drawing
        return
    trunk_w = max(0.3 * scale, cam.metres(minpx * 0.6, z))
    box(cv, cam, x - trunk_w / 2, x + trunk_w / 2, 0, th + 0.5, z, z + trunk_w, M.VEGETATION, M.TRUNK)
    fl = Flat(cam, x, z)
    for (dx, dy, a, asp), sh in zip(d * r, shade):
        a *= fl.k
        cv.ellipse(fl.p(dx, th + r * 0.8 + dy), (a, a * asp / r), M.VEGETATION, M.VEGETATION, t * sh)


def person(cv, cam, rng, x, z, cls=M.PERSON, height=None, fl=None, inst=None, scale=1.0):
    """Standing/walking pedestrian as a flat cut-out facing the camera (`scale`: of the drawn height)."""
    inst = inst or cv.new_instance(cls)
    H = (height or rng.uniform(1.55, 1.95)) * scale
    fl = fl or Flat(cam, x, z)
    shirt, legs = jitter(rng, CLOTHES[rng.integers(len(CLOTHES))]), jitter(rng, CLOTHES[rng.integers(len(CLOTHES))])
    skin = jitter(rng, (1, 1, 1), 0.25)
    stride = rng.uniform(0.0, 0.1) * H
    for sgn in (-1, 1):
        cv.polys([_seg(fl.p(sgn * 0.05 * H, 0.5 * H), fl.p(sgn * (0.05 * H + stride), 0.02), 0.085 * H * fl.k)],
                 cls, M.TROUSERS, legs, inst)
    torso = [fl.p(-0.125 * H, 0.81 * H), fl.p(0.125 * H, 0.81 * H), fl.p(0.095 * H, 0.47 * H),
             fl.p(-0.095 * H, 0.47 * H)]
    cv.polys([np.array(torso)], cls, cls, shirt, inst)
    swing = rng.uniform(-0.06, 0.06) * H
    for sgn in (-1, 1):
        hand = fl.p(sgn * 0.15 * H + swing * sgn, 0.46 * H)
        cv.polys([_seg(fl.p(sgn * 0.125 * H, 0.8 * H), hand, 0.06 * H * fl.k)], cls, cls, shirt, inst)
        cv.ellipse(hand, (0.03 * H * fl.k,) * 2, cls, M.SKIN, skin, inst)
    cv.ellipse(fl.p(0, 0.9 * H), (0.058 * H * fl.k, 0.07 * H * fl.k), cls, M.SKIN, skin, inst)
    return inst


def two_wheeler(cv, cam, rng, x, z, motor: bool, rider: bool, minpx):
    """Side view of a bicycle or motorcycle (label 18/17), optionally with a rider (label 12)."""
    cls = M.MOTORCYCLE if motor else M.BICYCLE
    fl = Flat(cam, x, z, grow=max(1.0, minpx * 3 / cam.px(1.0, z)))
    d = 1.0 if rng.random() < 0.5 else -1.0
    inst = cv.new_instance(cls)
    wb, r = (0.72, 0.32) if motor else (0.52, 0.34)
    t = max(2.0, 0.06 * fl.k)
    for sx in (-1, 1):
        c = fl.p(sx * wb * d, r)
        if motor:
            cv.ellipse(c, (r * fl.k,) * 2, cls, M.TYRE, (1, 1, 1), inst)
        else:
            cv.ellipse(c, (r * fl.k,) * 2, cls, M.TYRE, (1, 1, 1), inst, thickness=t)
    paint = jitter(rng, CAR_PAINT[rng.integers(len(CAR_PAINT))])
    if motor:
        body = [(-0.78, 0.55), (-0.25, 0.9), (0.45, 1.0), (0.75, 0.6), (0.15, 0.3)]
        cv.polys([np.array([fl.p(bx * d, by) for bx, by in body])], cls, M.MOTORCYCLE, paint, inst)
        seat, bar = (-0.25, 1.0), (0.5, 1.15)
    else:
        rear, front, bb = (-wb, r), (wb, r), (-0.03, 0.3)
        seat, head, bar = (-0.22, 0.95), (0.38, 0.98), (0.34, 1.1)
        for a, b in ((rear, bb), (rear, seat), (seat, bb), (seat, head), (bb, head), (head, front), (head, bar)):
            cv.line(fl.p(a[0] * d, a[1]), fl.p(b[0] * d, b[1]), t, cls, M.BICYCLE, paint, inst)
    if rider:
        ri = cv.new_instance(M.RIDER)
        shirt, legs = jitter(rng, CLOTHES[rng.integers(len(CLOTHES))]), jitter(rng, CLOTHES[rng.integers(len(CLOTHES))])
        hip = np.array(seat) + (0, 0.05)
        sh, knee, foot = hip + (0.25, 0.55), hip + (0.35, -0.2), (0.0, 0.32)
        P = lambda q: fl.p(q[0] * d, q[1])  # noqa: E731
        cv.polys([_seg(P(hip), P(knee), 0.15 * fl.k), _seg(P(knee), P(foot), 0.12 * fl.k)],
                 M.RIDER, M.TROUSERS, legs, ri)
        cv.polys([_seg(P(hip), P(sh), 0.3 * fl.k)], M.RIDER, M.RIDER, shirt, ri)
        cv.polys([_seg(P(sh), P(bar), 0.09 * fl.k)], M.RIDER, M.RIDER, shirt, ri)
        head = P(sh + (0.1, 0.2))
        cv.ellipse(head, (0.12 * fl.k, 0.13 * fl.k), M.RIDER, M.HOUSING if motor else M.SKIN, (1, 1, 1), ri)


VEHICLE_LENGTH = {"car": (4.0, 4.8), "truck": (7.5, 10.0), "bus": (10.5, 12.5), "tram": (18.0, 28.0)}
VEHICLE_HALF_WIDTH = {"car": 0.98, "truck": 1.23, "bus": 1.28, "tram": 1.2}


def vehicle(cv, cam, rng, kind, xc, z0, facing, L, tint_jitter=0.1, scale=1.0):
    """Car / truck / bus / tram of length L seen from behind (facing=+1) or from the front (facing=-1);
    `scale` multiplies its width and height (the caller scales L)."""
    cls = {"car": M.CAR, "truck": M.TRUCK, "bus": M.BUS, "tram": M.TRAIN}[kind]
    inst = cv.new_instance(cls)
    w = (rng.uniform(1.7, 1.95) if kind == "car" else 2 * VEHICLE_HALF_WIDTH[kind]) * scale
    H = {"car": rng.uniform(1.35, 1.6), "truck": rng.uniform(3.2, 3.8), "bus": 3.1, "tram": 3.3}[kind] * scale
    x0, x1, z1 = xc - w / 2, xc + w / 2, z0 + L
    paint = jitter(rng, CAR_PAINT[rng.integers(len(CAR_PAINT))] if kind in ("car", "truck") else (1, 1, 1),
                 tint_jitter)
    for wx in ((x0 - 0.02, x0 + 0.26), (x1 - 0.26, x1 + 0.02)):
        for wz in ((z0 + 0.6, z0 + 1.25), (z1 - 1.25, z1 - 0.6)):
            box(cv, cam, *wx, 0.0, 0.64, *wz, cls, M.TYRE, (1, 1, 1), inst)
    lamp = M.TAILLIGHT if facing > 0 else M.HEADLIGHT
    if kind == "car":
        yb = 0.28 + 0.45 * H
        box(cv, cam, x0, x1, 0.28, yb, z0, z1, cls, M.CAR, paint, inst)
        cz = (z0 + 0.22 * L, z1 - 0.2 * L) if facing > 0 else (z0 + 0.3 * L, z1 - 0.15 * L)
        box(cv, cam, x0 + 0.1, x1 - 0.1, yb, H, *cz, cls, M.CAR, paint, inst, near_mat=M.GLASS, side_mat=M.GLASS)
        lamps = quads_on_plane(cam, "z", z0 - 0.01, [x0 + 0.08, x1 - 0.38], [x0 + 0.38, x1 - 0.08],
                               [yb - 0.24] * 2, [yb - 0.06] * 2)
        cv.polys(lamps, cls, lamp, (1, 1, 1), inst)
        return
    if kind == "truck":
        cab = 2.3
        cz, gz = ((z1 - cab, z1), (z0, z1 - cab - 0.3)) if facing > 0 else ((z0, z0 + cab), (z0 + cab + 0.3, z1))
        cab_t = jitter(rng, CAR_PAINT[rng.integers(len(CAR_PAINT))], tint_jitter)
        box(cv, cam, x0, x1, 0.5, H, *gz, cls, M.TRUCK, paint * 0.6 + 0.45, inst)
        box(cv, cam, x0 + 0.05, x1 - 0.05, 0.5, 2.9, *cz, cls, M.CAR, cab_t, inst)
        if facing < 0:
            cv.polys(quads_on_plane(cam, "z", z0 - 0.01, [x0 + 0.2], [x1 - 0.2], [1.8], [2.7]), cls, M.GLASS,
                     (1, 1, 1), inst)
        cv.polys(quads_on_plane(cam, "z", (gz if facing > 0 else cz)[0] - 0.01, [x0 + 0.1, x1 - 0.4],
                                [x0 + 0.4, x1 - 0.1], [0.7] * 2, [0.9] * 2), cls, lamp, (1, 1, 1), inst)
        return
    base = M.BUS if kind == "bus" else M.TRAIN
    box(cv, cam, x0, x1, 0.3, H, z0, z1, cls, base, paint, inst)
    n = max(1, int((L - 2.5) / 1.5))
    zs = z0 + 1.4 + np.arange(n) * 1.5
    keep = zs - cam.z > ZNEAR
    xs = x0 if x0 > 0 else x1 if x1 < 0 else None
    if xs is not None and keep.any():
        cv.polys(quads_on_plane(cam, "x", xs, zs[keep], zs[keep] + 1.25, np.full(keep.sum(), 1.35),
                                np.full(keep.sum(), 2.55)), cls, M.GLASS, (1, 1, 1), inst)
    cv.polys(quads_on_plane(cam, "z", z0 - 0.01, [x0 + 0.15], [x1 - 0.15], [1.2], [2.75]), cls, M.GLASS,
             (1, 1, 1), inst)
    cv.polys(quads_on_plane(cam, "z", z0 - 0.01, [x0 + 0.1, x1 - 0.4], [x0 + 0.4, x1 - 0.1], [0.55] * 2,
                            [0.8] * 2), cls, lamp, (1, 1, 1), inst)
    if kind == "tram" and z0 + L / 2 - cam.z > ZNEAR + 0.3:  # pantograph (unless a driving camera passed it)
        fl = Flat(cam, xc, z0 + L / 2)
        for a, b in (((-0.5, H), (0.0, H + 0.9)), ((0.5, H), (0.0, H + 0.9)), ((-0.8, H + 0.9), (0.8, H + 0.9))):
            cv.line(fl.p(*a), fl.p(*b), max(1.5, 0.08 * fl.k), cls, M.HOUSING, (1, 1, 1), inst)


def static_object(cv, cam, rng, x, z):
    """Bin or bollard: labelled void with Cityscapes id 4 ('static'), as such objects are in Cityscapes."""
    w, h = (0.55, 1.0) if rng.random() < 0.6 else (0.22, 0.9)
    box(cv, cam, x - w / 2, x + w / 2, 0, h, z, z + w, IGNORE, M.STATIC, jitter(rng), void=4)
