"""Fourier domain adaptation: amplitude/phase properties on real generated frames, identity, determinism."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from jal_deploy.datasets import find_samples, read_image
from training.data import Augment, SegmentationDataset
from training.fda import FourierStyle, fda_transfer, low_band, swap_low_amplitude


@pytest.fixture(scope="module")
def frames(synth_root):
    source = read_image(find_samples(synth_root / "gta5", "gta5")[0].image)
    target = read_image(find_samples(synth_root / "cityscapes", "cityscapes", split="train")[0].image)
    target = cv2.resize(target, (source.shape[1], source.shape[0]), interpolation=cv2.INTER_CUBIC)
    return source, target


def spectrum(image):
    return np.fft.fftshift(np.fft.fft2(image.astype(np.float64), axes=(0, 1)), axes=(0, 1))


def test_beta_zero_is_the_identity(frames):
    source, target = frames
    assert np.array_equal(fda_transfer(source, target, 0.0), source.astype(np.float32))


def test_low_band_takes_the_target_amplitude_and_keeps_the_source_phase(frames):
    source, target = frames
    beta = 0.05
    rows, cols = low_band(source.shape[:2], beta)
    b = int(np.floor(min(source.shape[:2]) * beta))
    assert (rows.stop - rows.start, cols.stop - cols.start) == (2 * b + 1, 2 * b + 1) and b == 3
    out, fs, ft = spectrum(swap_low_amplitude(source, target, beta)), spectrum(source), spectrum(target)
    np.testing.assert_allclose(np.abs(out[rows, cols]), np.abs(ft[rows, cols]), rtol=1e-9, atol=1e-6)
    strong = np.abs(fs[rows, cols]) > 1e-3 * np.abs(fs).max()
    np.testing.assert_allclose(np.angle(out[rows, cols])[strong], np.angle(fs[rows, cols])[strong], atol=1e-9)
    outside = np.ones(source.shape[:2], dtype=bool)
    outside[rows, cols] = False
    np.testing.assert_allclose(out[outside], fs[outside], rtol=1e-9, atol=1e-6)  # high frequencies untouched
    # The DC term is a channel's mean: the restyled image takes the target's mean colour exactly.
    np.testing.assert_allclose(swap_low_amplitude(source, target, beta).mean((0, 1)), target.mean((0, 1)), atol=1e-9)
    assert np.abs(source.mean((0, 1)) - target.mean((0, 1))).max() > 5  # ... which differs from the source's


def test_output_is_the_unclipped_transfer_clipped_to_0_255(frames):
    source, target = frames
    raw, out = swap_low_amplitude(source, target, 0.09), fda_transfer(source, target, 0.09)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255
    np.testing.assert_allclose(out, np.clip(raw, 0, 255), atol=1e-4)


def test_target_choice_and_images_depend_on_seed_and_index_only(synth_root):
    targets = [s.image for s in find_samples(synth_root / "cityscapes", "cityscapes", split="train",
                                             require_labels=False)]
    a, b, c = (FourierStyle(targets, 0.05, seed=s, size=(96, 48)) for s in (7, 7, 8))
    picks = [a.target_index(i) for i in range(40)]
    assert picks == [b.target_index(i) for i in range(40)] and picks != [c.target_index(i) for i in range(40)]
    assert len(set(picks)) == len(targets)  # every target image gets used

    def dataset(style):
        return SegmentationDataset(synth_root / "gta5", "gta5", augment=Augment(size=(96, 48), crop=(64, 32),
                                                                                  flip=True), seed=3, style=style)

    plain, styled, again = dataset(None), dataset(a), dataset(FourierStyle(targets, 0.05, seed=7, size=(96, 48),
                                                                             cache=True))
    for i in (0, 5, 13):
        assert np.array_equal(styled[i]["image"].numpy(), again[i]["image"].numpy())
        assert np.array_equal(styled[i]["label"].numpy(), plain[i]["label"].numpy())  # labels untouched
        assert not np.allclose(styled[i]["image"].numpy(), plain[i]["image"].numpy())


def test_fda_module_does_not_import_torch():
    code = "import sys, training.fda; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_trainer_restyles_the_source_stream_only(synth_root, tmp_path):
    from tests.test_training import tiny_cfg
    from training.engine import Trainer

    cfg = tiny_cfg(synth_root, "adaptsegnet", iters=1)
    cfg.data.fda_beta = 0.01
    trainer = Trainer(cfg, tmp_path / "fda", progress=False)
    assert isinstance(trainer.source_iter._dataset.style, FourierStyle)
    assert trainer.target_iter._dataset.style is None
    assert trainer.run()["status"] == "finished"
