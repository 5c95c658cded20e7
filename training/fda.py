"""Fourier domain adaptation (Yang & Soatto, CVPR 2020): image translation without a GAN.

The low frequencies of an image's amplitude spectrum carry its global style (colour cast, brightness,
contrast); the phase carries the layout. Swapping the centred low-frequency block of a source image's
amplitude with a target image's gives the source content in the target's style, so the segmentation loss
already sees target-looking images. Our cheap stand-in for the CycleGAN "ST" images the paper combines with
JAL + WTM (Table 5). numpy FFT, no torch: it runs inside the data loader's workers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from jal_deploy.datasets import read_image


def low_band(shape: tuple[int, int], beta: float) -> tuple[slice, slice]:
    """The centred block of a fftshift-ed (H, W) spectrum that FDA swaps: half-size b = floor(min(H, W) *
    beta), rows cy-b..cy+b and columns cx-b..cx+b (2b+1 each, as the reference code; b = 0 is the DC term)."""
    h, w = shape
    b = int(np.floor(min(h, w) * beta))
    cy, cx = h // 2, w // 2
    return slice(cy - b, cy + b + 1), slice(cx - b, cx + b + 1)


def swap_low_amplitude(source: np.ndarray, target: np.ndarray, beta: float) -> np.ndarray:
    """The FDA image before clipping: source (H, W, C) with the amplitude of target (same shape) inside the
    centred low band of every channel's spectrum, the source phase everywhere (float64)."""
    if source.shape != target.shape:
        raise ValueError(f"FDA needs images of one shape, got {source.shape} and {target.shape}")
    fs = np.fft.fftshift(np.fft.fft2(source.astype(np.float64), axes=(0, 1)), axes=(0, 1))
    ft = np.fft.fftshift(np.fft.fft2(target.astype(np.float64), axes=(0, 1)), axes=(0, 1))
    amplitude, phase = np.abs(fs), np.angle(fs)
    rows, cols = low_band(source.shape[:2], beta)
    amplitude[rows, cols] = np.abs(ft[rows, cols])
    return np.fft.ifft2(np.fft.ifftshift(amplitude * np.exp(1j * phase), axes=(0, 1)), axes=(0, 1)).real


def fda_transfer(source: np.ndarray, target: np.ndarray, beta: float) -> np.ndarray:
    """Source in the style of target (`swap_low_amplitude`) clipped to 0..255, float32; beta = 0 returns the
    source unchanged."""
    if beta <= 0:
        return source.astype(np.float32)
    return np.clip(swap_low_amplitude(source, target, beta), 0, 255).astype(np.float32)


class FourierStyle:
    """The data-pipeline step: each source item takes the style of a target train image chosen from
    (seed, index) alone, so a run and its resumed continuation see the same images."""

    def __init__(self, target_images: Sequence[str | Path], beta: float, seed: int = 0, size=None,
                 cache: bool = False):
        if not target_images:
            raise ValueError("FDA needs at least one target image")
        self.targets, self.beta, self.seed, self.size = list(target_images), beta, seed, size
        self.cache: dict[int, np.ndarray] | None = {} if cache else None

    def target_index(self, index: int) -> int:
        return int(np.random.default_rng([self.seed, index]).integers(len(self.targets)))

    def _target(self, k: int) -> np.ndarray:
        if self.cache is not None and k in self.cache:
            return self.cache[k]
        image = read_image(self.targets[k])
        if self.size is not None and (image.shape[1], image.shape[0]) != tuple(self.size):
            image = cv2.resize(image, tuple(self.size), interpolation=cv2.INTER_CUBIC)  # as the target stream
        if self.cache is not None:
            self.cache[k] = image
        return image

    def __call__(self, image: np.ndarray, index: int) -> np.ndarray:
        target = self._target(self.target_index(index))
        if target.shape[:2] != image.shape[:2]:  # a source crop of another size: the target at that size
            target = cv2.resize(target, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
        return fda_transfer(image, target, self.beta)
