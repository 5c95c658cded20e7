"""One run of the synthetic benchmark and what it records: a resumable training run or self-training round
cached as result.json (eval curve, wall seconds, discriminator statistics, WTM drift, pseudo labels), the
label-free snapshot picks of a finished run, and the scores of a pretraining without a second stage (held-out
source frames; target statistics with no training step). `synthetic_ablation.py` decides which runs a row needs."""
from __future__ import annotations

import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from jal_deploy.atomic import write_text
from training.checkpoints import load_trained, read_checkpoint
from training.config import merge_overrides, resolve
from training.data import Augment, SegmentationDataset
from training.engine import Trainer
from training.evaluate import evaluate
from training.pseudo_labels import PseudoLabelOptions
from training.selection import ADVERSARIAL, CRITERIA, RANKING, select_snapshot
from training.self_training import RoundInterrupted, self_train

from ablation_protocol import locked  # bench/, next to this module


class Interrupted(Exception):
    """A run stopped by Ctrl-C (its last checkpoint saved): the bench stops instead of going on to the rows that
    start from it; the same command resumes."""


def cached_result(run_dir: Path, report_only: bool, produce, name: str = "result.json"):
    """A run's cached `name` (result.json) when it has finished; else None with `report_only`, else `produce()`,
    kept (`produce` raises Interrupted for a run that did not finish)."""
    done = run_dir / name
    if done.is_file():
        return json.loads(done.read_text())
    if report_only:
        return None
    result = produce()  # raises Interrupted after a Ctrl-C
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(done, json.dumps(result, indent=1))  # atomic: seeds running side by side read these
    return result


def _evals(run_dir: Path) -> list[tuple[int, float]]:
    """(iteration, mIoU) of every 19-class evaluation a run logged."""
    with (run_dir / "eval.csv").open(newline="") as f:
        return [(int(r["iteration"]), float(r["miou"])) for r in csv.DictReader(f) if r["protocol"] == "19"]


def last_k_score(result: dict, last_k: int) -> tuple[float, int]:
    """A run's number: the mean target mIoU % of its last `last_k` evaluations, and how many there were."""
    last = [m for _, m in result["evals"][-last_k:]]
    return 100 * sum(last) / len(last), len(last)


def train(out: Path, overrides: dict, preset: str, report_only: bool = False) -> dict | None:
    """One resumable run; result.json once finished: eval curve, wall seconds (all its processes, up to the save
    each resumed from), discriminator stats, WTM drift.
    With `report_only`, None for a run that has not finished (nothing is trained)."""
    def produce() -> dict:
        cfg, last = resolve(preset, overrides), out / "checkpoints" / "last.pth"
        trainer = Trainer(cfg, out, resume=last.is_file(), progress=sys.stderr.isatty())
        if trainer.iteration >= cfg.last_iteration:  # trained to the end, stopped before result.json was written
            summary = {"status": "finished", "seconds": read_checkpoint(last).get("seconds", 0.0)}
        else:
            summary = trainer.run()  # its seconds count every process of a resumed run
        if summary["status"] != "finished":  # Ctrl-C: nothing may build on a half-trained run
            raise Interrupted(out)
        return {"evals": _evals(out), "seconds": summary["seconds"],
                "discriminators": _disc_stats(out / "train.csv"), "wtm_drift": _wtm_drift(trainer.model)}
    if report_only:
        return cached_result(out, report_only, produce)
    with locked(out):  # another row group's process may be training this run
        return cached_result(out, report_only, produce)


def _disc_stats(train_csv: Path, tail: int = 10) -> dict:
    """Mean of the last `tail` logged rows of every discriminator column (accuracies, p_target)."""
    with train_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))[-tail:]
    keys = [k for k in (rows[0] if rows else {}) if k.startswith(("d1_", "d2_", "d_wtm_"))]
    return {k: statistics.mean(float(r[k]) for r in rows) for k in keys if all(r[k] for r in rows)}


