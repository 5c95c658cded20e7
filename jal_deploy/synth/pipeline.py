"""`generate()`: render the three trees, the AdaptSegNet-style list files and the `synth.json` manifest.

Every frame is seeded from (seed, subset, index) alone, so frames do not depend on generation order or on
the number of workers, and the same seed gives byte-identical files.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from jal_deploy.atomic import write_text
from jal_deploy.labels import CLASS_NAMES_19
from jal_deploy.synth import writers
from jal_deploy.synth.render import render
from jal_deploy.synth.scene import make_scene
from jal_deploy.synth.styles import SHIFTS, domains

VERSION = "1.0"
MANIFEST = "synth.json"        # written last: its presence means a complete generation
IN_PROGRESS = ".synth-in-progress"  # marks a folder as ours while frames are being written
TREES = ("gta5", "synthia", "cityscapes")
# subset -> (domain style, seed stream); cs_train and cs_val share the Cityscapes style
SUBSETS = {"gta5": ("gta5", 1), "synthia": ("synthia", 2), "cs_train": ("cityscapes", 3), "cs_val": ("cityscapes", 4)}
DEFAULT_COUNTS = {"gta5": 200, "synthia": 200, "cs_train": 200, "cs_val": 100}
DEFAULT_SIZE = (512, 256)


class SynthError(Exception):
    """A request `generate` refuses (existing output, bad arguments)."""


def _frame(task: tuple) -> tuple[str, str, np.ndarray]:
    subset, index, seed, size, out, label_shift, shift = task
    domain = domains(label_shift, shift)[SUBSETS[subset][0]]
    rng = np.random.default_rng(np.random.SeedSequence([seed, SUBSETS[subset][1], index]))
    scene = make_scene(domain, rng, *size)
    image = render(scene, domain.appearance, rng)
    out = Path(out)
    if subset == "gta5":
        name = writers.write_gta5(out / "gta5", index, image, scene)
    elif subset == "synthia":
        name = writers.write_synthia(out / "synthia", index, image, scene)
    else:
        name = writers.write_cityscapes(out / "cityscapes", subset[3:], index, image, scene)
    counts = np.bincount(scene.label.ravel(), minlength=256)
    return subset, name, np.append(counts[:19], counts[255])


def _worker_init() -> None:
    import signal

    import cv2
    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would only compete
    # Ctrl-C is the parent's business: it cancels queued frames and waits for the running ones, so no
    # worker dies half-way through an atomic write and leaves a temp file behind.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _prepare(out: Path, force: bool) -> None:
    """Refuse a non-empty folder unless forced; with force, clear a previous synthetic generation only."""
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return
    if not force:
        raise SynthError(f"{out} is not empty; refusing to overwrite it. Pass --force (force=True) to "
                         f"regenerate into it, or choose another folder.")
    manifest = out / MANIFEST
    ours = (out / IN_PROGRESS).is_file() or (
        manifest.is_file() and '"jal-data synth"' in manifest.read_text(errors="replace"))
    present = [t for t in TREES if (out / t).exists()]
    if present and not ours:
        # Never delete or overwrite a real dataset tree that merely has the same name.
        raise SynthError(f"{out} holds {', '.join(present)}/ but no {MANIFEST} from `jal-data synth`: "
                         f"refusing to touch what may be real data, even with --force.")
    write_text(out / IN_PROGRESS, "jal-data synth\n")  # still ours if we are interrupted from here on
    if manifest.is_file() and ours:
        manifest.unlink()
    for t in present:  # a previous synthetic generation: remove it so no stale frames remain
        shutil.rmtree(out / t)


def _manifest(seed, counts, size, fractions, label_shift, shift) -> str:
    styles = {name: {"appearance": dataclasses.asdict(d.appearance), "layout": dataclasses.asdict(d.layout)}
              for name, d in domains(label_shift, shift).items()}
    doc = {"generator": "jal-data synth", "version": VERSION, "seed": seed,
           "size": list(size), "counts": counts, "label_shift": label_shift, "shift": shift,
           "trees": {"gta5": "gta5", "synthia": "synthia", "cityscapes": "cityscapes"},
           "subsets": {k: {"style": v[0], "seed_stream": v[1]} for k, v in SUBSETS.items()},
           "styles": styles, "class_pixel_fraction": fractions}
    return json.dumps(doc, indent=2) + "\n"


def generate(out, seed: int = 0, counts: dict[str, int] | None = None, size: tuple[int, int] = DEFAULT_SIZE,
             force: bool = False, progress: bool = True, workers: int | None = None, label_shift: bool = True,
             shift: str = "colour") -> dict:
    """Generate the synthetic GTA5 / SYNTHIA / Cityscapes benchmark under `out`.

    counts: frames per subset (keys gta5, synthia, cs_train, cs_val; missing keys take DEFAULT_COUNTS).
    size: (width, height) of every frame. Returns a summary dict (paths, counts, seconds, class fractions).
    label_shift=False: the target streets have the source's composition (`styles.domains`).
    shift: the target shift family (`styles.SHIFTS`): "colour" (the original target: real-camera look, other
    camera and a road<->sidewalk, building<->vegetation colour swap), "appearance" (realism only: texture,
    shadows, haze, tone curve, blur, noise, JPEG; no swap) or "geometry" (GTA5's look; other camera, object
    scale and class frequencies) or "weather" (fog, rain, dull light; no swap). Only the Cityscapes-format
    target depends on it; `synth.json` records it.
    Raises SynthError if `out` is not empty and `force` is False.
    """
    if shift not in SHIFTS:
        raise SynthError(f"unknown shift {shift!r}; use one of {', '.join(SHIFTS)}")
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    unknown = set(counts) - set(SUBSETS)
    if unknown:
        raise SynthError(f"unknown subsets {sorted(unknown)}; use {sorted(SUBSETS)}")
    if any(int(n) < 0 for n in counts.values()) or seed < 0:
        raise SynthError("counts and seed must be non-negative")
    W, H = (int(v) for v in size)
    if W < 64 or H < 32:
        raise SynthError(f"size {W}x{H} is too small (minimum 64x32)")
    out = Path(out)
    _prepare(out, force)
    out.mkdir(parents=True, exist_ok=True)
    counts = {k: int(counts[k]) for k in SUBSETS}
    write_text(out / IN_PROGRESS, "jal-data synth\n")
    tasks = [(s, i, int(seed), (W, H), str(out), bool(label_shift), shift) for s in SUBSETS for i in range(counts[s])]
    workers = workers or min(8, os.cpu_count() or 1)
    start = time.perf_counter()
    names: dict[str, list[str]] = {s: [] for s in SUBSETS}
    pixels = {s: np.zeros(20, np.int64) for s in SUBSETS}
    from tqdm import tqdm

    def collect(result):
        subset, name, px = result
        names[subset].append(name)
        pixels[subset] += px
        bar.update()

    bar = tqdm(total=len(tasks), desc="jal-data synth", unit="frame", disable=not progress)
    todo, used = tasks, 1
    if workers > 1 and len(tasks) >= 4 * workers:
        done: set[tuple[str, int]] = set()
        # spawn: no inherited threads or locks; a pool that cannot start (e.g. a __main__ that cannot be
        # re-imported) raises BrokenProcessPool instead of hanging, and we finish in-process.
        ex = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init)
        try:
            for task, result in zip(tasks, ex.map(_frame, tasks, chunksize=4)):
                collect(result)
                done.add(task[:2])
            todo, used = [], workers
        except BrokenProcessPool:
            warnings.warn("worker processes failed to start; generating in this process instead", stacklevel=2)
            todo = [t for t in tasks if t[:2] not in done]
        finally:  # on Ctrl-C, drop queued frames; written files are complete (atomic), the marker stays
            ex.shutdown(wait=True, cancel_futures=True)
    for task in todo:
        collect(_frame(task))
    bar.close()
    lists = {"gta5": out / "gta5" / "train.txt", "synthia": out / "synthia" / "train.txt",
             "cs_train": out / "cityscapes" / "train.txt", "cs_val": out / "cityscapes" / "val.txt"}
    for s, path in lists.items():
        if counts[s]:
            write_text(path, "".join(n + "\n" for n in sorted(names[s])))
    fractions = {s: {n: round(float(c) / max(1, int(pixels[s].sum())), 6)
                     for n, c in zip(CLASS_NAMES_19 + ("void",), pixels[s])} for s in SUBSETS if counts[s]}
    write_text(out / MANIFEST, _manifest(seed, counts, (W, H), fractions, bool(label_shift), shift))
    (out / IN_PROGRESS).unlink()
    seconds = time.perf_counter() - start
    return {"out": str(out), "seed": seed, "size": [W, H], "counts": counts, "frames": len(tasks),
            "label_shift": bool(label_shift), "shift": shift,
            "seconds": round(seconds, 2), "workers": used,
            "lists": {s: str(p) for s, p in lists.items() if counts[s]}, "class_pixel_fraction": fractions}
