"""Procedural street scene -> train-id label map, instance map and appearance maps (material, tint).

One street per frame: a straight road (lanes, parking strips, markings, maybe a cross street with a zebra
crossing and traffic lights), sidewalks, and blocks along each side that are buildings (with windows) or
green verges (terrain, trees, a treeline or a set-back building), fronted by walls, fences or hedges.
Street objects (poles, lamps, lights, signs, trees, bins, people, riders, vehicles, trams) are placed in
world coordinates and painted far to near. All randomness comes from the generator passed in.

A street video drives the camera `travel` metres along Z through one world (`drive` > 0 is the length of
the whole drive). Its world must not change between frames, so in drive mode the layout is drawn from the
generator exactly as for a still (nothing depends on `travel`), the world reaches `drive` metres further,
and each object paints from its own generator seeded from its place in the layout: then objects the
camera has passed can be skipped, and moving vehicles can change the painting order, without shifting
anyone else's draws. drive = travel = 0 is the still frame of the benchmark, byte for byte.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jal_deploy.synth import materials as M
from jal_deploy.synth import objects as O
from jal_deploy.synth.canvas import IGNORE, ZNEAR, Camera, Canvas, box, quads_on_plane
from jal_deploy.synth.ground import VERGE_PAVED, VERGE_TERRAIN, Street, paint_ground
from jal_deploy.synth.styles import Domain

FACADES = ((1.0, 1.0, 1.0), (1.2, 1.14, 1.04), (0.86, 0.92, 1.0), (1.12, 0.84, 0.78), (1.28, 1.26, 1.2))
Z_FAR = 180.0
EGO_CLEAR = 1.8   # drive mode: no standing rider or pedestrian within this |X| (the ego car's path)


@dataclass
class Scene:
    label: np.ndarray        # (H, W) uint8 19-class train ids, 255 void
    instances: np.ndarray    # (H, W) uint16 instance index, 0 = none
    inst_class: np.ndarray   # (N + 1,) uint8 train id of each instance index (index 0 unused)
    void: np.ndarray         # (H, W) uint8 Cityscapes label id used where label is void
    material: np.ndarray     # (H, W) uint8, see materials.py
    tint: np.ndarray         # (H, W, 3) uint8 RGB multiplier, 128 = 1.0
    camera: Camera


def _poisson_z(rng, rate_per_100m, z0, z1, min_gap=0.0):
    if rate_per_100m <= 0:
        return []
    zs, z = [], z0 + rng.exponential(100.0 / rate_per_100m)
    while z < z1:
        zs.append(z)
        z += min_gap + rng.exponential(100.0 / rate_per_100m)
    return zs


def _street(rng, L, drive=0.0) -> tuple[Street, list[tuple[float, int]]]:
    n = int(rng.integers(L.lanes[0], L.lanes[1] + 1))
    lw = rng.uniform(3.0, 3.6)
    two_way = n >= 2 and rng.random() < 0.8
    pl, pr = 2.2 * (rng.random() < 0.5), 2.2 * (rng.random() < 0.6)
    facing = [(-1 if two_way and k < n // 2 else 1) for k in range(n)]
    own = int(rng.choice([k for k in range(n) if facing[k] > 0]))
    off = -(pl + (own + 0.5) * lw) + rng.uniform(-0.4, 0.4)
    lanes = [(off + pl + (k + 0.5) * lw, facing[k]) for k in range(n)]
    lines = [off + pl + k * lw for k in range(1, n) if not (two_way and k == n // 2)]
    st = Street(xl=off, xr=off + pl + n * lw + pr, sw_l=rng.uniform(*L.sidewalk), sw_r=rng.uniform(*L.sidewalk),
                lane_lines=lines, centre_line=off + pl + (n // 2) * lw if two_way else None)
    if pl:
        lanes.append((off + 1.1, 0))   # parking strips: facing 0 marks parked cars
    if pr:
        lanes.append((st.xr - 1.1, 0))
    if rng.random() < L.p_intersection:
        z0 = rng.uniform(14.0, 45.0 + 0.5 * drive)
        st.crossing = (z0, z0 + rng.uniform(10.0, 16.0))
    return st, lanes


def _blocks(rng, L, st: Street, z_far=Z_FAR):
    """Blocks along each side: (side, z0, z1, kind); fills st.verge for the ground pass."""
    spans = [(-8.0, st.crossing[0]), (st.crossing[1], z_far)] if st.crossing else [(-8.0, z_far)]
    out = []
    for side in (-1, 1):
        marks = []
        for a, b in spans:
            z = a - rng.uniform(0, 15)
            while z < b:
                e = min(z + rng.uniform(10, 35), b)
                kind = "building" if rng.random() < L.p_building else "green"
                out.append((side, z, e, kind))
                marks += [(z, 1, VERGE_TERRAIN if kind == "green" else VERGE_PAVED), (e, 0, VERGE_PAVED)]
                z = e + (rng.uniform(1, 4) if rng.random() < 0.3 else 0.0)
        marks.sort()
        st.verge[side] = (np.array([-1e9] + [m[0] for m in marks]), np.array([VERGE_PAVED] + [m[2] for m in marks]))
    return out


def _building(cv, cam, rng, xf, side, z0, z1, height, tint, drive=0.0):
    depth = rng.uniform(10, 25)
    x0, x1 = (xf - depth, xf) if side < 0 else (xf, xf + depth)
    box(cv, cam, x0, x1, 0, height, z0, z1, M.BUILDING, M.BUILDING, tint, top_mat=M.ROOF)
    sp, floor = rng.uniform(2.6, 3.6), rng.uniform(3.0, 3.5)
    lit = rng.uniform(0.0, 0.3)
    ys = np.arange(3.4, height - 1.5, floor)
    planes = [("x", xf, np.arange(z0 + sp / 2, z1 - 1.0, sp), 1.0)]
    if z0 > 2.0:  # the end wall, seen across gaps and cross streets
        planes.append(("z", z0 - 0.01, np.arange(min(x0, x1) + sp / 2, max(x0, x1) - 1.0, sp), z0))
    for axis, const, cols, zref in planes:
        A, Y = (g.ravel() for g in np.meshgrid(cols, ys))
        zc = A if axis == "x" else np.full_like(A, zref)
        # A window exists if it is big enough from the nearest camera of the drive (Z = drive), so its
        # lit/unlit draw is the same in every frame; this camera paints the existing ones it sees well.
        keep = (zc > 1.2) & (cam.f * 1.2 / np.maximum(zc - drive, 1.2) > 1.5)
        if axis == "x" and not keep.any():
            continue
        A, Y, d = A[keep], Y[keep], zc[keep] - cam.z
        on = rng.random(A.size) < lit
        seen = (d > 1.2) & (cam.f * 1.2 / np.maximum(d, 1.2) > 1.5)
        A, Y, on = A[seen], Y[seen], on[seen]
        for sel, mat in ((~on, M.WINDOW), (on, M.WINDOW_LIT)):
            cv.polys(quads_on_plane(cam, axis, const, A[sel] - 0.6, A[sel] + 0.6, Y[sel], Y[sel] + 1.5),
                     M.BUILDING, mat)
        if axis == "x":  # shop windows on the ground floor
            g = cols[cols - cam.z > 1.5]
            cv.polys(quads_on_plane(cam, "x", const, g - sp * 0.35, g + sp * 0.35, np.full(g.size, 0.4),
                                    np.full(g.size, 2.6)), M.BUILDING, M.GLASS)


def _frontage(cv, cam, rng, kind, x_edge, side, z0, z1, tint):
    h = {"wall": rng.uniform(0.6, 2.2), "fence": rng.uniform(1.0, 1.8), "hedge": rng.uniform(0.8, 1.6)}[kind]
    x0, x1 = (x_edge - 0.3, x_edge) if side < 0 else (x_edge, x_edge + 0.3)
    cls = {"wall": M.WALL, "fence": M.FENCE, "hedge": M.VEGETATION}[kind]
    box(cv, cam, x0, x1, 0, h, z0, z1, cls, cls, tint)
    if kind == "fence":  # vertical boards
        face = x1 if side < 0 else x0
        zs = np.arange(max(z0, 1.0), z1, 0.3)   # boards at fixed world Z, then those this camera sees
        d = zs - cam.z
        zs = zs[(d >= 1.0) & (cam.f * 0.07 / np.maximum(d, 1.0) > 0.7)]
        cv.polys(quads_on_plane(cam, "x", face, zs, zs + 0.07, np.zeros(zs.size), np.full(zs.size, h)),
                 M.FENCE, M.FENCE, tint * 0.6)


def _pace(xc: float, facing: int, drive: float) -> float:
    """Speed of a lane's traffic as a multiple of the ego car's; 0 in a still and for parked cars.

    The ego lane keeps pace (the car ahead keeps its distance, so the camera never drives through it),
    other lanes the same way are a little slower, oncoming traffic comes at about the ego car's speed.
    """
    if not drive or facing == 0:
        return 0.0
    if xc ** 2 < 2.0:
        return 1.0
    return 0.8 if facing > 0 else -0.9


def make_scene(domain: Domain, rng: np.random.Generator, width: int, height: int, travel: float = 0.0,
               drive: float = 0.0) -> Scene:
    """One frame: a still (travel = drive = 0) or the view `travel` metres into a drive of `drive` metres.

    For a given generator state and drive, every travel in [0, drive] sees the same world (module docstring).
    """
    if not 0.0 <= travel <= drive:
        raise ValueError(f"need 0 <= travel <= drive, got travel={travel}, drive={drive}")
    L, tj = domain.layout, domain.appearance.tint_jitter
    k = L.object_scale  # 1.0 in every benchmark style but the geometry shift: then x * k == x exactly
    minpx = 4.0 * width / 512.0     # poles at least 4 px wide at 512 px
    h = rng.uniform(*L.cam_height)
    hz = max(0.05, rng.uniform(*L.horizon) - L.horizon_per_metre * (h - L.cam_height[0]))
    cam = Camera(width, height, rng.uniform(*L.focal) * width, width * (0.5 + rng.uniform(-L.yaw, L.yaw)),
                 hz * height, h, z=float(travel))
    cv = Canvas(width, height)
    st, lanes = _street(rng, L, drive)
    blocks = _blocks(rng, L, st, Z_FAR + drive)
    ol, orr = st.outer
    cross = st.crossing or (-1.0, -1.0)
    in_cross = lambda z: cross[0] - 1.5 < z < cross[1] + 1.5  # noqa: E731
    # (layer, -depth, order, gone, painter, args, kw): layers 0 facades/background, 1 verge trees,
    # 2 walls/fences/hedges, 3 street objects; far to near within a layer (the painter's algorithm).
    layers: list[tuple] = []

    def add(layer, z, fn, *args, end=None, **kw):
        """Queue fn(cv, cam, rng, *args, **kw) at world Z = z; `end` is the far Z of a long object (block,
        vehicle). In drive mode what the camera has passed is `gone` and not painted."""
        gone = bool(drive) and ((end - travel <= ZNEAR) if end is not None else (z - travel <= ZNEAR + 0.3))
        layers.append((layer, -z, len(layers), gone, fn, args, kw))

    for side, z0, z1, kind in blocks:
        edge = ol if side < 0 else orr
        tint = O.jitter(rng, FACADES[rng.integers(len(FACADES))], tj)
        if kind == "building":
            setback = rng.uniform(0, 1.5) if rng.random() < 0.5 else 0.0
            add(0, z0, _building, edge + side * setback, side, z0, z1, rng.uniform(6, 30), tint, drive=drive,
                end=z1)
        else:
            if rng.random() < 0.5:
                add(0, z0, _building, edge + side * rng.uniform(12, 25), side, z0, z1, rng.uniform(8, 25), tint,
                    drive=drive, end=z1)
            else:
                for z in np.arange(z0, z1, rng.uniform(3.5, 6.0)):
                    add(0, z, O.tree, edge + side * rng.uniform(14, 22), z, minpx, rng.uniform(1.3, 2.0) * k)
            for _ in range(rng.poisson(L.verge_trees * (z1 - z0) / 20)):
                z = rng.uniform(max(z0, 2.0), max(z1, 2.5))
                add(1, z, O.tree, edge + side * rng.uniform(1.5, 10), z, minpx, rng.uniform(0.9, 1.4) * k)
        r, p_hedge = rng.random(), (0.1 if L.terrain else 0.3)
        frontage = "wall" if r < L.p_wall else "fence" if r < L.p_wall + L.p_fence else \
            "hedge" if r < L.p_wall + L.p_fence + p_hedge else None
        if frontage and (kind == "green" or rng.random() < 0.3):
            add(2, z0, _frontage, frontage, edge, side, z0, z1, O.jitter(rng, (1, 1, 1), tj), end=z1)

    # Street objects live within ~60 m of the camera; a drive extends each range (and count) by its length.
    for side, kerb, outer in ((-1, st.xl, ol), (1, st.xr, orr)):
        sw = abs(outer - kerb)
        for z in _poisson_z(rng, L.poles_per_100m, 3.0, 60.0 + drive, 4.0):
            if in_cross(z):
                continue
            r = rng.random()
            fn = O.street_lamp if r < 0.45 else O.sign if r < 0.85 else O.traffic_light
            kw = {"direction": -side} if fn is O.street_lamp else {}
            add(3, z, fn, kerb + side * 0.5, z, minpx=minpx, **kw)
        if L.street_tree_gap > 0 and sw > 2.4:
            z = rng.uniform(2.0, L.street_tree_gap)
            while z < 90.0 + drive:
                if not in_cross(z):
                    add(3, z, O.tree, outer - side * 0.9, z, minpx, k)
                z += L.street_tree_gap * rng.uniform(0.6, 1.4)
        for _ in range(rng.poisson(L.persons_per_100m * 0.4 * (1.0 + drive / 37.0))):
            z = rng.uniform(3.0, 40.0 + drive)
            add(3, z, O.person, rng.uniform(min(kerb, outer) + 0.4, max(kerb, outer) - 0.4), z, scale=k)
        for _ in range(rng.poisson(L.statics_per_100m * 0.5 * (1.0 + drive / 37.0))):
            z = rng.uniform(3.0, 40.0 + drive)
            add(3, z, O.static_object, kerb + side * rng.uniform(0.3, 1.0), z)
    if st.crossing:
        c0 = st.crossing[0]
        add(3, c0 - 1.0, O.traffic_light, st.xr + 0.6, c0 - 1.0, minpx)
        add(3, c0 - 0.5, O.traffic_light, st.xr + 0.6, c0 - 0.5, minpx, arm=-rng.uniform(2.5, 5.0))
        if rng.random() < 0.7:
            add(3, c0 - 1.0, O.traffic_light, st.xl - 0.6, c0 - 1.0, minpx)
        for _ in range(rng.poisson(1.5)):
            z = rng.uniform(c0 - 3.8, c0 - 1.0)
            x = rng.uniform(st.xl + 0.5, st.xr - 0.5)
            if not (drive and abs(x) < EGO_CLEAR):  # a drive does not run anyone over
                add(3, z, O.person, x, z, scale=k)
    for _ in range(rng.poisson(L.riders * (1.0 + drive / 30.0))):
        z = rng.uniform(5.0, 35.0 + drive)
        x = st.xr - 1.0 if rng.random() < 0.6 else st.xl + 1.0
        motor = rng.random() < 0.4
        if not (drive and abs(x) < EGO_CLEAR):
            add(3, z, O.two_wheeler, x, z, motor=motor, rider=True, minpx=minpx)
    for _ in range(rng.poisson(L.parked_bikes * (1.0 + drive / 22.0))):
        z, side = rng.uniform(3.0, 25.0 + drive), (-1 if rng.random() < 0.5 else 1)
        add(3, z, O.two_wheeler, (ol, orr)[side > 0] - side * 0.7, z, motor=rng.random() < 0.3, rider=False,
            minpx=minpx)

    tram_lane = None
    moving = [i for i, (_, f) in enumerate(lanes) if f != 0]
    if rng.random() < L.p_tram and len(moving) >= 2:
        tram_lane = int(rng.choice(moving))
        st.rails = [lanes[tram_lane][0] - 0.72, lanes[tram_lane][0] + 0.72]
    footprints = []
    for i, (xc, facing) in enumerate(lanes):
        pace = _pace(xc, facing, drive)
        if i == tram_lane:
            plan = [(rng.uniform(8.0, 40.0), "tram", rng.uniform(*O.VEHICLE_LENGTH["tram"]) * k)]
        else:
            rate = L.parked_per_100m if facing == 0 else L.cars_per_100m
            plan = []
            z = (6.0 if xc ** 2 < 2.0 else 1.0) + (rng.exponential(100.0 / rate) if rate > 0 else 1e9)
            while z < 110.0 + (1.0 - pace) * drive:   # enough traffic to last the drive
                r = rng.random()
                kind = "bus" if facing and r < L.p_bus else "truck" if facing and r < L.p_bus + L.p_truck else "car"
                length = rng.uniform(*O.VEHICLE_LENGTH[kind]) * k
                if not (facing == 0 and in_cross(z)):
                    plan.append((z, kind, length))
                z += length + 1.5 + rng.exponential(100.0 / rate)
        for z, kind, length in plan:
            z = z + pace * travel  # where the vehicle has got to by this frame
            add(3, z, O.vehicle, kind, xc, z, facing or (1 if rng.random() < 0.7 else -1), length, tj,
                scale=k, end=z + length)
            footprints.append((xc, O.VEHICLE_HALF_WIDTH[kind] * k + 0.15, z, length))

    paint_ground(cv, cam, st, L.terrain)
    shadows = []
    for xc, hw, z, length in footprints:  # contact shadows on the road, before anything stands on it
        if z + length + 0.2 - cam.z <= 1.0:
            continue  # passed by a driving camera
        X = np.array([xc - hw, xc + hw, xc + hw, xc - hw])
        Z = np.maximum(np.array([z - 0.2, z - 0.2, z + length + 0.2, z + length + 0.2]), cam.z + 1.0)
        shadows.append(np.stack(cam.project(X, np.zeros(4), Z), 1))
    if shadows:
        cv.shade(shadows, 0.55)
    # A still paints from the one generator, in painting order; a drive gives each object its own.
    seed = int(rng.integers(2 ** 63)) if drive else None
    for _, _, order, gone, fn, args, kw in sorted(layers, key=lambda t: t[:3]):
        if not gone:
            fn(cv, cam, rng if seed is None else np.random.default_rng([seed, order]), *args, **kw)
    if L.hood[1] > 0:  # ego-vehicle hood: void, Cityscapes label id 1
        hood = rng.uniform(*L.hood) * height
        ay = 0.6 * height
        cv.ellipse((width * (0.5 + rng.uniform(-0.04, 0.04)), height - hood + ay), (0.9 * width, ay), IGNORE, M.HOOD,
                   void=1)
    m = cv.maps()
    return Scene(m["label"], m["instances"], np.array(cv.inst_class, dtype=np.uint8), m["void"], m["material"],
                 m["tint"], cam)
