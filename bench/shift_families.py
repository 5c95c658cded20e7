#!/usr/bin/env python
"""A recipe (`jal-train pipeline`) on each target shift family of the embedded benchmark, with its baselines.

For every family (`jal-data synth --shift`: colour, appearance, geometry, weather) this runs the preset's recipe
through `training.pipeline.run_pipeline`, the function `jal-train pipeline` calls, on the family's frames, and
scores on a held-out target val (its own seed, never used for a choice):

  prior                 the blind per-pixel layout prior of the source labels (never looks at an image);
  source-only           the recipe's `source` stage (source labels only, its own source statistics);
  source-only+tgt-bn    that model with BatchNorm statistics of 200 unlabelled target frames, no training step;
  each recipe stage     the model of every model stage, as the pipeline records it;
  pick (rule)           the stage each label-free rule would pick among the candidates of the recipe's pick stage;
  oracle                the same network trained on the target train labels from scratch with the source stages'
                        budget (coarse + full) plus 500 iterations: the upper bound.

Gap closed = (row - source-only) / (oracle - source-only). The stages that read no target image (source-only and
colour-randomised pretraining) are the same for every family (the source frames and seed are identical), so
they are trained once and reused by the other families; each family computes its own signals and scores.
Everything resumes: run the same command again.

    python bench/shift_families.py --out runs/families                       # reduced protocol, every family
    python bench/shift_families.py --out /tmp/f --quick --families appearance  # seconds: the code path only
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from jal_deploy.atomic import write_text
from jal_deploy.machine import cpu_summary
from jal_deploy.synth import SHIFTS, generate
from training.baselines import layout_prior, prior_scores
from training.config import parse_set, resolve
from training.pipeline import (Inputs, PipelineInterrupted, open_run, run_pipeline, stage_config, stages_of,
                               val_miou)
from training.signals import pick

REDUCED = ("model.width=0.25", "data.source_size=192x96", "data.target_size=192x96")
QUICK = ("model.width=0.125", "data.source_size=96x48", "data.target_size=96x48", "optim.iters=3", "run.threads=1")
RULES = ("last", "entropy", "flip-agreement", "decoder-agreement", "share-drift")


def family_data(root: Path, family: str, frames: int, eval_frames: int, size: tuple[int, int]) -> dict[str, Path]:
    """Training frames (seed 0) and the held-out target val (seed 1127) of one family, generated once."""
    trees = {"train": (0, {"gta5": frames, "synthia": 0, "cs_train": frames, "cs_val": 0}),
             "eval": (1127, {"gta5": 0, "synthia": 0, "cs_train": 0, "cs_val": eval_frames})}
    out = {}
    for name, (seed, counts) in trees.items():
        tree = root / family / f"{name}-seed{seed}"
        if not (tree / "synth.json").is_file():
            generate(tree, seed=seed, counts=counts, size=size, force=tree.exists(), progress=False, shift=family)
        out[name] = tree
    return out


def reuse_source_stages(first: Path, run: Path, inputs: Inputs) -> None:
    """Seed `run` with the finished checkpoints of the stages that read no target image, trained in `first`
    (same source frames, same seed: the same weights); the pipeline then only scores them for this family."""
    if (run / "pipeline.json").is_file() or not (first / "pipeline.json").is_file():
        return
    open_run(run, inputs, stages_of(inputs.preset))  # the folder as run_pipeline's first call leaves it
    for k, stage in enumerate(stages_of(inputs.preset), 1):
        if not stage.makes_model:
            break
        cfg = stage_config(inputs, stage, "x.pth" if k > 1 else "")
        if cfg.flags.adversarial or cfg.flags.self_training or cfg.model.target_bn_frames:
            break
        src = first / f"{k:02d}-{stage.name}" / "checkpoints" / "last.pth"
        if not (first / f"{k:02d}-{stage.name}" / "stage.json").is_file():
            break
        dst = run / f"{k:02d}-{stage.name}" / "checkpoints" / "last.pth"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def adabn_score(checkpoint: Path, cfg_dict: dict, eval_tree: Path, frames: int) -> float:
    """A model with BatchNorm statistics re-estimated on `frames` target train frames, no training step."""
    from training.engine import Trainer

    ov = json.loads(json.dumps(cfg_dict))
    ov["model"].update(init=str(checkpoint), bn_mode="train", target_bn_frames=frames)
    ov["data"]["val_root"], ov["run"]["eval_every"] = str(eval_tree), 1
    with tempfile.TemporaryDirectory() as scratch:
        result = Trainer(resolve("", {k: v for k, v in ov.items() if k != "preset"}), scratch, progress=False)
        return 100 * result.evaluate()[ov["data"]["protocol"]]["miou"]


def oracle_score(folder: Path, inputs: Inputs, eval_tree: Path, quick: bool) -> float:
    """The source stages' schedule (coarse + full) trained on the target labels, plus 500 iterations at the
    adaptation learning rate: the benchmark's upper bound for the family."""
    from training.engine import Trainer

    done = folder / "oracle.json"
    if done.is_file():
        return json.loads(done.read_text())["miou"]
    stages = [s for s in stages_of(inputs.preset) if s.makes_model]
    source = [s for s in stages if s.sections.get("method", {}).get("name") == "source-only"
              and not s.sections.get("data", {}).get("rand_conv")]
    parts = [(s.name, s, {}) for s in source] + [("continue", source[-1], {"optim": {"iters": 3 if quick else 500,
                                                                                    "lr": 0.001}})]
    init = ""
    for name, stage, extra in parts:
        cfg = stage_config(inputs, stage, init)
        cfg.method.name, cfg.model.target_bn_frames = "oracle", 0
        ov = cfg.to_dict()
        for key, value in extra.items():
            ov[key].update(value)
        cfg = resolve("", {k: v for k, v in ov.items() if k != "preset"})
        run = folder / f"oracle-{name}"
        last = run / "checkpoints" / "last.pth"
        trainer = Trainer(cfg, run, resume=last.is_file(), progress=False)
        if trainer.iteration < cfg.last_iteration and trainer.run()["status"] != "finished":
            raise PipelineInterrupted(f"oracle stage {name} interrupted in {run}")
        init = str(last)
    miou = val_miou(Path(init), str(eval_tree), cfg)["miou"]
    write_text(done, json.dumps({"miou": miou}))
    return miou


