"""ClassMix online self-training (`method.mix=classmix`): the masks, the mixed batch, the EMA teacher, training."""
import json

import pytest
import torch

from jal_deploy.labels import IGNORE
from training.config import ConfigError
from training.engine import Trainer, TrainingError
from training.mixing import MeanTeacher, class_masks, mix_batch, to_size, weighted_seg_loss

from tests.test_training import read_rows, tiny_cfg
from tests.test_benchmark import _bench


def test_class_masks_paste_half_of_each_images_classes_and_never_ignored_pixels():
    labels = torch.tensor([[[0, 0, 1, 1, 2, IGNORE], [3, 3, 4, 4, 2, IGNORE]],   # five classes -> three pasted
                           [[5, 5, 5, 6, 6, 6], [5, 5, 5, 6, 6, 6]]])          # two classes -> one pasted
    masks = class_masks(labels, torch.Generator().manual_seed(0))
    for lab, mask, pasted in zip(labels, masks, (3, 1)):
        chosen = lab[mask].unique()
        assert chosen.numel() == pasted and IGNORE not in chosen.tolist()
        assert torch.equal(mask, torch.isin(lab, chosen))  # every pixel of a chosen class, nothing else
    again = class_masks(labels, torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)  # the same generator state draws the same classes (exact resume)
    draws = {tuple(class_masks(labels, torch.Generator().manual_seed(s))[0].flatten().tolist()) for s in range(20)}
    assert len(draws) > 3  # and other states other halves
    assert not class_masks(torch.full((1, 2, 2), IGNORE), torch.Generator()).any()


def test_mixed_batch_takes_pasted_pixels_and_labels_from_the_source_and_weights_target_pixels_by_confidence():
    xs, xt = torch.full((1, 3, 2, 4), 1.0), torch.full((1, 3, 2, 4), -1.0)
    ys = torch.tensor([[[7, 7, 8, 8], [7, 7, 8, 8]]])
    pseudo = torch.tensor([[[1, 1, 2, 2], [1, 1, 2, 2]]])
    confidence = torch.tensor([[[0.99, 0.5, 0.99, 0.5], [0.99, 0.99, 0.5, 0.5]]])  # 4 of 8 above 0.968
    masks = ys == 7
    images, labels, weights = mix_batch(xs, ys, xt, pseudo, confidence, masks, threshold=0.968)
    assert torch.equal(images[0, :, masks[0]], torch.ones(3, 4))
    assert torch.equal(images[0, :, ~masks[0]], -torch.ones(3, 4))
    assert labels.tolist() == [[[7, 7, 2, 2], [7, 7, 2, 2]]]
    assert weights.tolist() == [[[1.0, 1.0, 0.5, 0.5], [1.0, 1.0, 0.5, 0.5]]]
    images, labels = to_size(torch.zeros(1, 3, 4, 8), torch.zeros(1, 4, 8, dtype=torch.long), (2, 4))
    assert images.shape == (1, 3, 2, 4) and labels.shape == (1, 2, 4) and labels.dtype == torch.long


def test_weighted_loss_is_cross_entropy_when_every_weight_is_one_and_scales_with_the_weights():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 5, 4, 6), torch.randint(0, 5, (2, 4, 6))
    labels[0, 0, 0] = IGNORE
    plain = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE)
    ones = torch.ones(2, 4, 6)
    assert torch.allclose(weighted_seg_loss(logits, labels, ones), plain, atol=1e-6)
    assert torch.allclose(weighted_seg_loss(logits, labels, 0.25 * ones), 0.25 * plain, atol=1e-6)
    assert weighted_seg_loss(logits, torch.full_like(labels, IGNORE), ones).item() == 0.0


