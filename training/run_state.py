"""The half of a training run that checkpoints and resume depend on: what a checkpoint holds besides the network
(discriminators, optimisers, AMP scaler, iteration, best score, seconds spent), writing it, and
putting it back. Kept apart from the iteration so that the two directions, save and resume, read side by side."""
from __future__ import annotations

from pathlib import Path

import torch

from . import checkpoints as ckpt
from .resume import ResumeError, read_resumable


class TrainingError(RuntimeError):
    """A run that cannot start or continue, with a message a user can act on."""


class TrainingDiverged(TrainingError):
    pass


class RunState:
    """Mixed into `engine.Trainer`, whose set-up gives it `cfg`, `out`, `env`, `model`, `discs`, `opt_g`, `opt_wtm`,
    `opt_d`, `scaler`, `iteration`, `best`, `seconds` and `_target_statistics`."""

    def _state(self) -> dict:
        return {"config": self.cfg.to_dict(), "iteration": self.iteration, "best": self.best, "seconds": self.seconds,
                "discriminators": {n: d.state_dict() for n, d in self.discs.items()},
                "optimizers": {"g": self.opt_g.state_dict(),
                               "wtm": self.opt_wtm.state_dict() if self.opt_wtm else None,
                               **{n: o.state_dict() for n, o in self.opt_d.items()}},
                "scaler": self.scaler.state_dict()}

    def _assert_finite_weights(self) -> None:
        """A step can blow the weights up before any loss shows it: never save such a state."""
        for module in (self.model, *self.discs.values()):
            for name, t in module.state_dict().items():  # parameters and BN statistics
                if t.is_floating_point() and not torch.isfinite(t).all():
                    raise TrainingDiverged(f"weight {name} is not finite after iteration {self.iteration}")

    def save(self, name: str) -> Path:
        self._target_statistics()
        self._assert_finite_weights()
        path = self.out / "checkpoints" / name
        ckpt.save_checkpoint(path, self.model, **self._state())
        return path

    def _snapshot(self) -> None:
        if not self.env.is_main:
            return
        self.save(f"iter_{self.iteration:07d}.pth")
        self.save("last.pth")
        snaps = sorted((self.out / "checkpoints").glob("iter_*.pth"))
        for old in snaps[: max(0, len(snaps) - self.cfg.run.keep)]:
            old.unlink()

    def _resume(self, source: str | Path | None = None) -> None:
        """Loads the run's state (checked first by `resume.read_resumable`)."""
        try:
            state = read_resumable(self.out, source, self.cfg)
        except ResumeError as e:
            raise TrainingError(str(e)) from None
        self.model.load_state_dict(state["model"])
        for n, d in self.discs.items():
            d.load_state_dict(state["discriminators"][n])
        self.opt_g.load_state_dict(state["optimizers"]["g"])
        if self.opt_wtm is not None:
            self.opt_wtm.load_state_dict(state["optimizers"]["wtm"])
        for n, o in self.opt_d.items():
            o.load_state_dict(state["optimizers"][n])
        self.scaler.load_state_dict(state["scaler"])
        self.iteration, self.best = state["iteration"], state["best"]
        self._seconds_before = state.get("seconds", 0.0)  # checkpoints written before it was kept: 0