def family_row(family: str, args, first: Path | None) -> dict:
    data = family_data(args.out / "data", family, args.frames, args.eval_frames, (512, 256) if not args.quick
                       else (128, 64))
    inputs = Inputs(preset=args.preset, source_root=str(data["train"] / "gta5"),
                    target_root=str(data["train"] / "cityscapes"), val_root=str(data["eval"] / "cityscapes"),
                    sets=parse_set(list(args.sets)), signal_frames=args.signal_frames)
    run = args.out / family / "route"
    if first is not None:
        reuse_source_stages(first, run, inputs)
    summary = run_pipeline(inputs, run, progress=False, log=lambda m: print(f"{family}: {m}", flush=True))
    stages = {s["name"]: s for s in summary["stages"]}
    models = [s for s in summary["stages"] if "val" in s]
    pick_stage = next(s for s in stages_of(args.preset) if s.kind == "pick")
    candidates = [stages[n] for n in (pick_stage.among or [s["name"] for s in models])]
    source = stages["source"]
    cfg = stage_config(inputs, next(s for s in stages_of(args.preset) if s.name == "source"), "")
    scores_path = args.out / family / "baselines.json"
    scores = json.loads(scores_path.read_text()) if scores_path.is_file() else {}
    if "prior" not in scores:
        scores["prior"] = 100 * prior_scores(layout_prior(data["train"] / "gta5", "gta5"),
                                             data["eval"] / "cityscapes").miou()
    if "source-only+tgt-bn" not in scores:
        scores["source-only+tgt-bn"] = adabn_score(run / source["checkpoint"], cfg.to_dict(),
                                                   data["eval"] / "cityscapes", 4 if args.quick else 200)
    if "oracle" not in scores:
        scores["oracle"] = oracle_score(args.out / family, inputs, data["eval"] / "cityscapes", args.quick)
    write_text(scores_path, json.dumps(scores, indent=1))
    picks = {rule: pick(candidates, rule)["name"] for rule in RULES}
    return {"family": family, "prior": scores["prior"], "source-only": source["val"]["miou"],
            "source-only+tgt-bn": scores["source-only+tgt-bn"], "oracle": scores["oracle"],
            "stages": {s["name"]: s["val"]["miou"] for s in models},
            "signals": {s["name"]: s["signals"] for s in models},
            "candidates": [c["name"] for c in candidates], "picks": picks, "recipe_pick": summary["final"]["stage"],
            "minutes": sum(s["seconds"] for s in summary["stages"]) / 60}


