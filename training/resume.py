"""Where a run continues from: the checkpoint `--resume` / `--resume-from` name, checked before any state loads.

A run folder outlives crashes and edits: `last.pth` may be damaged (then the newest readable snapshot is named),
and the config may have changed since (then only a change that keeps the network and the method may resume).
"""
from __future__ import annotations

from pathlib import Path

from . import checkpoints as ckpt
from .config import ConfigError, TrainConfig, from_dict


class ResumeError(RuntimeError):
    """A resume that cannot go on, with the message a user acts on."""


def read_resumable(out: Path, source: str | Path | None, cfg: TrainConfig) -> dict:
    """The state dict to resume `cfg`'s run in `out` from (`source`: None for checkpoints/last.pth, else a
    snapshot path, as given or inside `out`)."""
    path = resume_path(out, source)
    try:
        state = ckpt.read_checkpoint(path)
        if not isinstance(state, dict) or "iteration" not in state or "config" not in state:
            raise ckpt.CheckpointError(f"{path} is not a jal-train checkpoint (no iteration/config)")
    except ckpt.CheckpointError as e:
        raise ResumeError(f"--resume: {e}. {readable_snapshot_hint(out, path)}") from None
    try:
        saved = from_dict(state["config"])
    except ConfigError as e:
        raise ResumeError(f"--resume: {path}: {e}") from None
    # The init file only matters at the start: a moved or renamed init does not block a resume.
    arch_keys = [k for k in vars(cfg.model) if not k.startswith("init")]
    same_model = all(getattr(saved.model, k) == getattr(cfg.model, k) for k in arch_keys)
    same_method = all(getattr(saved.method, k) == getattr(cfg.method, k)
                      for k in ("name", "self_training", "pseudo_rectify"))
    if not same_model or not same_method:
        raise ResumeError(f"--resume: {path} was trained with another model or method "
                          f"({saved.model.arch}, {saved.method.name}"
                          f"{' + self-training' if saved.method.self_training else ''}"
                          f"{', rectified pseudo-label loss' if saved.method.pseudo_rectify else ''}"
                          "); use a new --out folder")
    return state


def resume_path(out: Path, source: str | Path | None) -> Path:
    """`--resume` takes checkpoints/last.pth; `--resume-from` a named snapshot (as given, or inside --out)."""
    if source is None:
        path = out / "checkpoints" / "last.pth"
        if not path.is_file():
            raise ResumeError(f"--resume: no checkpoint at {path}; start without --resume")
        return path
    path = Path(source)
    if not path.is_file() and not path.is_absolute() and (out / path).is_file():
        path = out / path
    if not path.is_file():
        raise ResumeError(f"--resume-from: no checkpoint at {source} (nor in {out})")
    return path


def readable_snapshot_hint(out: Path, broken: Path) -> str:
    """Name the newest snapshot that still loads, so a damaged last.pth does not end the run."""
    for snap in sorted((out / "checkpoints").glob("iter_*.pth"), reverse=True):
        if snap.resolve() == broken.resolve():
            continue
        try:
            state = ckpt.read_checkpoint(snap)
        except ckpt.CheckpointError:
            continue
        if isinstance(state, dict) and "iteration" in state:
            rel = snap.relative_to(out)
            return (f"The newest readable snapshot is {rel} (iteration {state['iteration']}): continue from it "
                    f"with `jal-train --out {out} --resume-from {rel}`")
    return f"No readable snapshot is left in {out / 'checkpoints'}: start a new run in another --out"
