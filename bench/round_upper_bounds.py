"""Upper bounds of a finished self-training round of `synthetic_ablation.py`: the same round (same start, config,
length and rate) trained on better labels than its teacher's, to tell what limits it.

- `precise`: the round's own pseudo labels with every wrong pixel turned to ignore (the same kept pixels, all right);
- `true`: the target train frames' real labels on every pixel;
- `own`: the round's own pseudo labels unchanged, the reference for `--iters` (the round itself at another length).

`--start ROW` starts the student from another finished run of the seed (its `last.pth`) instead of the round's own
start: `--bounds own --start pretrain` is the round taught by the same teacher's labels with a student that starts
from the plain (colour-seeing) source pretraining. `precise` and `true` read target train labels, so they are
diagnostics, never rows of the benchmark table. Prints each run's mean of the last `last_k` evaluations beside the
round's own, and writes nothing outside `SEEDDIR/bound-*`.

    python bench/round_upper_bounds.py runs/c2f-warm-cpu --seed 0 --round-stem cr+jal-wtm+sp --bounds precise true
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ablation_runs import Interrupted, _evals, last_k_score, train  # noqa: E402  (bench/, next to this script)
from jal_deploy.datasets import read_label, read_raw_label, write_raw_label  # noqa: E402
from training.config import without_removed_keys  # noqa: E402

BOUNDS = ("precise", "true", "own")


def precise_tree(pseudo: Path, truth: Path, out: Path) -> Path:
    """A copy of the pseudo-label tree in which every pixel whose label disagrees with the truth is ignore (id 0)."""
    if (out / "done").is_file():
        return out
    for path in sorted((pseudo / "gtFine").glob("*/*/*_gtFine_labelIds.png")):
        rel = path.relative_to(pseudo)
        raw = read_raw_label(path, "cityscapes").copy()
        ours, real = read_label(path, "cityscapes"), read_label(truth / rel, "cityscapes")
        raw[(ours != real) & (ours != 255)] = 0
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        write_raw_label(out / rel, raw, "cityscapes")  # atomic: an interrupted tree has no half-written file
    if not (out / "leftImg8bit").exists():
        os.symlink(os.path.abspath(truth / "leftImg8bit"), out / "leftImg8bit")
    (out / "done").write_text("")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="a synthetic_ablation.py folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--round-stem", default="cr+jal-wtm+sp", help="the rounds folder SEED/<stem>+ssl (round 1 is used)")
    ap.add_argument("--bounds", nargs="+", choices=BOUNDS, default=["precise", "true"])
    ap.add_argument("--iters", type=int, default=0,
                    help="train the bounds this many iterations instead of the round's (poly over them; folder "
                         "bound-NAME-ITERSit): how far the round's length caps it")
    ap.add_argument("--start", default="",
                    help="start the student from SEED/START/checkpoints/last.pth, another finished run of the seed "
                         "(folder bound-NAME[-ITERSit]-from-START), instead of the round's own start")
    args = ap.parse_args(argv)
    if not (args.folder / "protocol.json").is_file():
        raise SystemExit(f"{args.folder}: no protocol.json there (not a synthetic_ablation.py folder)")
    protocol = json.loads((args.folder / "protocol.json").read_text())
    seed_dir, last_k = args.folder / f"seed{args.seed}", protocol["last_k"]
    round_dir = seed_dir / f"{args.round_stem}+ssl" / "round1"
    truth = args.folder / "data" / f"train-seed{protocol['data_seed']}" / "cityscapes"
    if not (round_dir / "train" / "eval.csv").is_file():
        raise SystemExit(f"{round_dir}: no finished round 1 (run its row with synthetic_ablation.py first)")
    # a round of an earlier version saved keys this one no longer has (at their old defaults: dropped)
    round_config = without_removed_keys(json.loads((round_dir / "train" / "config.json").read_text()))
    longer = args.iters and args.iters != round_config["optim"]["iters"]
    if "own" in args.bounds and not (longer or args.start):
        raise SystemExit("--bounds own retrains the round on its own labels: give it another --iters or a "
                         "--start, or it is the round itself")
    start = seed_dir / args.start / "checkpoints" / "last.pth"
    if args.start and not start.is_file():
        raise SystemExit(f"{start}: no such checkpoint (--start names a finished run of seed {args.seed})")
    score = last_k_score({"evals": _evals(round_dir / "train")}, last_k)[0]
    print(f"round 1 ({args.round_stem}): {score:.2f} mIoU (mean of the last {last_k})")
    for bound in args.bounds:
        config = copy.deepcopy(round_config)  # each run changes its own copy
        if bound != "own":  # `own` keeps the round's pseudo-label tree
            labels = truth if bound == "true" else precise_tree(round_dir / "pseudo", truth,
                                                                 seed_dir / "bound-precise-labels")
            config["data"]["target_labels"] = str(labels)
        name = f"bound-{bound}"
        if longer:
            config["optim"]["iters"], name = args.iters, f"{name}-{args.iters}it"
            config["run"]["keep"] = args.iters // config["run"]["eval_every"] + 1
        if args.start:
            config["model"]["init"], name = str(start), f"{name}-from-{args.start}"
        try:  # the round's whole config as the overrides of no preset: the same run but for its labels, length or start
            result = train(seed_dir / name, config, "")
        except Interrupted:
            print(f"{bound}: interrupted, run the same command again to resume", file=sys.stderr)
            return 130
        print(f"{name}: {last_k_score(result, last_k)[0]:.2f} mIoU (mean of the last {last_k})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
