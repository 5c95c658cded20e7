"""Self-training rounds: pseudo labels -> training on them -> pseudo labels from the new model -> ...

Round k (1..K) lives in `out/round{k}/`: `pseudo/` is the pseudo-label tree made by the model of round k-1
(round 1: the adapted checkpoint), `train/` a run initialised from that same model and trained with the
segmentation loss on the pseudo labels too (`method.self_training`). The next round labels with this run's
`last.pth` (never a snapshot chosen with target labels). A finished round leaves `round.json` and is skipped; an unfinished one resumes where it stopped (pseudo labels file by file, training from its last
checkpoint).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from jal_deploy.atomic import write_text

from .checkpoints import read_checkpoint
from .config import TrainConfig, apply_overrides, load_preset, without_removed_keys
from .pseudo_labels import PseudoLabelOptions, make_pseudo_labels
from .synthetic import ensure_synthetic


class RoundInterrupted(RuntimeError):
    """Ctrl-C during a round: its pseudo labels written so far and its last checkpoint are kept; the same
    command resumes."""


_ROOTS = ("source_root", "source_list", "target_root", "target_list", "val_root", "synthetic_dir")


def round_config(checkpoint: str | Path, pseudo_dir: str | Path, preset: str = "",
                 overrides: dict | None = None) -> TrainConfig:
    """The config of one round: the preset's values (without one, the checkpoint's own config), then
    `overrides`; data roots left empty come from the checkpoint's config; then self-training on
    `pseudo_dir`, initialised from `checkpoint` (the student's start)."""
    state = read_checkpoint(checkpoint)
    saved = state.get("config") if isinstance(state, dict) else None
    saved = without_removed_keys(saved) if saved else saved  # a checkpoint of an earlier version
    if not preset and not saved:
        raise ValueError(f"{checkpoint} carries no training config: pass a preset")
    cfg = TrainConfig(preset=preset or (saved or {}).get("preset", ""))
    apply_overrides(cfg, {k: v for k, v in (load_preset(preset) if preset else saved).items() if k != "preset"})
    apply_overrides(cfg, overrides or {})
    for key in _ROOTS:
        if saved and not getattr(cfg.data, key):
            setattr(cfg.data, key, saved["data"].get(key, ""))
    cfg.method.self_training, cfg.data.target_labels = True, str(pseudo_dir)
    cfg.model.init, cfg.model.init_fmt = str(checkpoint), "auto"
    return cfg.validate()


def self_train(checkpoint: str | Path, out: str | Path, rounds: int, preset: str = "", overrides: dict | None = None,
               options: PseudoLabelOptions | None = None, progress: bool = True, log=print) -> list[dict]:
    """Run (or resume) `rounds` self-training rounds from an adapted checkpoint; one summary per round:
    {'round', 'checkpoint', 'pseudo': {kept_total, precision}, 'eval': the run's last evaluation}."""
    from .engine import Trainer  # torch-heavy: only when training

    out, model = Path(out), Path(checkpoint)
    summaries = []
    for k in range(1, rounds + 1):
        folder = out / f"round{k}"
        done = folder / "round.json"
        if done.is_file():
            summaries.append(json.loads(done.read_text()))
            model = folder / "train" / "checkpoints" / "last.pth"  # where it is now, should the folder have moved
            log(f"round {k}: finished earlier ({model})")
            continue
        cfg = round_config(model, folder / "pseudo", preset, overrides)
        ensure_synthetic(cfg, progress=progress)
        d = cfg.data
        opts = options or PseudoLabelOptions()
        opts = dataclasses.replace(opts, list_file=d.target_list, size=tuple(opts.size or d.target_size))
        log(f"round {k}: pseudo labels from {model}")
        try:
            pseudo = make_pseudo_labels(model, d.target_root, folder / "pseudo", opts, progress=progress,
                                        command=f"self-train round {k}", log=log)
        except KeyboardInterrupt:  # each file is written atomically, so the ones on disk are whole and kept
            raise RoundInterrupted(f"round {k} interrupted while writing its pseudo labels in {folder / 'pseudo'} "
                                   "(the files written are kept); run the same command again to resume") from None
        run_dir = folder / "train"
        last = run_dir / "checkpoints" / "last.pth"
        finished = last.is_file() and read_checkpoint(last)["iteration"] >= cfg.last_iteration
        result = {"status": "finished", "last_eval": {}}
        if not finished:
            log(f"round {k}: training in {run_dir}")
            result = Trainer(cfg, run_dir, resume=last.is_file(), progress=progress).run()
            if result["status"] != "finished":
                raise RoundInterrupted(f"round {k} interrupted in {run_dir}; run the same command again to resume")
        summary = {"round": k, "checkpoint": str(last), "pseudo_from": str(model),
                   "pseudo": {"kept_total": pseudo["kept_total"], "precision": pseudo.get("precision")},
                   "eval": result["last_eval"]}
        write_text(done, json.dumps(summary, indent=1))
        summaries.append(summary)
        model = last
    return summaries
