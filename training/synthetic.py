"""Fill the data roots of a `data.synthetic` config with the embedded benchmark, generated once into a
cache folder (or `data.synthetic_dir`)."""
from __future__ import annotations

import os
from pathlib import Path

from .config import TrainConfig


def default_cache_dir(seed: int = 0) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "jal-deploy" / f"synthetic-seed{seed}"


def ensure_synthetic(cfg: TrainConfig, progress: bool = True) -> None:
    d = cfg.data
    if not d.synthetic:
        return
    from jal_deploy.synth import generate

    root = Path(d.synthetic_dir) if d.synthetic_dir else default_cache_dir()
    if not (root / "synth.json").is_file():
        generate(root, seed=0, progress=progress)
    d.synthetic_dir = str(root)
    d.source_root = d.source_root or str(root / d.source)
    d.target_root = d.target_root or str(root / "cityscapes")