def test_mean_teacher_starts_as_the_student_and_then_follows_it_by_its_decay():
    student = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    teacher = MeanTeacher(student, decay=0.9)
    assert all(not p.requires_grad for p in teacher.model.parameters())
    w0 = student[0].weight.detach().clone()
    with torch.no_grad():
        student[0].weight.add_(1.0)
        student[1].running_mean.fill_(3.0)
    teacher.update(student)  # first step: alpha 0, the teacher takes the student's weights
    assert torch.allclose(teacher.model[0].weight, w0 + 1.0)
    assert torch.equal(teacher.model[1].running_mean, student[1].running_mean)  # buffers are copied
    with torch.no_grad():
        student[0].weight.add_(1.0)
    teacher.update(student)  # second step: alpha min(1 - 1/2, 0.9) = 0.5
    assert torch.allclose(teacher.model[0].weight, w0 + 1.5)
    teacher.steps = 100
    with torch.no_grad():
        student[0].weight.add_(1.0)
    teacher.update(student)  # from then on the decay: 0.9 * (w0 + 1.5) + 0.1 * (w0 + 3)
    assert torch.allclose(teacher.model[0].weight, w0 + 1.65, atol=1e-6)


def _mix_cfg(synth_root, method="jal-wtm", **optim):
    cfg = tiny_cfg(synth_root, method, **optim)
    cfg.method.mix = "classmix"
    return cfg.validate()


@pytest.mark.parametrize("method", ["source-only", "jal-wtm"])
def test_classmix_trains_beside_any_source_method_and_logs_its_terms(synth_root, tmp_path, method):
    trainer = Trainer(_mix_cfg(synth_root, method, iters=2), tmp_path / method, progress=False)
    assert trainer.run()["status"] == "finished" and trainer.teacher.steps == 2
    row = read_rows(tmp_path / method / "train.csv")[-1]
    assert float(row["mix1"]) > 0 and float(row["mix2"]) > 0
    assert (row["adv2"] != "") == (method == "jal-wtm")  # the adversarial terms stay with their method
    assert trainer.target_iter is not None  # source-only reads target images once ClassMix pastes onto them


def test_classmix_resumes_exactly_teacher_included(synth_root, tmp_path):
    straight = Trainer(_mix_cfg(synth_root), tmp_path / "straight", progress=False)
    straight.run()
    Trainer(_mix_cfg(synth_root, stop_at=2), tmp_path / "split", progress=False).run()
    resumed = Trainer(_mix_cfg(synth_root), tmp_path / "split", resume=True, progress=False)
    assert resumed.teacher.steps == 2
    resumed.run()
    for a, b in ((straight.model, resumed.model), (straight.teacher.model, resumed.teacher.model)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name
    plain = tiny_cfg(synth_root, iters=6)  # switching ClassMix off (or on) is another method: refused, named
    with pytest.raises(TrainingError, match="classmix self-training"):
        Trainer(plain, tmp_path / "split", resume=True, progress=False)


def test_classmix_config_errors_name_the_key(synth_root):
    cfg = tiny_cfg(synth_root, "oracle")
    cfg.method.mix = "classmix"
    with pytest.raises(ConfigError, match="method.mix pastes labelled source pixels"):
        cfg.validate()
    cfg = tiny_cfg(synth_root)
    cfg.method.mix = "cutmix"
    with pytest.raises(ConfigError, match="method.mix must be one of none, classmix"):
        cfg.validate()
    cfg.method.mix, cfg.method.mix_ema = "classmix", 1.0
    with pytest.raises(ConfigError, match="method.mix_ema"):
        cfg.validate()


def test_mix_rows_start_from_their_row_and_train_with_its_method(bench_module, tmp_path):
    rows = bench_module("ablation_rows")
    assert [rows.mix_start(r) for r in ("cr+jal-wtm+mix", "cr+mix", "cr+jal-wtm")] == ["cr+jal-wtm", "cr", None]
    assert [rows.row_method(r) for r in ("cr+jal-wtm+mix", "cr+mix", "jal-wtm+mix")] == [
        "jal-wtm", "source-only", "jal-wtm"]
    result = _bench(tmp_path, "--seeds", "0", "--rows", "source-only", "cr+mix", "oracle")
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((tmp_path / "seed0" / "cr+mix" / "config.json").read_text())
    assert config["method"]["mix"] == "classmix" and config["method"]["name"] == "source-only"
    assert config["model"]["init"] == str(tmp_path / "seed0" / "cr" / "checkpoints" / "last.pth")
    assert config["data"]["rand_conv"] is True  # the colour-randomised route's source stream
    assert "cr+mix" in json.loads((tmp_path / "summary.json").read_text())["rows"]
