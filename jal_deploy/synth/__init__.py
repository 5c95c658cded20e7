"""Synthetic GTA5 / SYNTHIA / Cityscapes benchmark with a domain gap output-space adaptation can close.

Procedural street scenes (`scene.py`) rendered in three domain styles (`styles.py`, `render.py`) and
written in the real datasets' layouts (`writers.py`), so the same loaders run on real and synthetic data.
Pure NumPy + OpenCV (+ Pillow for GTA5's palette labels); never imports torch. docs/synthetic-benchmark.md explains the gap.

    from jal_deploy.synth import generate, generate_video
    summary = generate("data/synth", seed=0, counts={"gta5": 200, "synthia": 200, "cs_train": 200,
                                                     "cs_val": 100}, size=(512, 256))
    generate_video("street.mp4", seed=0, frames=75, fps=15.0)   # a drive through one street (video.py)
"""
from jal_deploy.synth.pipeline import DEFAULT_COUNTS, DEFAULT_SIZE, MANIFEST, VERSION, SynthError, generate
from jal_deploy.synth.styles import DOMAINS, SHIFTS
from jal_deploy.synth.video import generate_video

__all__ = ["generate", "generate_video", "SynthError", "DEFAULT_COUNTS", "DEFAULT_SIZE", "MANIFEST", "VERSION",
           "DOMAINS", "SHIFTS"]
