"""Photometric augmentation: each adjustment's defining property on a real generated frame, identity when off,
determinism per (seed, index), labels untouched, the trainer wiring and config validation."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from jal_deploy.datasets import find_samples, read_image
from training.config import ConfigError
from training.data import Augment, SegmentationDataset
from training.photometric import (Photometric, RandomConvolution, adjust_brightness, adjust_contrast, adjust_hue,
                                  adjust_saturation, compose, random_convolution)


@pytest.fixture(scope="module")
def frame(synth_root):
    return read_image(find_samples(synth_root / "gta5", "gta5")[0].image).astype(np.float32)


def luma(image):
    return 0.114 * image[..., 0] + 0.587 * image[..., 1] + 0.299 * image[..., 2]


def test_factor_one_and_zero_shift_are_identities(frame):
    for out in (adjust_brightness(frame, 1.0), adjust_contrast(frame, 1.0), adjust_saturation(frame, 1.0)):
        np.testing.assert_allclose(out, frame, atol=1e-4)
    np.testing.assert_allclose(adjust_hue(frame, 0.0), frame, atol=0.05)
    assert np.array_equal(Photometric(0.0, blur=False)(frame.astype(np.uint8), 3), frame)


def test_each_adjustment_does_what_its_name_says(frame):
    np.testing.assert_allclose(adjust_brightness(frame, 0.5), frame * 0.5, atol=1e-4)
    grey = adjust_saturation(frame, 0.0)  # saturation 0: every channel equals the luma
    np.testing.assert_allclose(grey, np.repeat(luma(frame)[..., None], 3, axis=2), atol=1e-3)
    flat = adjust_contrast(frame, 0.0)  # contrast 0: the mean grey everywhere
    np.testing.assert_allclose(flat, np.full_like(frame, luma(frame).mean()), atol=1e-3)
    assert adjust_contrast(frame, 1.2).std() > frame.std()
    # Hue: a turn and its inverse come back; a third of a turn maps B -> G -> R -> B on pure primaries.
    np.testing.assert_allclose(adjust_hue(adjust_hue(frame, 0.2), -0.2), frame, atol=0.05)
    primaries = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.float32)  # BGR: blue, green, red
    np.testing.assert_allclose(adjust_hue(primaries, 1 / 3), [[[0, 0, 255], [255, 0, 0], [0, 255, 0]]], atol=0.05)
    hsv = cv2.cvtColor((frame / 255).astype(np.float32), cv2.COLOR_BGR2HSV)
    hsv2 = cv2.cvtColor((adjust_hue(frame, 0.1) / 255).astype(np.float32), cv2.COLOR_BGR2HSV)
    np.testing.assert_allclose(hsv2[..., 1:], hsv[..., 1:], atol=1e-3)  # saturation and value kept


def test_output_is_float32_in_range_and_depends_on_seed_and_index_only(frame):
    a, b, c = Photometric(0.2, True, seed=5), Photometric(0.2, True, seed=5), Photometric(0.2, True, seed=6)
    outs = [a(frame, i) for i in range(12)]
    assert all(o.dtype == np.float32 and o.min() >= 0 and o.max() <= 255 and o.shape == frame.shape for o in outs)
    assert all(np.array_equal(o, b(frame, i)) for i, o in enumerate(outs))
    assert not all(np.array_equal(o, c(frame, i)) for i, o in enumerate(outs))
    changed = sum(not np.allclose(o, frame) for o in outs)
    assert 8 <= changed <= 12  # jitter p 0.8, blur p 0.5: nearly every image changes, rarely none
    with pytest.raises(ValueError, match="strength"):
        Photometric(0.7)


def test_random_convolution_is_a_blend_of_the_image_and_a_convolution(frame):
    eye = np.zeros((3, 3, 1, 1), dtype=np.float32)
    eye[[0, 1, 2], [0, 1, 2]] = 1.0
    np.testing.assert_allclose(random_convolution(frame, eye, 0.0), frame, atol=1e-3)  # identity kernel
    rng = np.random.default_rng(0)
    mix = rng.normal(0, 0.6, (3, 3, 1, 1)).astype(np.float32)
    # a 1x1 kernel is a colour matrix on the mid-grey-centred pixels
    expected = (frame - 127.5) @ mix[:, :, 0, 0].T
    np.testing.assert_allclose(random_convolution(frame, mix, 0.0), expected + 127.5, atol=1e-2)
    np.testing.assert_allclose(random_convolution(frame, mix, 0.25), 0.25 * frame + 0.75 * (expected + 127.5), atol=1e-2)
    k5 = rng.normal(0, 0.1, (3, 3, 5, 5)).astype(np.float32)
    flat = np.full((20, 30, 3), 127.5, dtype=np.float32)  # mid-grey is the centre: stays mid-grey
    np.testing.assert_allclose(random_convolution(flat, k5, 0.3), flat, atol=1e-4)


def test_random_convolution_draws_depend_on_seed_and_index_only(frame):
    a, b, c = RandomConvolution(seed=4), RandomConvolution(seed=4), RandomConvolution(seed=5)
    sizes = set()
    for i in range(40):
        (wa, alpha), (wb, beta) = a.draw(i), b.draw(i)
        assert np.array_equal(wa, wb) and alpha == beta and 0 <= alpha <= 1 and wa.shape[:2] == (3, 3)
        sizes.add(wa.shape[-1])
    assert sizes == {1, 3, 5, 7} and not np.array_equal(a.draw(0)[0], c.draw(0)[0])
    out = a(frame, 3)
    assert out.dtype == np.float32 and out.shape == frame.shape and np.array_equal(out, b(frame, 3))


def test_colour_randomisation_is_a_random_colour_matrix_on_every_image(frame):
    plain = RandomConvolution(seed=4, kernels=(1,), mix=False)
    mixed = RandomConvolution(seed=4, kernels=(1,))
    for i in range(10):
        (w, alpha), (wm, alpha_m) = plain.draw(i), mixed.draw(i)
        assert w.shape == (3, 3, 1, 1) and alpha == 0.0 and 0 < alpha_m < 1
        assert np.array_equal(w, wm)  # the same stream of draws as the mixing variant: only the blend differs
        expected = (frame - 127.5) @ w[:, :, 0, 0].T + 127.5
        np.testing.assert_allclose(plain(frame, i), expected, atol=1e-2)
    # colour carries no label information: a class's mean colour is a different colour in each image
    means = np.array([plain(frame, i).reshape(-1, 3).mean(0) for i in range(10)])
    assert means.std(0).min() > 5


def test_compose_applies_steps_in_order_and_skips_none(frame):
    double, plus = (lambda im, i: im * 2), (lambda im, i: im + 1)
    assert compose(None, None) is None and compose(None, double) is double
    np.testing.assert_allclose(compose(double, None, plus)(frame, 0), frame * 2 + 1)


def test_dataset_jitters_images_and_keeps_labels(synth_root):
    def dataset(style):
        return SegmentationDataset(synth_root / "gta5", "gta5", augment=Augment(size=(96, 48), flip=True), seed=3,
                                   style=style)

    plain, jittered = dataset(None), dataset(Photometric(0.2, True, seed=1))
    assert any(not np.allclose(jittered[i]["image"].numpy(), plain[i]["image"].numpy()) for i in range(4))
    for i in range(4):
        assert np.array_equal(jittered[i]["label"].numpy(), plain[i]["label"].numpy())


def test_photometric_module_does_not_import_torch():
    code = "import sys, training.photometric; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_trainer_jitters_the_labelled_stream_only(synth_root, tmp_path):
    from tests.test_training import tiny_cfg
    from training.engine import Trainer

    cfg = tiny_cfg(synth_root, "adaptsegnet", iters=1)
    cfg.data.color_jitter, cfg.data.blur, cfg.data.rand_conv = 0.2, True, True
    trainer = Trainer(cfg, tmp_path / "jit", progress=False)
    style = trainer.source_iter._dataset.style  # jitter then random convolution, in that order
    image = np.full((48, 96, 3), 100, dtype=np.uint8)
    expected = RandomConvolution(seed=cfg.run.seed + 4)(Photometric(0.2, True, seed=cfg.run.seed + 3)(image, 5), 5)
    np.testing.assert_allclose(style(image, 5), expected, atol=1e-4)
    assert trainer.target_iter._dataset.style is None
    assert trainer.run()["status"] == "finished"
    oracle = tiny_cfg(synth_root, "oracle", iters=1)
    oracle.data.color_jitter = 0.2
    assert isinstance(Trainer(oracle, tmp_path / "or", progress=False).source_iter._dataset.style, Photometric)
    oracle.data.color_jitter = 0.8
    with pytest.raises(ConfigError, match="color_jitter"):
        oracle.validate()
    oracle.data.color_jitter, oracle.data.rand_conv_kernels = 0.2, (1, 4)
    with pytest.raises(ConfigError, match="rand_conv_kernels"):
        oracle.validate()


def test_trainer_randomises_colour_with_the_configured_kernels(synth_root, tmp_path):
    from tests.test_training import tiny_cfg
    from training.engine import Trainer

    cfg = tiny_cfg(synth_root, "source-only", iters=1)
    cfg.data.rand_conv, cfg.data.rand_conv_kernels, cfg.data.rand_conv_mix = True, (1,), False
    style = Trainer(cfg, tmp_path / "cr", progress=False).source_iter._dataset.style
    image = np.random.default_rng(0).integers(0, 255, (48, 96, 3)).astype(np.uint8)
    weights, alpha = RandomConvolution(seed=cfg.run.seed + 4, kernels=(1,), mix=False).draw(7)
    assert alpha == 0.0
    np.testing.assert_allclose(style(image, 7), random_convolution(image, weights, 0.0), atol=1e-4)
