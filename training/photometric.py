"""Photometric augmentation of labelled training images: random colour jitter and Gaussian blur, and random
convolutions.

A segmenter trained on one renderer's colours leans on colour wherever colour alone separates the classes,
and a new camera, light or world breaks exactly those shortcuts. Randomising brightness, contrast,
saturation and hue (and sometimes blurring) pushes it towards shape, texture and layout, which transfer.
Strength, probability and blur follow DACS (Tranheden et al., WACV 2021) and DAFormer (Hoyer et al., CVPR
2022), which apply them in their self-training: jitter strength s = 0.2 applied with probability 0.8
(brightness, contrast and saturation factors in [1 - s, 1 + s], hue shifted by up to s of the colour circle,
in a random order per image as torchvision's ColorJitter does), Gaussian blur with probability 0.5 at a sigma
drawn from [0.15, 1.15] pixels.

Random convolutions (RandConv, Xu et al., ICLR 2021) go further: a convolution with random weights (a kernel
size drawn from {1, 3, 5, 7}, weights from N(0, 1 / (k^2 * 3)), so the output keeps the input's scale) mixes
the colour channels and local texture arbitrarily while keeping shapes, and the result is blended with the
image by a factor drawn from U(0, 1) (the paper's mixing variant) or not at all (its plain variant). A 1x1
kernel alone is a random colour matrix: it can swap hues and invert brightness, which no jitter does; applied
to every image unblended it leaves colour no label information at all (domain randomisation of colour).
numpy and OpenCV only: both run inside the data loader's workers.
"""
from __future__ import annotations

import cv2
import numpy as np

BLUR_SIGMA = (0.15, 1.15)  # pixels, as DACS draws it
BLUR_P = 0.5
JITTER_P = 0.8


def _grey(image: np.ndarray) -> np.ndarray:
    """Luma of a BGR float image, (H, W, 1) (ITU-R 601 weights, as torchvision's rgb_to_grayscale)."""
    return (0.114 * image[..., 0] + 0.587 * image[..., 1] + 0.299 * image[..., 2])[..., None]


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(image * factor, 0, 255)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    mean = _grey(image).mean()
    return np.clip(mean + factor * (image - mean), 0, 255)


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
    grey = _grey(image)
    return np.clip(grey + factor * (image - grey), 0, 255)


def adjust_hue(image: np.ndarray, shift: float) -> np.ndarray:
    """Hue rotated by `shift` turns of the colour circle (-0.5..0.5), value and saturation kept (HSV)."""
    hsv = cv2.cvtColor((image / 255.0).astype(np.float32), cv2.COLOR_BGR2HSV)  # H in [0, 360)
    hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * shift, 360.0)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).astype(np.float32) * 255.0


class Photometric:
    """The data-pipeline step (`SegmentationDataset(style=...)`): each item's jitter, order and blur come
    from (seed, index) alone, so a run and its resumed continuation see the same images. strength 0 and
    blur False return the image unchanged (as float32)."""

    def __init__(self, strength: float = 0.2, blur: bool = True, seed: int = 0):
        if not 0.0 <= strength <= 0.5:
            raise ValueError(f"colour jitter strength must be in [0, 0.5], got {strength}")
        self.strength, self.blur, self.seed = strength, blur, seed

    def __call__(self, image: np.ndarray, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index, 7])
        out = image.astype(np.float32)
        s = self.strength
        if s > 0 and rng.random() < JITTER_P:
            steps = [(adjust_brightness, rng.uniform(1 - s, 1 + s)), (adjust_contrast, rng.uniform(1 - s, 1 + s)),
                     (adjust_saturation, rng.uniform(1 - s, 1 + s)), (adjust_hue, rng.uniform(-s, s))]
            for k in rng.permutation(len(steps)):
                fn, value = steps[k]
                out = fn(out, value)
        if self.blur and rng.random() < BLUR_P:
            out = cv2.GaussianBlur(out, (0, 0), sigmaX=float(rng.uniform(*BLUR_SIGMA)))
        return out.astype(np.float32)


RANDCONV_KERNELS = (1, 3, 5, 7)


def random_convolution(image: np.ndarray, weights: np.ndarray, alpha: float) -> np.ndarray:
    """alpha * image + (1 - alpha) * conv(image, weights), computed on the image centred at mid-grey (so a
    random kernel does not add a random offset) and shifted back; not clipped (RandConv does not clamp).
    weights: (3 out, 3 in, k, k); same-size output, borders reflected."""
    centred = image.astype(np.float32) - 127.5
    conv = np.zeros_like(centred)
    for o in range(3):
        for i in range(3):
            conv[..., o] += cv2.filter2D(centred[..., i], -1, weights[o, i], borderType=cv2.BORDER_REFLECT_101)
    return (alpha * centred + (1.0 - alpha) * conv + 127.5).astype(np.float32)


class RandomConvolution:
    """The data-pipeline step for RandConv: kernel size, weights and mixing factor of each image from
    (seed, index) alone, so a resumed run sees the same images."""

    def __init__(self, seed: int = 0, kernels: tuple[int, ...] = RANDCONV_KERNELS, mix: bool = True):
        self.seed, self.kernels, self.mix = seed, tuple(kernels), mix

    def draw(self, index: int) -> tuple[np.ndarray, float]:
        """(weights, alpha); without `mix` alpha is 0: every image is the convolution alone (with kernels (1,),
        a random colour matrix: colour carries no label information, shape, texture and layout do)."""
        rng = np.random.default_rng([self.seed, index, 11])
        k = int(rng.choice(self.kernels))
        weights = rng.normal(0.0, 1.0 / np.sqrt(k * k * 3), size=(3, 3, k, k)).astype(np.float32)
        alpha = float(rng.uniform(0.0, 1.0))  # drawn either way: both variants see the same kernels per image
        return weights, alpha if self.mix else 0.0

    def __call__(self, image: np.ndarray, index: int) -> np.ndarray:
        weights, alpha = self.draw(index)
        return random_convolution(image, weights, alpha)


def compose(*steps):
    """One `style` callable from several (None entries skipped), applied in order."""
    steps = [s for s in steps if s is not None]
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]

    def style(image: np.ndarray, index: int) -> np.ndarray:
        for step in steps:
            image = step(image, index)
        return image
    return style
