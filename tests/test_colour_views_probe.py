"""bench/colour_views_probe.py: a checkpoint scored with its softmax averaged over random colour matrices of each
image; one view reproduces the plain evaluation."""
import pytest
import torch
from torch.utils.data import DataLoader

from training.checkpoints import load_trained
from training.data import Augment, SegmentationDataset
from training.evaluate import evaluate


def test_one_view_is_the_plain_evaluation_and_more_views_change_the_answer(synth_root, adapted, bench_module):
    probe = bench_module("colour_views_probe")
    torch.set_num_threads(1)
    results = probe.probe(adapted, synth_root, synth_root, views=4)
    assert list(results) == ["held-out source val", "target val"]
    assert all(sorted(cms) == [1, 3, 5] for cms in results.values())  # the image alone, + 2, + 4 matrices

    model, meta = load_trained(adapted)
    size = tuple(meta["train"]["data"]["target_size"])
    for name, (root, fmt, split) in {"held-out source val": (synth_root / "gta5", "gta5", None),
                                     "target val": (synth_root / "cityscapes", "cityscapes", "val")}.items():
        ds = SegmentationDataset(root, fmt, split=split, augment=Augment(size=size), resize_label=False)
        plain = evaluate(model, DataLoader(ds, batch_size=1), "19", ["19"], torch.device("cpu"))["19"]["miou"]
        cms = results[name]
        assert cms[1].miou() == pytest.approx(plain, abs=1e-9)
        assert cms[1].total == cms[5].total == sum(int((ds[i]["label"] != 255).sum()) for i in range(len(ds)))
    assert (results["target val"][5].matrix != results["target val"][1].matrix).any()  # the views do change it

    with pytest.raises(SystemExit, match="--views must be >= 1"):
        probe.probe(adapted, synth_root, synth_root, views=0)