def _wtm_drift(model) -> dict:
    """||WTM - I|| / ||I|| per level: how far Dec^T moved from Dec."""
    drift = {}
    for name in ("wtm1", "wtm2"):
        wtm = getattr(model, name, None)
        if wtm is not None:
            w = wtm.conv.weight.detach().flatten(1)
            eye = torch.eye(w.shape[0], device=w.device)
            drift[name] = float((w - eye).norm() / eye.norm())
    return drift


def self_training(run_dir: Path, rounds_dir: Path, rounds: int, adapted: Path, overrides: dict, preset: str,
                  report_only: bool, pseudo: PseudoLabelOptions) -> dict | None:
    """Round `rounds` of self-training from the adapted checkpoint (earlier rounds are shared with the other
    +ssl rows), each round trained like an adaptation row plus the pseudo-label loss; the result adds the pseudo
    labels' kept fraction and per-class precision against the target train labels (the benchmark has them)."""
    def produce() -> dict:
        start = time.perf_counter()
        try:
            summaries = self_train(adapted, rounds_dir, rounds, preset, overrides, pseudo, progress=False,
                                   log=lambda *_: None)
        except RoundInterrupted:
            raise Interrupted(rounds_dir) from None
        train_dir = rounds_dir / f"round{rounds}" / "train"
        model, _ = load_trained(train_dir / "checkpoints" / "last.pth")
        return {"evals": _evals(train_dir), "seconds": time.perf_counter() - start,
                "discriminators": _disc_stats(train_dir / "train.csv"), "wtm_drift": _wtm_drift(model),
                "pseudo": summaries[-1]["pseudo"]}
    return cached_result(run_dir, report_only, produce)


def selection(run_dir: Path, snapshots_dir: Path, val_root: Path, report_only: bool) -> dict | None:
    """How the label-free snapshot choices of a finished run score: the target mIoU of the snapshot each criterion
    picks (`d-prob`, `d-ref` for runs with a discriminator, `entropy`), of `last`, and of the best by labels (the bound
    the label-free picks are judged against). Cached in selection.json next to the row's result."""
    def produce() -> dict:
        snaps = select_snapshot(snapshots_dir, by="entropy", val_root=str(val_root), progress=False)["snapshots"]
        picks = {c: min(snaps, key=RANKING[c]) for c in CRITERIA
                 if c not in ADVERSARIAL or snaps[0]["d_prob"] is not None}
        picks["best-by-labels"] = max(snaps, key=lambda r: r["miou"])
        return {"snapshots": len(snaps), **{k: {"iteration": r["iteration"], "miou": 100 * r["miou"]}
                                           for k, r in picks.items()}}
    no_snapshots = not (snapshots_dir / "checkpoints").is_dir()
    return cached_result(run_dir, report_only or no_snapshots, produce, name="selection.json")


def source_val_miou(run_dir: Path, overrides: dict, preset: str, tree: Path) -> float:
    cfg = resolve(preset, overrides)
    trainer = Trainer(cfg, run_dir, resume=True, progress=False)
    ds = SegmentationDataset(tree / "gta5", "gta5", augment=Augment(size=tuple(cfg.data.target_size)),
                             resize_label=False)
    return evaluate(trainer.model, DataLoader(ds, batch_size=1), "19", ["19"], trainer.device)["19"]["miou"]


def pretraining_score(pre_dir: Path, overrides: dict, preset: str, frames: int) -> dict:
    """A finished pretraining's last checkpoint scored on the target val with no training step: with BatchNorm
    statistics re-estimated on `frames` unlabelled target train frames (AdaBN as published; the `adabn` and `cr`
    rows add 500 iterations to that, this tells what the statistics do by themselves), or with 0 its own source
    statistics. One model, so no mean over evaluations. Returns the frames, the mIoU % and the IoU % per class."""
    ov = merge_overrides(overrides, {"model": {"init": str(pre_dir / "checkpoints" / "last.pth"), "bn_mode": "train",
                                               "target_bn_frames": frames}})
    with tempfile.TemporaryDirectory() as scratch:  # nothing is trained or saved: the folder stays empty
        result = Trainer(resolve(preset, ov), scratch, progress=False).evaluate()["19"]
    return {"frames": frames, "miou": 100 * result["miou"],
            "per_class": {name: 100 * iou for name, iou in result["per_class"].items()}}
