"""The data of a training run, built from its config alone: the labelled stream (source images, or target
train labels for the oracle), the target stream (unlabelled, or pseudo-labelled for self-training), the
validation loader and the target frames BatchNorm statistics are re-estimated on.

The streams are infinite and start at `start` draws, so a resumed run continues the exact batches.
"""
from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from functools import partial
from typing import Iterator

from torch.utils.data import DataLoader

from jal_deploy.datasets import find_samples

from .config import TrainConfig
from .data import Augment, InfiniteSampler, SegmentationDataset, worker_init
from .distributed import DistEnv
from .fda import FourierStyle
from .photometric import Photometric, RandomConvolution, compose


@dataclass
class Streams:
    labelled: Iterator            # Eq. 1's images and labels
    target: Iterator | None       # None when the method reads no target image (source-only, oracle)
    val: DataLoader | None        # None with run.eval_every=0
    bn: DataLoader | None         # model.target_bn_frames > 0


def build_streams(cfg: TrainConfig, device_type: str, env: DistEnv, start: int = 0) -> Streams:
    d, seed, flags = cfg.data, cfg.run.seed, cfg.flags
    aug = Augment(size=tuple(d.source_size) or None, scale=tuple(d.scale) or None,
                  crop=tuple(d.crop) or None, flip=d.flip)
    target_aug = Augment(size=tuple(d.target_size) or None, scale=aug.scale, crop=aug.crop, flip=d.flip)
    # Photometric augmentation applies to whichever stream is labelled, so the oracle keeps the same recipe.
    jitter = compose(Photometric(d.color_jitter, d.blur, seed=seed + 3) if d.color_jitter > 0 or d.blur else None,
                     RandomConvolution(seed=seed + 4, kernels=tuple(d.rand_conv_kernels), mix=d.rand_conv_mix)
                     if d.rand_conv else None)
    if flags.labels == "target":  # the oracle: target train labels at the target size, no source image
        labelled = SegmentationDataset(d.target_root, "cityscapes", split="train", list_file=d.target_list or None,
                                       augment=target_aug, protocol=d.protocol, seed=seed, cache=d.cache, style=jitter)
    else:
        labelled = SegmentationDataset(d.source_root, d.source, split="train" if d.source == "cityscapes" else None,
                                       list_file=d.source_list or None, augment=aug, protocol=d.protocol, seed=seed,
                                       cache=d.cache, style=compose(_fda_style(cfg), jitter))
    loader = _Loaders(cfg, device_type, env, start)
    target = None
    if flags.adversarial or flags.self_training:  # source-only trains on no target image (no BN or other leak)
        # Self-training reads the pseudo-label tree (same images, labels from `jal-train pseudo-label`);
        # the adversarial terms then use the same target batch, as Bidirectional Learning does.
        root = d.target_labels if flags.self_training else d.target_root
        target = loader(SegmentationDataset(root, "cityscapes", split="train", labelled=flags.self_training,
                                            list_file=d.target_list or None, protocol=d.protocol, seed=seed + 1,
                                            augment=target_aug, cache=d.cache), seed + 1)
    val = None
    if cfg.run.eval_every:  # 0: no evaluation during training, so no labelled val is read (the pipeline's stages)
        val = SegmentationDataset(d.val_root or d.target_root, "cityscapes", split=d.val_split,
                                  list_file=d.val_list or None, augment=Augment(size=tuple(d.target_size) or None),
                                  protocol=d.protocol, resize_label=False, limit=d.val_limit or None, cache=d.cache)
    bn = None
    if cfg.model.target_bn_frames:  # the first N target train frames, as evaluated: deterministic
        frames = SegmentationDataset(d.target_root, "cityscapes", split="train", labelled=False,
                                     list_file=d.target_list or None, augment=Augment(size=tuple(d.target_size) or None),
                                     limit=cfg.model.target_bn_frames, cache=d.cache)
        bn = DataLoader(frames, batch_size=d.batch_size, **loader.workers(min(d.workers, 2)))
    val_loader = DataLoader(val, batch_size=1, **loader.workers(min(d.workers, 2))) if val is not None else None
    return Streams(loader(labelled, seed), target, val_loader, bn)


def _fda_style(cfg: TrainConfig) -> FourierStyle | None:
    """Source images restyled with a target train image's low-frequency amplitude (data.fda_beta > 0)."""
    d = cfg.data
    if d.fda_beta <= 0:
        return None
    targets = find_samples(d.target_root, "cityscapes", split="train", list_file=d.target_list or None,
                           require_labels=False)
    return FourierStyle([s.image for s in targets], d.fda_beta, seed=cfg.run.seed + 2,
                        size=tuple(d.target_size) or None, cache=d.cache)


class _Loaders:
    """The loaders of one run: every infinite stream skips the same `start` draws and splits across DDP ranks;
    every loader (streams, evaluation, BatchNorm frames) spawns its workers once CUDA is in use (a fork after
    CUDA init can hang)."""

    def __init__(self, cfg: TrainConfig, device_type: str, env: DistEnv, start: int):
        self.d, self.device_type, self.env, self.start = cfg.data, device_type, env, start

    def workers(self, n: int) -> dict:
        """DataLoader options for `n` worker processes, started as data.worker_start says (every loader of a run
        alike) and kept for the whole run, so that spawning costs once, not at every evaluation."""
        if n == 0:
            return {"num_workers": 0}
        d = self.d
        method = d.worker_start if d.worker_start != "auto" else "spawn" if self.device_type == "cuda" else None
        forked = multiprocessing.get_context(method).get_start_method() == "fork"
        return {"num_workers": n, "persistent_workers": True, "multiprocessing_context": method,
                "worker_init_fn": partial(worker_init, forked=forked)}

    def __call__(self, dataset, seed: int) -> Iterator:
        sampler = InfiniteSampler(len(dataset), seed=seed, start=self.start, rank=self.env.rank, world=self.env.world)
        return iter(DataLoader(dataset, batch_size=self.d.batch_size, sampler=sampler, drop_last=True,
                               pin_memory=self.device_type == "cuda", **self.workers(self.d.workers)))
