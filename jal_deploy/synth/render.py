"""Render a scene in a domain's style: palette lookup, object tints, procedural texture, lighting, tone
curve, blur, sensor noise and (target) JPEG artefacts. Everything is whole-array NumPy/OpenCV work."""
from __future__ import annotations

import functools

import cv2
import numpy as np

from jal_deploy.synth import materials as M
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
    tex += px[..., 4] * _smooth_noise(rng, (H, W), 3.0 * s)
    tex += px[..., 5] * _smooth_noise(rng, (H, W), 24.0 * s)
    img += tex[..., None]
    # A lighting ramp in a random direction and a vignette; the sky brightens towards the horizon.
    xx, yy, r2 = _grid(H, W)
    theta = rng.uniform(0, 2 * np.pi)
    light = 1.0 + (2.0 * app.light_gradient) * (np.cos(theta) * xx + np.sin(theta) * yy) - (2.0 * app.vignette) * r2
    hz = max(scene.camera.horizon / H, 0.05)
    ramp = 0.85 + 0.3 * np.clip((yy[:, :1] + 0.5) / hz, 0, 1)
    light = np.where(mat == M.SKY, light * ramp, light)
    img *= light[..., None]
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
