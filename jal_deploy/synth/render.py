"""Render a scene in a domain's style: palette lookup, object tints, procedural texture, lighting, tone
curve, blur, sensor noise and (target) JPEG artefacts. Everything is whole-array NumPy/OpenCV work.

The `appearance` and `weather` target shifts add cast shadows, depth haze and rain; these only change
colours (labels are the scene's) and draw nothing from the generator when off, so the other styles render
as before."""
from __future__ import annotations

import functools

import cv2
import numpy as np

from jal_deploy.synth import materials as M
from jal_deploy.synth.canvas import SHIFT
from jal_deploy.synth.scene import Scene
from jal_deploy.synth.styles import Appearance, palette, tone_lut


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance noise from two uniform bytes per value (triangular: close enough to a
    Gaussian for texture and sensor noise, and ~4x cheaper to draw than standard_normal)."""
    b = np.frombuffer(rng.bytes(2 * int(np.prod(shape))), np.uint8).reshape(2, *shape)
    return (b[0].astype(np.float32) + b[1].astype(np.float32) - 255.0) * np.float32(1.0 / 104.1)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Unit-variance-ish noise with features about `cell` pixels across (bilinear upsampled white noise)."""
    h, w = shape
    small = rng.standard_normal((max(2, int(h / cell) + 2), max(2, int(w / cell) + 2))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@functools.lru_cache(maxsize=8)
def _grid(H: int, W: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised coordinates (x, y in -0.5..0.5) and the squared radius, cached per frame size."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    xx, yy = (xx + 0.5) / W - 0.5, (yy + 0.5) / H - 0.5
    return xx, yy, xx ** 2 + yy ** 2


GROUND = np.isin(np.arange(M.N_MATERIALS), [M.ROAD, M.SIDEWALK, M.TERRAIN, M.LANE, M.KERB, M.RAIL])
FACADE = np.isin(np.arange(M.N_MATERIALS), [M.BUILDING, M.WALL, M.WINDOW, M.WINDOW_LIT, M.GLASS, M.ROOF])
HAZE_REF_HEIGHT = 5.0  # metres above the eye assumed for pixels above the horizon (tree crowns, low facades)


def _shadows(scene: Scene, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Multiplicative light (H, W) of cast shadows: the low sun puts one side's facades in shade and throws
    the shadows of buildings and trees off-frame across the street as slanted bands on the ground plane.
    Real photos are full of such edges that follow no class boundary; rendered sources have none."""
    H, W = scene.label.shape
    cam = scene.camera
    bands = np.zeros((H, W), np.uint8)
    quads = []
    for _ in range(int(rng.integers(2, 5))):
        z0, length, slant = rng.uniform(2.0, 50.0), rng.uniform(2.0, 12.0), rng.uniform(-0.15, 0.15)
        X = np.array([-25.0, 25.0, 25.0, -25.0])
        Z = z0 + np.array([0.0, 0.0, length, length]) + slant * X + cam.z
        u, v = cam.project(X, np.zeros(4), Z)
        quads.append(np.round(np.stack([u, v], 1) * (1 << SHIFT)).astype(np.int32))
    cv2.fillPoly(bands, quads, 1, cv2.LINE_8, SHIFT)
    side = 1.0 if rng.random() < 0.5 else -1.0
    xs = (np.arange(W, dtype=np.float32) + 0.5 - cam.cx) * side
    shade = (bands > 0) & GROUND[scene.material]
    shade |= (xs[None, :] > 0) & FACADE[scene.material]
    soft = cv2.GaussianBlur(shade.astype(np.float32), (0, 0), max(0.6, W / 512.0))
    return 1.0 - np.float32(strength) * soft


def _rain(rng: np.random.Generator, H: int, W: int, opacity: float) -> np.ndarray:
    """Blend weight (H, W) of rain streaks: thin, slightly slanted, motion-blurred lines in front of
    everything (the camera sees the drops close up), about one per 300 pixels of the frame."""
    s = W / 512.0
    n = max(1, int(H * W / 300))
    x, y = rng.uniform(0, W, n), rng.uniform(-0.1 * H, H, n)
    length = rng.uniform(8.0, 20.0, n) * s
    slant = rng.uniform(0.1, 0.2)
    layer = np.zeros((H, W), np.float32)
    ends = np.stack([x, y, x + slant * length, y + length], 1)
    for x0, y0, x1, y1 in np.round(ends * (1 << SHIFT)).astype(np.int64):
        cv2.line(layer, (int(x0), int(y0)), (int(x1), int(y1)), 1.0, 1, cv2.LINE_AA, SHIFT)
    return np.float32(opacity) * cv2.GaussianBlur(layer, (0, 0), max(0.5, 0.8 * s))


def _haze_alpha(scene: Scene, app: Appearance) -> np.ndarray:
    """Blend weight (H, W) toward the haze colour: 1 - exp(-depth / visibility), scaled by `haze`. Depth is
    exact on the ground (row -> distance on the plane), a facade-height guess above the horizon, infinite in
    the sky, so distant streets fade into a flat, bright, low-contrast band as they do in real air."""
    H, W = scene.label.shape
    cam = scene.camera
    d = np.arange(H, dtype=np.float64) + 0.5 - cam.horizon
    depth = np.where(d > 0, cam.f * cam.height, cam.f * HAZE_REF_HEIGHT) / np.maximum(np.abs(d), 0.5)
    alpha = (app.haze * (1.0 - np.exp(-depth / app.visibility))).astype(np.float32)
    return np.where(scene.material == M.SKY, np.float32(app.haze), alpha[:, None])


def render(scene: Scene, app: Appearance, rng: np.random.Generator,
           noise_rng: np.random.Generator | None = None) -> np.ndarray:
    """-> RGB uint8 image (H, W, 3).

    noise_rng: draws the sensor noise instead of `rng` (a video renders every frame from the same `rng`
    state so colours and lighting hold still, and takes fresh sensor noise per frame from here).
    """
    H, W = scene.label.shape
    s = W / 512.0
    mat = scene.material
    lut = np.concatenate([palette(app, rng), M.TEXTURE_AMP * app.texture], axis=1)  # (M, 6)
    px = np.take(lut, mat, axis=0)  # (H, W, 6)
    img = px[..., :3] * (scene.tint.astype(np.float32) * (1.0 / 128.0))
    tex = px[..., 3] * _noise(rng, (H, W))
    tex += px[..., 4] * _smooth_noise(rng, (H, W), 3.0 * s * app.texture_cell)
    tex += px[..., 5] * _smooth_noise(rng, (H, W), 24.0 * s * app.texture_cell)
    img += tex[..., None]
    # A lighting ramp in a random direction and a vignette; the sky brightens towards the horizon.
    xx, yy, r2 = _grid(H, W)
    theta = rng.uniform(0, 2 * np.pi)
    light = 1.0 + (2.0 * app.light_gradient) * (np.cos(theta) * xx + np.sin(theta) * yy) - (2.0 * app.vignette) * r2
    hz = max(scene.camera.horizon / H, 0.05)
    ramp = 0.85 + 0.3 * np.clip((yy[:, :1] + 0.5) / hz, 0, 1)
    light = np.where(mat == M.SKY, light * ramp, light)
    img *= light[..., None]
    if app.shadows > 0:
        img *= _shadows(scene, rng, app.shadows)[..., None]
    if app.haze > 0:
        a = _haze_alpha(scene, app)[..., None]
        img = img * (1.0 - a) + np.asarray(app.haze_rgb, np.float32) * a
    if app.rain > 0:
        a = _rain(rng, H, W, app.rain)[..., None]
        img = img * (1.0 - a) + np.asarray(app.haze_rgb, np.float32) * a
    out = cv2.LUT(np.clip(img, 0, 255).astype(np.uint8), tone_lut(app))
    if app.blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), app.blur_sigma * s)
    if app.noise_sigma > 0:
        noise = _noise(rng if noise_rng is None else noise_rng, out.shape) * np.float32(app.noise_sigma)
        out = np.clip(out + noise, 0, 255).astype(np.uint8)
    if app.jpeg_quality:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(app.jpeg_quality)])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(out)
