"""Label-free snapshot selection over a run's kept snapshots, checked against a direct computation."""
import json
import math

import pytest
import torch
from click.testing import CliRunner

from tests.test_training import tiny_cfg
from training.checkpoints import load_trained, read_checkpoint
from training.cli import main as train_main
from training.data import Augment, SegmentationDataset
from training.engine import Trainer
from training.models import Discriminator
from training.selection import SelectionError, run_snapshots, select_snapshot


@pytest.fixture(scope="module")
def run(synth_root, tmp_path_factory):
    cfg = tiny_cfg(synth_root, "jal-wtm", iters=3)
    cfg.run.save_every, cfg.run.keep = 1, 10
    out = tmp_path_factory.mktemp("select") / "run"
    Trainer(cfg, out, progress=False).run()
    return out


def test_snapshots_are_listed_once_each(run, tmp_path):
    snaps, last = run_snapshots(run)
    assert [(n, it) for n, _, it in snaps] == [("iter_0000001", 1), ("iter_0000002", 2), ("iter_0000003", 3)]
    assert last == "iter_0000003"  # last.pth holds iteration 3: not listed twice


def test_d_prob_is_the_mean_d2_source_probability_on_target_val_maps(synth_root, run):
    result = select_snapshot(run, "d-prob", progress=False)
    rows = {r["name"]: r for r in result["snapshots"]}
    assert result["choice"] == max(rows.values(), key=lambda r: r["d_prob"])["name"]
    assert [r["d_prob"] for r in result["snapshots"]] == sorted((r["d_prob"] for r in rows.values()), reverse=True)
    # Direct computation for one snapshot: D2 of the checkpoint on the high-level softmax of each val image.
    path = run / "checkpoints" / "iter_0000002.pth"
    model, _ = load_trained(path)
    d2 = Discriminator(19, 16).eval()
    d2.load_state_dict(read_checkpoint(path)["discriminators"]["d2"])
    val = SegmentationDataset(synth_root / "cityscapes", "cityscapes", split="val", augment=Augment(size=(96, 48)),
                              resize_label=False, limit=2)
    probs, entropies = [], []
    with torch.no_grad():
        for i in range(len(val)):
            x = val[i]["image"][None]
            out = model(x)
            up = lambda t: torch.softmax(torch.nn.functional.interpolate(t, size=(48, 96), mode="bilinear",
                                                                         align_corners=True), 1)
            probs.append(torch.sigmoid(d2(up(out["high"]))).mean().item())
            p = up(out["high_t"])
            entropies.append((-(p * p.log()).sum(1) / math.log(19)).mean().item())
    assert rows["iter_0000002"]["d_prob"] == pytest.approx(sum(probs) / len(probs), rel=1e-5)
    assert rows["iter_0000002"]["entropy"] == pytest.approx(sum(entropies) / len(entropies), rel=1e-5)
    assert all(0 <= r["miou"] <= 1 for r in rows.values())
    assert result["best_by_labels"] == max(rows.values(), key=lambda r: r["miou"])["name"]


def test_d_ref_judges_every_snapshot_with_the_newest_d2(synth_root, run):
    result = select_snapshot(run, "d-ref", progress=False)
    rows = {r["name"]: r for r in result["snapshots"]}
    assert [r["d_ref"] for r in result["snapshots"]] == sorted((r["d_ref"] for r in rows.values()), reverse=True)
    assert rows["iter_0000003"]["d_ref"] == pytest.approx(rows["iter_0000003"]["d_prob"], rel=1e-6)  # its own D2
    referee = Discriminator(19, 16).eval()
    referee.load_state_dict(read_checkpoint(run / "checkpoints" / "iter_0000003.pth")["discriminators"]["d2"])
    model, _ = load_trained(run / "checkpoints" / "iter_0000001.pth")
    val = SegmentationDataset(synth_root / "cityscapes", "cityscapes", split="val", augment=Augment(size=(96, 48)),
                              resize_label=False, limit=2)
    with torch.no_grad():
        probs = [torch.sigmoid(referee(torch.softmax(torch.nn.functional.interpolate(
            model(val[i]["image"][None])["high"], size=(48, 96), mode="bilinear", align_corners=True), 1))).mean().item()
            for i in range(len(val))]
    assert rows["iter_0000001"]["d_ref"] == pytest.approx(sum(probs) / len(probs), rel=1e-5)
    assert rows["iter_0000001"]["d_ref"] != pytest.approx(rows["iter_0000001"]["d_prob"], rel=1e-6)


def test_entropy_and_last_rank_their_way(run):
    by_entropy = select_snapshot(run, "entropy", progress=False)
    assert [r["entropy"] for r in by_entropy["snapshots"]] == sorted(r["entropy"] for r in by_entropy["snapshots"])
    assert select_snapshot(run, "last", progress=False)["choice"] == "iter_0000003"


def test_last_pth_is_scored_when_its_snapshot_was_pruned(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "checkpoints" / "iter_0000003.pth").unlink()
    snaps, last = run_snapshots(copy)
    assert [n for n, _, _ in snaps] == ["iter_0000001", "iter_0000002", "last"] and last == "last"


def test_d_prob_needs_a_run_with_discriminators(synth_root, tmp_path):
    Trainer(tiny_cfg(synth_root, "source-only", iters=2), tmp_path / "so", progress=False).run()
    for by in ("d-prob", "d-ref"):
        with pytest.raises(SelectionError, match="entropy"):
            select_snapshot(tmp_path / "so", by, progress=False)
    row = select_snapshot(tmp_path / "so", "entropy", progress=False)["snapshots"][0]
    assert row["d_prob"] is None and row["d_ref"] is None


def test_select_cli_offers_exactly_the_criteria():  # the CLI lists them without importing torch
    from training.selection import CRITERIA
    by = next(o for o in train_main.commands["select"].params if o.name == "by")
    assert tuple(by.type.choices) == CRITERIA


def test_select_cli_prints_ranking_choice_and_comparison(run, tmp_path):
    result = CliRunner().invoke(train_main, ["select", str(run), "--by", "entropy", "--no-progress",
                                             "--json", str(tmp_path / "sel.json")])
    assert result.exit_code == 0, result.output
    assert "<- choice" in result.output and "best by labels" in result.output and "jal-export" in result.output
    assert json.loads((tmp_path / "sel.json").read_text())["by"] == "entropy"
