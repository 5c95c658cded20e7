"""Per-domain styles: appearance (how the world is rendered) and layout (what the world contains).

The three domains share one procedural world (`scene.py`) and one material table (`materials.py`); all
their differences live here, as plain dataclasses that `synth.json` records. docs/synthetic-benchmark.md explains the choices.
The Cityscapes-format target comes in several shift families (`SHIFTS`, `domains(shift=...)`,
docs/synthetic-shifts.md); the sources are the same in all of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from jal_deploy.synth import materials as M


@dataclass(frozen=True)
class Appearance:
    hue_deg: float = 0.0               # rotation of every material colour around the grey axis
    saturation: float = 1.0
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB colour cast
    brightness: float = 1.0
    contrast: float = 1.0
    gamma: float = 1.0
    # Colour confusion: pairs of train ids that take each other's colour (labels stay truthful).
    swaps: tuple[tuple[int, int], ...] = ()
    tint_jitter: float = 0.10          # per-object colour variation (fraction)
    frame_jitter: float = 0.05         # per-frame brightness / colour variation (fraction)
    texture: float = 1.0               # scale of the material texture amplitudes
    light_gradient: float = 0.15       # strength of a linear lighting ramp across the frame
    vignette: float = 0.10
    blur_sigma: float = 0.0            # Gaussian blur, pixels at 512 px width (scaled with the frame)
    noise_sigma: float = 0.0           # sensor noise, grey levels (rendered sources have none)
    jpeg_quality: int = 0              # 0: no JPEG round trip
    # Realism effects of the `appearance` target shift (0: off, and no random draws, so older styles render
    # byte for byte as before); none of them touches a label.
    texture_cell: float = 1.0          # scale of the mid / coarse texture feature sizes
    s_curve: float = 0.0               # blend of the tone curve toward a smoothstep S-curve (0..1)
    shadows: float = 0.0               # darkening of cast shadows across the road and one facade (0..1)
    haze: float = 0.0                  # blend toward the haze colour at infinite depth (0..1)
    haze_rgb: tuple[float, float, float] = (196.0, 202.0, 208.0)
    visibility: float = 80.0           # metres: depth at which the haze reaches 63 % of `haze`
    rain: float = 0.0                  # rain streaks: opacity of the streak layer (0: none)


@dataclass(frozen=True)
class Layout:
    cam_height: tuple[float, float] = (1.4, 2.6)     # metres
    horizon: tuple[float, float] = (0.38, 0.50)      # row of the horizon as a fraction of the height
    horizon_per_metre: float = 0.0                    # higher cameras look down: horizon moves up by this
    focal: tuple[float, float] = (0.50, 0.62)        # focal length as a fraction of the width
    yaw: float = 0.06                                 # vanishing point jitter, fraction of the width
    lanes: tuple[int, int] = (2, 4)
    sidewalk: tuple[float, float] = (2.5, 5.0)       # metres
    p_building: float = 0.70                           # per block: building (else a green verge)
    p_wall: float = 0.15                               # per block: a low wall along the verge
    p_fence: float = 0.15
    street_tree_gap: float = 18.0                      # mean spacing of street trees, metres (0: none)
    verge_trees: float = 2.0                           # mean trees per green block
    cars_per_100m: float = 5.0                         # per lane
    parked_per_100m: float = 5.0                       # per kerb
    p_truck: float = 0.15                              # share of moving vehicles
    p_bus: float = 0.08
    p_tram: float = 0.10                               # per frame
    persons_per_100m: float = 4.0                      # per sidewalk
    riders: float = 0.8                                # mean per frame
    parked_bikes: float = 0.6
    poles_per_100m: float = 5.0
    p_intersection: float = 0.5
    statics_per_100m: float = 3.0                      # bins/bollards, labelled void ('static')
    terrain: bool = True                               # False: green verges are paved instead
    hood: tuple[float, float] = (0.0, 0.0)             # ego-vehicle hood height, fraction of the height
    object_scale: float = 1.0                          # physical size of vehicles, people and trees


@dataclass(frozen=True)
class Domain:
    name: str
    appearance: Appearance = field(default_factory=Appearance)
    layout: Layout = field(default_factory=Layout)


DOMAINS: dict[str, Domain] = {
    # Source 1: crisp, saturated, warm game rendering; a game camera a little higher than a car's.
    "gta5": Domain("gta5", Appearance(saturation=1.15, gains=(1.05, 1.0, 0.93), contrast=1.08,
                                      tint_jitter=0.12, texture=1.0, light_gradient=0.15, vignette=0.08),
                   Layout(p_truck=0.10, persons_per_100m=6.0)),
    # Source 2: flat, cool, bright rendering; cameras from street level up to ~12 m looking down;
    # many pedestrians; no terrain, truck or train (SYNTHIA's 16-class protocol).
    "synthia": Domain("synthia", Appearance(hue_deg=-10.0, saturation=0.85, gains=(0.95, 1.0, 1.07),
                                            brightness=1.08, gamma=0.9, tint_jitter=0.06, texture=0.45,
                                            light_gradient=0.05, vignette=0.0),
                      Layout(cam_height=(1.5, 12.0), horizon=(0.32, 0.50), horizon_per_metre=0.028,
                             focal=(0.45, 0.65), yaw=0.08, p_building=0.8, street_tree_gap=22.0,
                             cars_per_100m=3.5, parked_per_100m=4.0, p_truck=0.0, p_bus=0.08, p_tram=0.0,
                             persons_per_100m=9.0, riders=1.0, terrain=False)),
    # Target: real-camera look (soft, noisy, JPEG, dull greenish cast, strong lighting ramp), a narrower
    # field of view from a low car roof with the ego hood in view, greener streets with fewer cars, and
    # the colour confusion that makes source-only predictions structurally implausible.
    "cityscapes": Domain("cityscapes", Appearance(hue_deg=6.0, saturation=0.85, gains=(0.97, 1.03, 1.0),
                                                  brightness=0.97, contrast=0.88, gamma=1.05,
                                                  swaps=((M.ROAD, M.SIDEWALK), (M.BUILDING, M.VEGETATION)),
                                                  tint_jitter=0.10, frame_jitter=0.08, texture=1.3,
                                                  light_gradient=0.30, vignette=0.25, blur_sigma=0.8,
                                                  noise_sigma=4.0, jpeg_quality=70),
                         Layout(cam_height=(1.2, 1.5), horizon=(0.40, 0.47), focal=(0.70, 0.90), yaw=0.04,
                                lanes=(2, 3), p_building=0.45, p_wall=0.2, p_fence=0.2, street_tree_gap=11.0,
                                verge_trees=3.0, cars_per_100m=1.5, parked_per_100m=2.0, p_truck=0.08,
                                p_bus=0.08, p_tram=0.08, persons_per_100m=7.0, riders=1.2, parked_bikes=1.0,
                                hood=(0.07, 0.13))),
}


# What a street is made of: how many blocks are buildings rather than green verges, and how many trees. The
# target's greener streets are a label shift (building 15 %, vegetation 21 % of its pixels against 28 % / 13 % in
# GTA5) that points the same way as its building <-> vegetation colour swap: a model that follows the swapped
# colours predicts target class shares *closer* to the source's than the truth is, so output-space alignment
# has no reason to undo that swap. `domains(label_shift=False)` gives the target the source's composition,
# which makes the swap visible in the outputs' statistics (docs/synthetic-benchmark.md, "Layout and statistics").
COMPOSITION = ("p_building", "street_tree_gap", "verge_trees")

# Target shift families (docs/synthetic-shifts.md). A benchmark whose target differs mainly by a colour
# confusion rewards colour randomisation and says little about real shifts, so the target can instead differ
# by realism alone or by geometry alone. Only the Cityscapes-format target changes; the sources never do.
SHIFTS = ("colour", "appearance", "geometry", "weather")

# `appearance`: GTA5's world, colour grading and camera seen as a real camera would. No colour swap and no hue
# rotation (class colours stay where the source has them); coarser, stronger texture, cast shadows, depth haze,
# an S-shaped tone curve, a stronger lighting ramp and vignette, blur, sensor noise and JPEG.
APPEARANCE_SHIFT = replace(DOMAINS["gta5"].appearance, contrast=1.0, tint_jitter=0.14, frame_jitter=0.08,
                           texture=2.0, texture_cell=1.8, light_gradient=0.25, vignette=0.15, blur_sigma=0.9,
                           noise_sigma=6.0, jpeg_quality=60, s_curve=0.5, shadows=0.35, haze=0.3, visibility=70.0)

# `weather`: GTA5's world on a wet, foggy day: no sun (no cast shadows, a flat lighting ramp), dense fog that
# swallows everything beyond a few tens of metres, rain streaks, dull colours and a darker exposure.
WEATHER_SHIFT = replace(DOMAINS["gta5"].appearance, saturation=0.75, brightness=0.9, contrast=0.9,
                        frame_jitter=0.08, light_gradient=0.05, vignette=0.12, blur_sigma=0.7, noise_sigma=4.0,
                        jpeg_quality=70, haze=0.6, haze_rgb=(178.0, 182.0, 186.0), visibility=60.0, rain=0.35)

# `geometry`: rendered like GTA5, seen from another camera in other streets: a low, pitched-up camera with a
# long lens (horizon well below the source's, objects larger), vehicles and people 15 % larger, wide built-up
# streets with about twice the traffic and pedestrians and few trees.
GEOMETRY_LAYOUT = Layout(cam_height=(1.0, 1.3), horizon=(0.55, 0.62), focal=(0.85, 1.05), yaw=0.03, lanes=(3, 5),
                         sidewalk=(3.5, 6.0), p_building=0.9, p_wall=0.1, p_fence=0.05, street_tree_gap=45.0,
                         verge_trees=0.5, cars_per_100m=10.0, parked_per_100m=9.0, p_truck=0.12, p_bus=0.10,
                         p_tram=0.15, persons_per_100m=12.0, riders=1.5, parked_bikes=1.0, object_scale=1.15)


def _target(shift: str) -> tuple[Domain, tuple[float, ...]]:
    """The target style of a shift family and the street composition its label shift brings."""
    colour, gta5 = DOMAINS["cityscapes"], DOMAINS["gta5"]
    label_shifted = tuple(getattr(colour.layout, k) for k in COMPOSITION)  # the greener target streets
    if shift == "colour":
        return colour, label_shifted
    if shift == "appearance":
        return Domain("cityscapes", APPEARANCE_SHIFT, gta5.layout), label_shifted
    if shift == "weather":
        return Domain("cityscapes", WEATHER_SHIFT, gta5.layout), label_shifted
    if shift == "geometry":  # its class frequencies belong to the family, composition included
        return Domain("cityscapes", gta5.appearance, GEOMETRY_LAYOUT), \
            tuple(getattr(GEOMETRY_LAYOUT, k) for k in COMPOSITION)
    raise ValueError(f"unknown shift {shift!r}; use one of {', '.join(SHIFTS)}")


def domains(label_shift: bool = True, shift: str = "colour") -> dict[str, Domain]:
    """The three domain styles, with the Cityscapes style of target shift family `shift`.

    label_shift: the target streets have the family's composition (`COMPOSITION`: greener streets for colour,
    appearance and weather, built-up ones for geometry); without it they have GTA5's, and nothing else changes.
    """
    if label_shift and shift == "colour":
        return DOMAINS
    target, composition = _target(shift)
    source = DOMAINS["gta5"].layout
    values = composition if label_shift else tuple(getattr(source, k) for k in COMPOSITION)
    layout = replace(target.layout, **dict(zip(COMPOSITION, values)))
    return {**DOMAINS, "cityscapes": replace(target, layout=layout)}


def _hue_matrix(deg: float) -> np.ndarray:
    """Rotation of RGB colours by `deg` around the grey axis (keeps luminance roughly)."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    k = 1.0 / 3.0
    r = math.sqrt(k)
    return np.array([
        [c + (1 - c) * k, k * (1 - c) - r * s, k * (1 - c) + r * s],
        [k * (1 - c) + r * s, c + k * (1 - c), k * (1 - c) - r * s],
        [k * (1 - c) - r * s, k * (1 - c) + r * s, c + k * (1 - c)],
    ], dtype=np.float32)


