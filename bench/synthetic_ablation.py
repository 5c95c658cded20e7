#!/usr/bin/env python
"""Table 4 on the embedded synthetic benchmark, with its baselines: target mIoU per row over seeds.

Rows: `prior` (a blind per-pixel layout prior from the source labels: it never looks at an image),
`source-only`, the adaptation rows (`adabn`, `adaptsegnet`, `jal`, `wtm-dec1`, `wtm-dec2`, `wtm`, `jal-wtm`; the
pipeline rows `jal-wtm+...+ssl*`; the `cr` rows on a colour-randomised source pretraining), `oracle`
(the same network and budget trained on the *target* train labels: the upper bound). For each adaptation row
the table gives the **gap closed** = (row - source-only) / (oracle - source-only).

Protocol (the synthetic analogue of "ImageNet init, then adapt"), per seed:
  1. pretrain from scratch for `--pretrain-iters` with BatchNorm batch statistics: source-only on the GTA5-format
     source, and the oracle on the Cityscapes-format target train labels (never a source image);
  2. from the source-only checkpoint each adaptation row trains `--adapt-iters` more iterations; with
     `--target-bn-frames N` (default) BatchNorm normalises each batch in its own domain and the model is
     evaluated and saved with statistics re-estimated on N unlabelled target train frames (AdaBN; the `adabn`
     row is source-only training plus exactly that), with 0 every row keeps frozen source statistics;
     `source-only` continues on source data and `oracle` continues its own pretraining, both for the same
     number of iterations and, with `--baseline-bn train` (default), with batch statistics as in their
     pretraining (source-only's running statistics then come from source batches only: no target image
     ever reaches it); `--baseline-bn frozen` keeps the pretraining's statistics fixed instead;
  3. every run is scored on a **held-out** target val generated with `--eval-seed` (never used to choose the
     protocol) as the mean of its last `--last-k` evaluations: no snapshot is picked with target labels.
  Source-only is also scored on held-out *source* frames (the size of the gap); `cr@pretraining` scores the
  colour-randomised pretraining itself on the target val (its own source statistics: no target image at all),
  `adabn@pretraining` / `cr+adabn@pretraining` each pretraining with target statistics and no training step.
  Adversarial rows record their discriminators' accuracies, D2's mean source-probability on target maps and the
  WTM drift from identity.
  4. label-free selection: every second-stage run keeps a snapshot at each evaluation; `jal-train select`'s
     criteria (`d-prob` and `d-ref` for runs with a discriminator, `entropy`) pick one without labels, and a
     second table gives the target mIoU of each pick beside `last` and the best snapshot by labels (labels
     only score the picks).

The `cr` rows' pretraining trains from scratch on colour-randomised source images, or, with `--cr-warm-iters N`,
continues the finished source-only pretraining for N such iterations (a fine-tuned colour-blind network).

Runs are resumable (a finished run keeps result.json; an interrupted one resumes from its last checkpoint) and
any subset of rows and seeds can be run; the table is printed from whatever has finished. Seeds may run as
processes side by side on one folder (`--seeds 1` and `--seeds 2`): they share its frames and summary.json.

A second-stage study (another adaptation learning rate, length or val) need not repeat the pretrainings:
`--pretrained DIR` starts every row from DIR's finished pretrainings and training frames, only reading them. Its
protocol must match DIR's but for the second-stage fields (`SECOND_STAGE`). The scores of a pretraining itself
(`cr@pretraining`, the `@pretraining` rows, `cr@source-val`) are then computed on this folder's val from the last
checkpoint and kept here; `cr@pretraining` is one model then, not the mean of the pretraining's evaluations.

    python bench/synthetic_ablation.py --out runs/ablation                 # 3 seeds, every default row
    python bench/synthetic_ablation.py --out runs/ablation --seeds 0 --rows prior source-only jal-wtm oracle
    python bench/synthetic_ablation.py --out /tmp/q --quick                # seconds: the code path, no numbers
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import torch

from jal_deploy.atomic import write_text
from jal_deploy.machine import cpu_summary
from training.baselines import layout_prior, prior_scores
from training.config import merge_overrides, parse_set
from training.pseudo_labels import PseudoLabelOptions

# bench/, next to this script
from ablation_protocol import (FIELD_HELP, QUICK, Protocol, bn_policy, check_pretrained, coarse_stage, ensure_data,
                               load_protocol, locked, saved_protocol)
from ablation_rows import (ADAPT_ROWS, CR_DATA, DEFAULT_ROWS, ROWS, SOURCE_VAL, colour_randomised, round_options,
                           row_method, self_training_stages)
from ablation_runs import (Interrupted, cached_result, last_k_score, pretraining_score, selection, self_training,
                           source_val_miou, train)
from ablation_tables import curve_table, merge_seeds, pseudo_line, selection_table, table


def run_seed(seed: int, rows: list[str], p: Protocol, out: Path, data: dict[str, Path], threads: int,
             report_only: bool = False) -> dict:
    """{row: target mIoU %} for one seed (plus 'source-only@source-val' and 'cr@source-val': held-out source
    frames; 'cr@pretraining': the target score of cr's pretraining itself; 'adabn@pretraining' and
    'cr+adabn@pretraining': each pretraining with target statistics), running what has not finished."""
    train_tree, eval_tree = data["train"], data["eval"]
    base = merge_overrides({"data": {"synthetic": False, "source_root": str(train_tree / "gta5"),
                            "target_root": str(train_tree / "cityscapes"), "val_root": str(eval_tree / "cityscapes")},
                   "run": {"tensorboard": False, "seed": seed, **({"threads": threads} if threads else {})}},
                  parse_set(list(p.overrides)))
    scores, info, selections, curves = {}, {}, {}, {}
    if "prior" in rows:
        prior = layout_prior(train_tree / "gta5", "gta5")
        scores["prior"] = 100 * prior_scores(prior, eval_tree / "cityscapes").miou()
    pre_runs = {"source-only": "pretrain", "oracle": "pretrain-oracle"}
    pre_root = Path(p.pretrained or out) / f"seed{seed}"  # another folder's pretrainings are only read

    def pretraining(row: str) -> tuple[str, Path, dict]:
        """The method, folder and data options of the first stage a row starts from."""
        method = "oracle" if row == "oracle" else "source-only"
        if colour_randomised(row):
            return method, pre_root / f"{pre_runs[method]}-cr", CR_DATA
        return method, pre_root / pre_runs[method], {}

    def kept(path: Path, produce):
        """A score computed once and kept in `path` (None with `report_only` until then)."""
        return cached_result(path.parent, report_only, produce, name=path.name)

    def second_stage(row: str) -> dict:
        _, pre_dir, data_options = pretraining(row)
        return merge_overrides(base, {
            "method": {"name": row_method(row), "d_input": "onehot" if "+onehot" in row else "softmax",
                       **({"pseudo_rectify": True} if "+rect" in round_options(row) else {})},
            "model": {"init": str(pre_dir / "checkpoints" / "last.pth"), **bn_policy(row, p)},
            "data": {"fda_beta": p.fda_beta if "+fda" in row else 0.0, **data_options},
            "optim": {"iters": p.adapt_iters, "lr": p.adapt_lr, "lr_wtm": p.adapt_lr_wtm},
            # a snapshot at every evaluation, all kept: what label-free selection chooses from
            "run": {"eval_every": p.eval_every, "save_every": p.eval_every,
                    "keep": max(1, p.adapt_iters // p.eval_every) + 1}})

    def pretrain(row: str) -> tuple[Path, dict, dict | None]:
        """The folder, configuration and result (None until it has finished) of the pretraining a row starts
        from, training what it needs first."""
        pre_method, pre_dir, data_options = pretraining(row)
        pre = merge_overrides(base, {"method": {"name": pre_method}, "optim": {"iters": p.pretrain_iters},
                                     "data": data_options,
                            # a checkpoint at every evaluation: a long pretraining that is stopped resumes there
                            "run": {"eval_every": p.pretrain_eval_every or p.eval_every,
                                    "save_every": p.pretrain_eval_every or p.eval_every, "keep": 1}})
        read_only = report_only or bool(p.pretrained)
        coarse_iters = p.coarse_iters
        if colour_randomised(row) and p.cr_warm_iters:  # continues the finished plain source-only pretraining
            plain_dir, _, plain = pretrain("source-only")
            if plain is None:
                return pre_dir, pre, None
            pre = merge_overrides(pre, {"model": {"init": str(plain_dir / "checkpoints" / "last.pth")},
                                        "optim": {"iters": p.cr_warm_iters}})
            coarse_iters = p.cr_warm_coarse_iters
        if coarse_iters:  # the first part of the pretraining, at half size, in a folder of its own
            coarse_dir = pre_dir.with_name(pre_dir.name + "-coarse")
            if train(coarse_dir, coarse_stage(pre, p, coarse_iters), p.preset, read_only) is None:
                return pre_dir, pre, None
            pre = merge_overrides(pre, {"model": {"init": str(coarse_dir / "checkpoints" / "last.pth")}})
        return pre_dir, pre, train(pre_dir, pre, p.preset, read_only)

    # baselines first: every other row is scored against them
    for row in sorted(rows, key=lambda r: (r not in ("source-only", "oracle"), r != "source-only")):
        if row == "prior":
            continue
        pre_dir, pre, pre_res = pretrain(row)
        if pre_res is None:
            if p.pretrained and not report_only:
                print(f"seed {seed} {row}: skipped, {pre_dir} has not finished its pretraining", file=sys.stderr)
            continue
        if not p.pretrained:  # another folder's pretrainings were scored on its own val
            curves[pre_dir.name] = {"evals": pre_res["evals"], "minutes": pre_res["seconds"] / 60}
        # scores of the pretraining itself: kept beside it, or in this folder when it is another folder's (this
        # folder's val may be another)
        scores_dir = out / f"seed{seed}" / pre_dir.name if p.pretrained else pre_dir
        if colour_randomised(row):  # colour randomisation alone: its own source statistics, no target image
            if p.pretrained:  # its evaluations scored the other folder's val: the last checkpoint on this one
                own = kept(scores_dir / "own_stats.json", lambda: pretraining_score(pre_dir, pre, p.preset, 0))
                if own is not None:
                    scores["cr@pretraining"] = own["miou"]
            else:
                scores["cr@pretraining"] = last_k_score(pre_res, p.last_k)[0]
        if row in ADAPT_ROWS and p.target_bn_frames:  # the pretraining with target statistics, not trained further
            stats_row = ("cr+" if colour_randomised(row) else "") + "adabn@pretraining"
            stats = kept(scores_dir / "target_stats.json",
                         lambda: pretraining_score(pre_dir, pre, p.preset, p.target_bn_frames))
            if stats is not None:
                scores[stats_row] = stats["miou"]
        run_dir = out / f"seed{seed}" / row
        ov = second_stage(row)
        if "+ssl" in row:
            stem, adapted, rounds, spatial_prior, flip = self_training_stages(row)
            if train(out / f"seed{seed}" / adapted, second_stage(adapted), p.preset, report_only) is None:
                continue
            rounds_dir = out / f"seed{seed}" / f"{stem}+ssl"
            res = self_training(run_dir, rounds_dir, rounds, out / f"seed{seed}" / adapted / "checkpoints" / "last.pth",
                                ov, p.preset, report_only,
                                PseudoLabelOptions(spatial_prior=spatial_prior, flip=flip,
                                                   **({"percentile": 0.0} if "+all" in round_options(row) else {})))
            snapshots = rounds_dir / f"round{rounds}" / "train"
        else:
            res = train(run_dir, ov, p.preset, report_only)
            snapshots = run_dir
        if res is None:
            continue
        sel = selection(run_dir, snapshots, eval_tree / "cityscapes", report_only)
        if sel is not None:
            selections[row] = sel
            print(f"seed {seed} {row:12s} label-free selection over {sel['snapshots']} snapshots: "
                  + ", ".join(f"{k} {v['miou']:.2f} (it {v['iteration']})" for k, v in sel.items() if k != "snapshots"),
                  flush=True)
        scores[row], n_last = last_k_score(res, p.last_k)
        info[row] = {"minutes": res["seconds"] / 60, "discriminators": res["discriminators"],
                     "wtm_drift": res["wtm_drift"], **({"pseudo": res["pseudo"]} if "pseudo" in res else {})}
        print(f"seed {seed} {row:12s} target mIoU {scores[row]:6.2f} (mean of the last {n_last} evals, "
              f"{res['seconds'] / 60:.1f} min)", flush=True)
        if "pseudo" in res:
            print(f"seed {seed} {row:12s} {pseudo_line(res['pseudo'])}", flush=True)
        if row in SOURCE_VAL or colour_randomised(row):  # how well the network segments its own domain
            # the cr rows are evaluated with target statistics, so their pretraining is scored (on plain source
            # frames), once, whichever cr row comes first: the label-free measure of the colour-blind network
            where, where_ov = (run_dir, ov) if row == "source-only" else (pre_dir, pre)
            score = kept((run_dir if row == "source-only" else scores_dir) / "source_val.json",
                         lambda: 100 * source_val_miou(where, where_ov, p.preset, data["source-val"]))
            if score is not None:
                scores["source-only@source-val" if row == "source-only" else "cr@source-val"] = score
    return {"scores": scores, "info": info, "selection": selections, "curves": curves}


def machine() -> str:
    """Where the runs train: the GPU when torch sees one (run.device=auto), and the CPU in any case."""
    gpu = f"{torch.cuda.get_device_name()}; host CPU " if torch.cuda.is_available() else ""
    return gpu + cpu_summary()


def _protocol_value(default, given):
    """A command-line protocol value in the field's own type: `on`/`off` switches, `WxH` sizes, numbers."""
    if isinstance(default, bool):
        return given == "on"
    if isinstance(default, tuple):
        return tuple(int(v) for v in given.split("x"))
    return given


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=textwrap.fill("rows: " + ", ".join(ROWS), 100, break_on_hyphens=False))
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS), choices=ROWS, metavar="ROW",
                    help="rows to run (default: DEFAULT_ROWS of bench/ablation_rows.py; every row: below)")
    ap.add_argument("--quick", action="store_true", help="tiny network, frames and budgets: checks the code path")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: the preset's)")
    ap.add_argument("--report", action="store_true",
                    help="train nothing: print the table of the runs that have finished (e.g. after seeds ran as "
                         "separate processes side by side on one GPU); the protocol is the folder's own")
    for name, default in asdict(Protocol()).items():
        if isinstance(default, bool):
            ap.add_argument(f"--{name.replace('_', '-')}", choices=("on", "off"), default=None,
                            help=f"protocol switch (default {'on' if default else 'off'})")
        elif name != "overrides":
            kind = type(default) if not isinstance(default, tuple) else str
            ap.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                            help=FIELD_HELP.get(name, f"protocol value (default {default if not isinstance(default, tuple) else 'x'.join(map(str, default))})"))
    ap.add_argument("--set", dest="sets", nargs="*", default=[], help="extra key=value overrides for every run")
    args = ap.parse_args(argv)
    saved = args.out / "protocol.json"
    from_saved = args.report and saved.is_file()  # a report reads the folder's protocol: no flag to repeat
    p = load_protocol(saved) if from_saved else Protocol(**(QUICK if args.quick else {}))
    for name in asdict(p):
        value = getattr(args, name, None)
        if value is not None and name != "overrides":
            setattr(p, name, _protocol_value(getattr(p, name), value))
    p.overrides = tuple(args.sets or p.overrides) if from_saved else tuple(p.overrides) + tuple(args.sets)
    if p.cr_warm_coarse_iters and not p.cr_warm_iters:
        raise SystemExit("--cr-warm-coarse-iters is the first part of the warm-started colour-randomised pretraining: "
                         "give --cr-warm-iters too (its full-size part)")
    if p.pretrained:
        check_pretrained(p)
    if {"source-only", "oracle"} - set(args.rows) and set(args.rows) & set(ADAPT_ROWS):
        print("note: gap closed needs the source-only and oracle rows", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    if saved.is_file() and saved_protocol(saved) != json.loads(json.dumps(asdict(p))):
        raise SystemExit(f"{args.out} holds runs of another protocol ({saved}): use another --out")
    if not saved.is_file():  # atomic: processes running other seeds side by side read it
        write_text(saved, json.dumps(asdict(p), indent=1))
    data = ensure_data(args.out / "data", p)
    start = time.perf_counter()
    try:
        per_seed = {seed: run_seed(seed, args.rows, p, args.out, data, args.threads, args.report)
                    for seed in args.seeds}
    except Interrupted as e:
        print(f"interrupted in {e.args[0]} (what it finished is saved): run the same command again to resume",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # outside a training loop (scoring, data): every result is written whole or not at all
        print(f"interrupted: the finished runs in {args.out} are kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    text, rows = table(per_seed, args.rows, ADAPT_ROWS)
    variant = "" if p.label_shift else ", target without label shift"
    coarse = f"{p.coarse_iters} at half size + " if p.coarse_iters else ""
    warm_coarse = f"{p.cr_warm_coarse_iters} at half size + " if p.cr_warm_coarse_iters else ""
    warm = (f" (cr: {warm_coarse}{p.cr_warm_iters} colour-randomised iterations from source-only's)"
            if p.cr_warm_iters else "")
    frames = f"{p.source_frames or p.frames} source / {p.frames} target train frames; "
    header = (f"Synthetic benchmark ({p.preset}{variant}), held-out target val (seed {p.eval_seed}, {p.eval_frames} frames), "
              f"mIoU % over seeds {args.seeds}; {frames}{coarse}{p.pretrain_iters} pretraining{warm} + {p.adapt_iters} iterations per row; "
              f"{(time.perf_counter() - start) / 60:.1f} min this call on {machine()}")
    print(f"\n{header}\n{text}")
    curve_text = curve_table(per_seed)
    if curve_text:
        print(f"\nPretraining curves: target val mIoU % at each evaluation (the pretraining's own statistics) "
              f"and minutes so far{', full-size part' if p.coarse_iters else ''}:\n{curve_text}")
    sel_text = selection_table(per_seed, args.rows)
    if sel_text:
        print(f"\nTarget mIoU of the snapshot each criterion picks (labels only to score the picks), mean over seeds:"
              f"\n{sel_text}")
    minutes = {row: statistics.mean(m) for row in args.rows
               if (m := [per_seed[s]["info"][row]["minutes"] for s in args.seeds if row in per_seed[s]["info"]])}
    summary = args.out / "summary.json"
    with locked(summary):  # another seed's process may be merging its own results into the same file
        previous = json.loads(summary.read_text()) if summary.is_file() else {}
        merged = merge_seeds(previous.get("per_seed", {}), per_seed)
        if merged != per_seed:  # the file keeps every finished row and seed, not only this call's
            rows = table(merged, [r for r in ROWS if any(r in m["scores"] for m in merged.values())], ADAPT_ROWS)[1]
            minutes = {**previous.get("minutes_per_run", {}), **minutes}
        write_text(summary, json.dumps(
            {"protocol": asdict(p), "cpu": cpu_summary(), "machine": machine(), "rows": rows,
             "minutes_per_run": minutes, "per_seed": {str(s): v for s, v in sorted(merged.items())}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