def table(rows: list[dict]) -> str:
    def gap(r, v):
        return 100 * (v - r["source-only"]) / max(r["oracle"] - r["source-only"], 1e-9)

    names = ["prior", "source-only", "source-only+tgt-bn", *rows[0]["stages"],
             *[f"pick: {rule}" for rule in RULES], "oracle"]
    head = "| row | " + " | ".join(r["family"] for r in rows) + " |"
    lines = [head, "|---" * (len(rows) + 1) + "|"]
    for name in names:
        cells = []
        for r in rows:
            if name.startswith("pick: "):
                stage = r["picks"][name[6:]]
                v, label = r["stages"][stage], f" ({stage})"
            else:
                v, label = r.get(name, r["stages"].get(name)), ""
            closed = "" if name in ("prior", "source-only", "oracle") else f", {gap(r, v):.1f} %"
            cells.append(f"{v:.2f}{closed}{label}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", default="synthetic-route", help="a recipe preset (default: synthetic-route)")
    ap.add_argument("--families", nargs="+", choices=SHIFTS, default=list(SHIFTS))
    ap.add_argument("--frames", type=int, default=600, help="source and target train frames (512x256)")
    ap.add_argument("--eval-frames", type=int, default=200, help="held-out target val frames (seed 1127)")
    ap.add_argument("--signal-frames", type=int, default=100)
    ap.add_argument("--full", action="store_true", help="the preset's own network and sizes (default: the reduced "
                                                        "protocol, width 0.25 at 192x96)")
    ap.add_argument("--quick", action="store_true", help="tiny frames, network and budgets: the code path only")
    ap.add_argument("--set", dest="extra", nargs="*", default=[], help="more KEY=VALUE overrides of every stage")
    args = ap.parse_args(argv)
    if args.quick:
        args.frames, args.eval_frames, args.signal_frames = 6, 3, 3
    args.sets = (() if args.full else REDUCED) + (QUICK if args.quick else ()) + tuple(args.extra)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, first = [], None
    start = time.perf_counter()
    try:
        for family in args.families:
            rows.append(family_row(family, args, first))
            first = first or args.out / family / "route"
            write_text(args.out / "families.json", json.dumps(
                {"preset": args.preset, "sets": list(args.sets), "cpu": cpu_summary(), "rows": rows}, indent=1))
    except (PipelineInterrupted, KeyboardInterrupt):
        print(f"interrupted: what finished in {args.out} is kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    print(f"\nRecipe {args.preset} ({' '.join(args.sets) or 'its own sizes'}) per target shift family, held-out "
          f"val (seed 1127, {args.eval_frames} frames), mIoU % and gap closed; "
          f"{(time.perf_counter() - start) / 60:.1f} min this call on {cpu_summary()} ({os.cpu_count()} cores)")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
