"""Target BatchNorm statistics (AdaBN): what jal-train evaluates and saves with model.target_bn_frames."""
import pytest
import torch
from torch.optim.swa_utils import update_bn

from training.checkpoints import load_trained
from training.config import ConfigError
from training.data import Augment, SegmentationDataset
from training.engine import Trainer
from tests.test_training import tiny_cfg


def test_target_bn_frames_evaluates_and_saves_with_statistics_of_the_target_frames(synth_root, tmp_path):
    cfg = tiny_cfg(synth_root, "adaptsegnet", iters=2)
    cfg.model.bn_mode, cfg.model.target_bn_frames = "train", 3
    trainer = Trainer(cfg.validate(), tmp_path / "run", progress=False)
    assert trainer.run()["status"] == "finished"
    saved, _ = load_trained(tmp_path / "run" / "checkpoints" / "last.pth")
    frames = SegmentationDataset(synth_root / "cityscapes", "cityscapes", split="train", labelled=False,
                                 augment=Augment(size=(96, 48)), limit=3)
    assert len(frames) == 3
    again, _ = load_trained(tmp_path / "run" / "checkpoints" / "last.pth")
    update_bn([torch.stack([frames[i]["image"] for i in range(2)]), frames[2]["image"][None]], again)
    for (name, a), b in zip(saved.state_dict().items(), again.state_dict().values()):
        if "running_" in name:  # the saved statistics are those of the first 3 target train frames
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name
    mean = [t for n, t in saved.state_dict().items() if n.endswith("running_mean")][0]
    assert mean.abs().sum() > 0


@pytest.mark.parametrize("change, message", [({"bn_mode": "frozen"}, "bn_mode=train"),
                                             ({"target_bn_frames": -1}, ">= 0")])
def test_target_bn_frames_refuses_what_it_cannot_do(synth_root, change, message):
    cfg = tiny_cfg(synth_root, "adaptsegnet")
    cfg.model.bn_mode, cfg.model.target_bn_frames = "train", 3
    for key, value in change.items():
        setattr(cfg.model, key, value)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


@pytest.mark.parametrize("bn_mode", ["frozen", "train"])
def test_estimated_statistics_bring_a_random_r101_into_range_and_keep_the_bn_policy(bn_mode):
    """Random weights keep a fresh network's statistics (mean 0, variance 1), which normalise nothing: R101's
    logits explode past fp16's range. The speed benchmarks estimate statistics first (training.models.norm)."""
    from training.models import build_model
    from training.models.norm import apply_bn_mode, estimate_statistics
    torch.manual_seed(0)
    model = build_model("deeplabv2-r101", 19, width=0.25, bn_mode=bn_mode).train()
    apply_bn_mode(model, bn_mode)
    x = torch.randn(1, 3, 48, 96, generator=torch.Generator().manual_seed(1))

    def largest_logit():
        with torch.no_grad():
            return model.eval()(x)["high"].abs().max().item()
    fresh = largest_logit()
    model.train()
    apply_bn_mode(model, bn_mode)
    modes = [m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    estimate_statistics(model, (torch.randn(2, 3, 48, 96) for _ in range(3)))
    assert [m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)] == modes
    assert {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}
    assert set(modes) == {bn_mode == "train"}
    estimated = largest_logit()
    assert fresh > 1e3 and estimated < 100, (fresh, estimated)
