"""Torch datasets over the torch-free dataset formats of `jal_deploy.datasets`.

Default = the reference protocol: images resized (bicubic) to a fixed size (GTA5 1280x720, Cityscapes
1024x512), labels resized nearest, BGR float input minus the Caffe ImageNet mean, no std division. Random
scale, crop and flip are optional. Randomness is a function of (seed, virtual index) only, where the virtual
index counts draws across epochs (see `InfiniteSampler`): the same seed gives the same batches whatever the
number of workers or processes, and a resumed run continues the exact stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from jal_deploy.datasets import find_samples, read_image, read_label
from jal_deploy.labels import IGNORE, get_protocol

IMG_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)


@dataclass(frozen=True)
class Augment:
    """size: (W, H) after the base resize (None keeps the file's size); scale: random factor range applied
    after it; crop: (W, H) random crop (padded with the mean / ignore when the image is smaller); flip."""

    size: tuple[int, int] | None = None
    scale: tuple[float, float] | None = None
    crop: tuple[int, int] | None = None
    flip: bool = False


class SegmentationDataset(Dataset):
    """Items: {'image': float32 (3, H, W) BGR minus mean, 'label': int64 (H, W) protocol indices or absent,
    'name': str, 'index': int}. `style(image, virtual_index)`, when given, restyles each image after the
    augmentation (e.g. `training.fda.FourierStyle`)."""

    def __init__(self, root, fmt: str, split: str | None = None, list_file=None, labelled: bool = True,
                 augment: Augment = Augment(), protocol: str = "19", seed: int = 0,
                 resize_label: bool = True, mean: Sequence[float] = IMG_MEAN_BGR, limit: int | None = None,
                 cache: bool = False, style: Callable[[np.ndarray, int], np.ndarray] | None = None):
        self.samples = find_samples(root, fmt, split=split, list_file=list_file, require_labels=labelled)
        if limit is not None:
            self.samples = self.samples[:limit]
        self.fmt, self.labelled, self.augment, self.seed = fmt, labelled, augment, seed
        self.resize_label, self.style = resize_label, style
        self.lut = get_protocol(protocol).from_trainid19
        self.mean = np.asarray(mean, dtype=np.float32)
        # Decoded frames after the base resize, kept in memory: on a small CPU decoding and bicubic resizing
        # cost a tenth of a small network's iteration, and a worker process to hide them takes a core.
        self.cache: dict[int, tuple] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, virtual_index: int) -> dict:
        index = virtual_index % len(self.samples)
        sample = self.samples[index]
        rng = np.random.default_rng([self.seed, virtual_index])
        if self.cache is not None and index in self.cache:
            image, label = self.cache[index]
        else:
            image = read_image(sample.image)
            label = self.lut[read_label(sample, self.fmt)] if self.labelled else None
            image, label = self._base_resize(image, label)
            if self.cache is not None:
                self.cache[index] = (image, label)
        image, label = self._transform(image, label, rng)
        if self.style is not None:
            image = self.style(image, virtual_index)
        item = {"image": torch.from_numpy(np.ascontiguousarray((image.astype(np.float32) - self.mean)
                                                               .transpose(2, 0, 1))),
                "name": sample.name, "index": virtual_index}
        if label is not None:
            item["label"] = torch.from_numpy(label.astype(np.int64))
        return item

    def _base_resize(self, image: np.ndarray, label: np.ndarray | None):
        size = self.augment.size
        if size is not None and (image.shape[1], image.shape[0]) != tuple(size):
            image = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
            if self.resize_label and label is not None:
                label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
        return image, label

    def _transform(self, image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator):
        aug = self.augment
        if aug.scale is not None:
            s = rng.uniform(*aug.scale)
            w, h = max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s))
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
            if label is not None:
                label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
        if aug.crop is not None:
            image, label = _random_crop(image, label, aug.crop, rng, self.mean)
        if aug.flip and rng.random() < 0.5:
            image = image[:, ::-1]
            label = None if label is None else label[:, ::-1]
        return image, label


def _random_crop(image, label, crop, rng, mean):
    cw, ch = crop
    h, w = image.shape[:2]
    if h < ch or w < cw:  # pad so the crop fits: mean pixels (zero after normalisation), ignored labels
        ph, pw = max(0, ch - h), max(0, cw - w)
        image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=[float(m) for m in mean])
        if label is not None:
            label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=IGNORE)
        h, w = image.shape[:2]
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return image[y:y + ch, x:x + cw], None if label is None else label[y:y + ch, x:x + cw]


def worker_init(_: int, forked: bool = False) -> None:
    """One OpenCV thread per started (spawn / forkserver) loader worker: workers are processes already, and
    oversubscribed thread pools on a small CPU slow training down many times over. A forked worker keeps the
    parent's setting: its OpenCV thread pool is a copy of the parent's, and resizing that copy
    (cv2.setNumThreads) waits forever on pool threads that exist only in the parent, once the parent has run a
    parallel OpenCV call (a second run in one process, self-training after its pseudo labels)."""
    if not forked:
        cv2.setNumThreads(1)


class InfiniteSampler(Sampler[int]):
    """Virtual indices e*n + perm_e[j] for epochs e = 0, 1, ...; each epoch a fresh permutation from
    (seed, e). `start` skips the first draws (exact resume); rank/world split the stream for DDP."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, start: int = 0, rank: int = 0,
                 world: int = 1):
        if n <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.n, self.seed, self.shuffle, self.start, self.rank, self.world = n, seed, shuffle, start, rank, world

    def __iter__(self) -> Iterator[int]:
        k = self.start * self.world + self.rank
        while True:
            epoch, j = divmod(k, self.n)
            order = (np.random.default_rng([self.seed, epoch]).permutation(self.n) if self.shuffle
                     else np.arange(self.n))
            while j < self.n:
                yield epoch * self.n + int(order[j])
                k += self.world
                epoch_next, j = divmod(k, self.n)
                if epoch_next != epoch:
                    break
