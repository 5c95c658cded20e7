"""Torch datasets: the reference protocol, augmentation, and randomness that depends on nothing but the seed."""
import itertools

import numpy as np
import torch
from torch.utils.data import DataLoader

from jal_deploy.datasets import find_samples, read_image, read_label
from jal_deploy.labels import get_protocol
from training.data import IMG_MEAN_BGR, Augment, InfiniteSampler, SegmentationDataset


def test_reference_protocol_resizes_normalises_and_maps_labels(synth_root):
    ds = SegmentationDataset(synth_root / "gta5", "gta5", augment=Augment(size=(64, 32)))
    item = ds[0]
    assert item["image"].shape == (3, 32, 64) and item["image"].dtype == torch.float32
    assert item["label"].shape == (32, 64) and item["label"].dtype == torch.int64
    sample = find_samples(synth_root / "gta5", "gta5")[0]
    import cv2
    expected = cv2.resize(read_image(sample.image), (64, 32), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    np.testing.assert_allclose(item["image"].numpy().transpose(1, 2, 0), expected - np.float32(IMG_MEAN_BGR), atol=1e-4)
    labels = cv2.resize(read_label(sample, "gta5"), (64, 32), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(item["label"].numpy(), labels)


def test_sixteen_class_protocol_remaps_and_ignores_dropped_classes(synth_root):
    ds = SegmentationDataset(synth_root / "cityscapes", "cityscapes", split="val", protocol="16")
    label = ds[0]["label"].numpy()
    raw = read_label(ds.samples[0], "cityscapes")
    p16 = get_protocol("16")
    for k, t in enumerate(p16.train_ids):
        assert np.array_equal(label == k, raw == t)
    assert np.all(label[np.isin(raw, [9, 14, 16, 255])] == 255)


def test_val_labels_stay_full_size_and_unlabelled_target_has_no_label(synth_root):
    val = SegmentationDataset(synth_root / "cityscapes", "cityscapes", split="val", augment=Augment(size=(64, 32)),
                              resize_label=False)
    assert val[0]["image"].shape == (3, 32, 64) and val[0]["label"].shape == (64, 128)
    target = SegmentationDataset(synth_root / "cityscapes", "cityscapes", split="train", labelled=False)
    assert "label" not in target[0]


def test_augmentation_is_a_function_of_seed_and_index_only(synth_root):
    aug = Augment(size=(96, 48), scale=(0.5, 1.5), crop=(40, 24), flip=True)
    a = SegmentationDataset(synth_root / "gta5", "gta5", augment=aug, seed=3)
    b = SegmentationDataset(synth_root / "gta5", "gta5", augment=aug, seed=3)
    c = SegmentationDataset(synth_root / "gta5", "gta5", augment=aug, seed=4)
    for i in (0, 5, 17):  # virtual indices past the dataset length wrap with fresh randomness
        assert a[i]["image"].shape == (3, 24, 40) and a[i]["label"].shape == (24, 40)
        assert torch.equal(a[i]["image"], b[i]["image"]) and torch.equal(a[i]["label"], b[i]["label"])
    assert any(not torch.equal(a[i]["image"], c[i]["image"]) for i in range(6))
    assert not torch.equal(a[0]["image"], a[6]["image"])  # same file, another epoch, another crop


def test_infinite_sampler_resumes_and_splits_the_stream():
    full = list(itertools.islice(InfiniteSampler(5, seed=1), 23))
    assert sorted(full[:5]) == list(range(5)) and sorted(v % 5 for v in full[5:10]) == list(range(5))
    assert full[:5] != full[5:10]  # a fresh permutation per epoch
    assert list(itertools.islice(InfiniteSampler(5, seed=1, start=7), 16)) == full[7:23]
    r0 = list(itertools.islice(InfiniteSampler(5, seed=1, rank=0, world=2), 6))
    r1 = list(itertools.islice(InfiniteSampler(5, seed=1, rank=1, world=2), 6))
    assert r0 == full[0:12:2] and r1 == full[1:12:2]


def test_batches_do_not_depend_on_the_number_of_workers(synth_root):
    ds = SegmentationDataset(synth_root / "gta5", "gta5", augment=Augment(size=(64, 32), crop=(48, 24), flip=True))
    batches = []
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=2, sampler=InfiniteSampler(len(ds), seed=0), num_workers=workers)
        batches.append([b["image"] for b in itertools.islice(iter(loader), 4)])
    assert all(torch.equal(x, y) for x, y in zip(*batches))


def test_in_memory_cache_gives_exactly_the_uncached_items(synth_root):
    aug = Augment(size=(64, 32), scale=(0.8, 1.25), crop=(48, 24), flip=True)
    plain = SegmentationDataset(synth_root / "gta5", "gta5", augment=aug, seed=3)
    cached = SegmentationDataset(synth_root / "gta5", "gta5", augment=aug, seed=3, cache=True)
    for index in list(range(14)) + list(range(14)):  # the second pass comes from memory
        a, b = plain[index], cached[index]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert len(cached.cache) == len(cached) == 6


def test_validation_can_use_another_tree_than_the_target(synth_root, tmp_path):
    from jal_deploy.synth import generate
    from tests.test_training import tiny_cfg
    from training.engine import Trainer

    other = tmp_path / "heldout"
    generate(other, seed=5, counts={"gta5": 0, "synthia": 0, "cs_train": 0, "cs_val": 3}, size=(128, 64),
             progress=False, workers=1)
    cfg = tiny_cfg(synth_root, "source-only")
    cfg.data.val_root, cfg.data.val_limit = str(other / "cityscapes"), 0
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert len(trainer.val_loader.dataset) == 3
    assert all(str(s.image).startswith(str(other)) for s in trainer.val_loader.dataset.samples)
