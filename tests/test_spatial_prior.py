"""Spatial priors for pseudo labels (CBST-SP): the position likelihood, and pseudo labels that use it."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from jal_deploy.datasets import find_samples, read_label
from jal_deploy.labels import IGNORE
from tests.test_pseudo_labels import QUIET
from training.baselines import layout_counts, layout_prior
from training.checkpoints import load_trained
from training.cli import main as train_main
from training.data import Augment, SegmentationDataset
from training.evaluate import deployed_output
from training.pseudo_labels import N_BINS, PseudoLabelError, PseudoLabelOptions, make_pseudo_labels
import training.spatial_prior as spatial_prior
from training.spatial_prior import FLOOR, position_likelihood, source_spatial_prior


def test_position_likelihood_is_per_class_smoothed_and_floored():
    counts = np.zeros((3, 64, 128), np.int64)
    counts[0, 48:, :] = 5          # class 0: only the bottom quarter
    counts[1, :16, 60:68] = 1      # class 1: a small patch at the top
    q = position_likelihood(counts, kernel_fraction=0.05)
    assert q.shape == (3, 64, 128) and q.dtype == np.float32
    np.testing.assert_allclose(q.sum((1, 2)), 1.0, rtol=1e-5)             # q(pos | c) sums to 1 per class
    assert q[0, 48:].sum() > 0.95 and q[0, 44:].sum() > 0.999 - FLOOR       # a 7-cell kernel spills 3 rows
    assert q[0, :40].max() == pytest.approx(FLOOR / (64 * 128), rel=1e-3)  # far away: the floor only
    assert q[1, 8, 64] > 100 * q[1, 8, 10]                                  # mass stays near the patch
    np.testing.assert_allclose(q[2], 1.0 / (64 * 128), rtol=1e-6)           # never counted: uniform


def test_layout_counts_give_the_layout_prior(synth_root):
    counts = layout_counts(synth_root / "gta5", "gta5", size=(64, 32))
    assert counts.shape == (19, 32, 64) and counts.sum() > 0
    assert np.array_equal(counts.argmax(0), layout_prior(synth_root / "gta5", "gta5", size=(64, 32)))
    sky, road = 10, 0
    assert counts[sky, :8].sum() > counts[sky, -8:].sum() and counts[road, -8:].sum() > counts[road, :8].sum()


def test_source_prior_is_counted_once_per_tree_and_handed_out_as_copies(synth_root, monkeypatch):
    counted = []

    def counting(*args, **kwargs):  # the real count, recorded
        counted.append(args[0])
        return layout_counts(*args, **kwargs)
    monkeypatch.setattr(spatial_prior, "layout_counts", counting)
    size = (64, 30)  # a grid no other test asks for, so the first call below is a cache miss
    q = source_spatial_prior(synth_root / "gta5", "gta5", size=size)
    again = source_spatial_prior(synth_root / "gta5" / ".." / "gta5", "gta5", size=size)  # same tree, other spelling
    assert len(counted) == 1
    expected = position_likelihood(layout_counts(synth_root / "gta5", "gta5", size=size))
    np.testing.assert_array_equal(q, expected)
    q[:] = 0  # a caller writing into its copy leaves the cached prior alone
    np.testing.assert_array_equal(again, expected)
    np.testing.assert_array_equal(source_spatial_prior(synth_root / "gta5", "gta5", size=size), expected)


def test_pseudo_labels_with_a_spatial_prior_are_the_posterior_argmax(synth_root, adapted, tmp_path):
    out = tmp_path / "sp"
    summary = make_pseudo_labels(adapted, synth_root / "cityscapes", out,
                                 PseudoLabelOptions(batch=3, spatial_prior=True), **QUIET)
    s = summary["settings"]
    assert s["spatial_prior"] is True and s["prior_format"] == "gta5"
    assert s["prior_root"] == str((synth_root / "gta5").resolve())  # the checkpoint's own source data
    q = torch.from_numpy(source_spatial_prior(synth_root / "gta5", "gta5"))
    model, _ = load_trained(adapted)
    ds = SegmentationDataset(synth_root / "cityscapes", "cityscapes", split="train", labelled=False,
                             augment=Augment(size=(96, 48)))
    samples = find_samples(out, "cityscapes", split="train")
    thresholds = np.asarray(summary["threshold_bins"]) / N_BINS
    changed = 0
    for i, sample in enumerate(samples[:3]):
        with torch.no_grad():
            prob = torch.softmax(deployed_output(model(ds[i]["image"][None])), 1)
            prob = torch.nn.functional.interpolate(prob, size=(64, 128), mode="bilinear", align_corners=True)[0]
            post = prob * torch.nn.functional.interpolate(q[None], size=(64, 128), mode="bilinear")[0]
            conf, pred = (post / post.sum(0, keepdim=True)).max(0)
        written = read_label(sample, "cityscapes")
        kept = written != IGNORE
        assert kept.any() and np.array_equal(written[kept], pred.numpy()[kept])
        margin = np.abs(conf.numpy() - thresholds[pred.numpy()]) > 2 / N_BINS
        assert np.array_equal(kept[margin], (conf.numpy() >= thresholds[pred.numpy()])[margin])
        changed += int((pred != prob.argmax(0)).sum())
    assert changed > 0  # the prior moved some pixels to another class


def test_spatial_prior_needs_source_labels_and_is_on_the_cli(synth_root, adapted, tmp_path):
    with pytest.raises(PseudoLabelError, match="does not exist"):
        make_pseudo_labels(adapted, synth_root / "cityscapes", tmp_path / "x",
                           PseudoLabelOptions(spatial_prior=True, prior_root=str(tmp_path / "missing")), **QUIET)
    out = tmp_path / "cli"
    result = CliRunner().invoke(train_main, ["pseudo-label", str(adapted), "--target", str(synth_root / "cityscapes"),
                                             "--out", str(out), "--spatial-prior", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "--spatial-prior" in (out / "pseudo_labels.json").read_text()
