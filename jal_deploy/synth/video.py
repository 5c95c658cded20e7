"""`generate_video()`: a short street video for the runtime demo (`jal-segment street.mp4 --model ...`).

A camera drives forward at `speed` through ONE procedural street (scene.py's drive mode), rendered in a
benchmark style (the Cityscapes target by default), so a model trained on the synthetic benchmark sees
frames like its target frames. Every frame starts from the same generator state, so the world, colours and
lighting hold still while the camera moves; only the sensor noise is drawn afresh per frame. The street
comes from its own seed stream, so it is none of the benchmark's frames. Same seed, same frames.

Every frame's exact labels are written beside the video as Cityscapes label ids (`street.mp4` ->
`street_labelIds/street_000000_labelIds.png`, ...), so `jal-segment street.mp4` scores the drive: mIoU,
temporal consistency and flicker (`jal_deploy.sources.Video` finds them).

pip's OpenCV has no H.264 writer: .mp4 is written as MPEG-4 Part 2 ('mp4v'), .avi as Motion JPEG.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from jal_deploy.atomic import atomic_path
from jal_deploy.sources import video_label_name, video_labels
from jal_deploy.synth.pipeline import SynthError
from jal_deploy.synth.render import render
from jal_deploy.synth.scene import make_scene
from jal_deploy.synth.styles import DOMAINS
from jal_deploy.synth.writers import label_ids

VIDEO_STREAM = 5                  # seed stream; the benchmark subsets use 1-4 (pipeline.SUBSETS)
FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}


def street_frames(seed: int = 0, frames: int = 75, fps: float = 15.0, size: tuple[int, int] = (512, 256),
                  speed: float = 13.9, style: str = "cityscapes") -> Iterator[np.ndarray]:
    """Yield the video's RGB uint8 frames (H, W, 3): frame i is seen speed * i / fps metres into the drive."""
    for rgb, _ in labelled_frames(seed, frames, fps, size, speed, style):
        yield rgb


def labelled_frames(seed: int = 0, frames: int = 75, fps: float = 15.0, size: tuple[int, int] = (512, 256),
                    speed: float = 13.9, style: str = "cityscapes") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (RGB frame, Cityscapes label ids) per frame: the scene's own labels, exact at every pixel."""
    domain = DOMAINS[style]
    W, H = size
    drive = speed * (frames - 1) / fps
    for i in range(frames):
        rng = np.random.default_rng(np.random.SeedSequence([seed, VIDEO_STREAM]))
        scene = make_scene(domain, rng, W, H, travel=min(speed * i / fps, drive), drive=drive)
        noise = np.random.default_rng(np.random.SeedSequence([seed, VIDEO_STREAM, i + 1]))
        yield render(scene, domain.appearance, rng, noise_rng=noise), label_ids(scene)


def _check(path: Path, seed, frames, fps, size, speed, style, force) -> None:
    """Refuse bad requests before any work, with the message the CLI shows."""
    if path.suffix.lower() not in FOURCC:
        raise SynthError(f"{path}: unsupported video suffix {path.suffix or '(none)'!r}; use "
                         f"{' or '.join(FOURCC)} (pip's OpenCV writes no H.264)")
    if path.is_dir():
        raise SynthError(f"{path} is a folder; give a file name such as {path / 'street.mp4'}")
    for existing in (path, video_labels(path)):
        if existing.exists() and not force:
            raise SynthError(f"{existing} exists; refusing to overwrite it. Pass --force (force=True) or choose "
                             f"another name.")
    if video_labels(path).exists() and not video_labels(path).is_dir():
        raise SynthError(f"{video_labels(path)} is a file; the video's labels go into a folder of that name")
    if style not in DOMAINS:
        raise SynthError(f"unknown style {style!r}; use one of {', '.join(DOMAINS)}")
    W, H = size
    if W < 64 or H < 32:
        raise SynthError(f"size {W}x{H} is too small (minimum 64x32)")
    if W % 2 or H % 2:
        raise SynthError(f"size {W}x{H}: use even sides (video codecs and players expect them)")
    if frames < 1 or not fps > 0 or not speed >= 0 or seed < 0:
        raise SynthError("need frames >= 1, fps > 0, speed >= 0 and seed >= 0")


def generate_video(path, seed: int = 0, frames: int = 75, fps: float = 15.0, size: tuple[int, int] = (512, 256),
                   speed: float = 13.9, style: str = "cityscapes", force: bool = False,
                   progress: bool = True) -> dict:
    """Write a `frames`-frame street video to `path` (.mp4 or .avi), and its per-frame labels to the folder
    `video_labels(path)`; speed in m/s (13.9 = 50 km/h).

    Both appear only when complete (temp file and folder + rename); existing ones are refused unless `force`.
    Returns a summary: path, labels (the folder), frames, fps, size, seed, style, codec, duration (video
    seconds), metres driven and seconds (wall time to generate). Raises SynthError for a refused request or a
    writer OpenCV cannot open; OSError if the folder cannot be written.
    """
    path = Path(path)
    size = (int(size[0]), int(size[1]))
    frames, fps, speed = int(frames), float(fps), float(speed)
    _check(path, seed, frames, fps, size, speed, style, force)
    codec = FOURCC[path.suffix.lower()]
    start = time.perf_counter()
    from tqdm import tqdm

    labels = video_labels(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{labels.name}.", dir=path.parent))
    try:
        with atomic_path(path) as tmp:
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*codec), fps, size)
            try:
                if not writer.isOpened():
                    raise SynthError(f"OpenCV cannot open a {codec!r} video writer for {path} (build without that "
                                     f"codec?); try {' or '.join(s for s in FOURCC if FOURCC[s] != codec)}")
                bar = tqdm(labelled_frames(seed, frames, fps, size, speed, style), total=frames,
                           desc="jal-data synth-video", unit="frame", disable=not progress)
                for i, (rgb, ids) in enumerate(bar):
                    writer.write(np.ascontiguousarray(rgb[..., ::-1]))
                    ok, png = cv2.imencode(".png", ids)
                    if not ok:
                        raise SynthError(f"OpenCV could not encode the label of frame {i}")
                    (staging / video_label_name(path.stem, i)).write_bytes(png.tobytes())
                bar.close()
            finally:
                writer.release()  # flushes the container before the rename (or before the temp file goes)
            if labels.is_dir():  # --force: the old labels go with the old video
                shutil.rmtree(labels)
            staging.rename(labels)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return {"path": str(path), "labels": str(labels), "frames": frames, "fps": fps, "size": list(size),
            "seed": int(seed),
            "style": style, "codec": codec, "duration": round(frames / fps, 3),
            "metres": round(speed * (frames - 1) / fps, 2), "seconds": round(time.perf_counter() - start, 2)}