def palette(app: Appearance, rng: np.random.Generator | None = None) -> np.ndarray:
    """Material colours (N_MATERIALS, 3) RGB float32 for one frame of a domain."""
    rgb = M.BASE_RGB.copy()
    for a, b in app.swaps:
        rgb[[a, b]] = rgb[[b, a]]
    rgb = rgb @ _hue_matrix(app.hue_deg).T
    grey = rgb.mean(axis=1, keepdims=True)
    rgb = grey + (rgb - grey) * app.saturation
    gains = np.array(app.gains, dtype=np.float32) * app.brightness
    if rng is not None and app.frame_jitter > 0:
        j = app.frame_jitter
        gains = gains * (1.0 + rng.uniform(-j, j)) * (1.0 + rng.uniform(-j / 2, j / 2, 3))
    return np.clip(rgb * gains, 0, 255).astype(np.float32)


def tone_lut(app: Appearance) -> np.ndarray:
    """uint8 LUT applying gamma, contrast (around mid grey) and, if set, an S-curve (real cameras' tone curve)."""
    x = np.arange(256, dtype=np.float64) / 255.0
    y = (x ** app.gamma - 0.5) * app.contrast + 0.5
    if app.s_curve:
        c = np.clip(y, 0.0, 1.0)
        y = (1.0 - app.s_curve) * c + app.s_curve * c * c * (3.0 - 2.0 * c)
    return np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)
