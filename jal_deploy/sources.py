"""Where frames come from: an image, a folder, a glob, a video file, a camera index or stream URL, or a
labelled dataset tree (`cityscapes:PATH`, `gta5:PATH`, `synthia:PATH`).

Every source yields `Item`s in order. A file that cannot be decoded becomes an `Item` with `error` set (the
job lists it and goes on) rather than an exception, so one bad frame never loses the work around it.
"""
from __future__ import annotations

import glob as globlib
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from jal_deploy.datasets import FORMATS, DatasetError, find_samples, read_label
from jal_deploy.datasets.layout import tree_format

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jp2"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts"}
STREAM_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")
DECODE_THREADS = 2   # PNG/JPEG decoding releases the GIL: two files in flight keep up with small models
MAX_BAD_FRAMES = 10  # consecutive undecodable frames after which a video counts as truncated


class SourceError(Exception):
    """A source that cannot be opened at all; the message names it and says why."""


@dataclass
class Item:
    index: int
    name: str                        # output name: relative path without suffix ("frankfurt_000000_000294")
    frame: np.ndarray | None         # (H, W, 3) BGR uint8; None when `error` is set
    label: np.ndarray | None = None  # (H, W) 19-class train ids (labelled trees and videos)
    error: str | None = None
    infer: bool = True               # False: --vid-stride skips the network for this frame


class Source:
    kind = "source"
    live = False          # a camera/stream: drop stale frames instead of queueing them
    labelled = False
    read_labels = True    # False: a labelled source yields its frames only (an unscored run skips the label files)
    fmt: str | None = None
    fps: float | None = None
    length: int | None = None  # number of items when known (progress bars)

    def __init__(self, description: str):
        self.description = description
        self.status = "finished"   # or "truncated" when a video ends before its announced length
        self.notes: list[str] = []

    def __iter__(self) -> Iterator[Item]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _in_order(fn, items, workers: int = DECODE_THREADS):
    """map(fn, items) on a few threads with a bounded window, yielding results in order."""
    with ThreadPoolExecutor(workers, thread_name_prefix="jal-decode") as pool:
        window: deque = deque()
        for x in items:
            window.append(pool.submit(fn, x))
            if len(window) > 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def _decode(path: Path) -> tuple[np.ndarray | None, str | None]:
    if not path.is_file():
        return None, f"{path} disappeared"
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return (frame, None) if frame is not None else (None, f"cannot decode {path}: corrupt, truncated or not an image")


class ImageFiles(Source):
    """One image, a folder (recursively, sorted) or a glob; output names keep the path below the root."""

    def __init__(self, paths: list[Path], root: Path | None, kind: str, description: str):
        super().__init__(description)
        self.paths, self.root, self.kind, self.length = paths, root, kind, len(paths)

    def _load(self, job: tuple[int, Path]) -> Item:
        i, path = job
        name = path.relative_to(self.root).with_suffix("").as_posix() if self.root else path.stem
        frame, error = _decode(path)
        return Item(i, name, frame, error=error)

    def __iter__(self) -> Iterator[Item]:
        return _in_order(self._load, enumerate(self.paths))


class DatasetTree(Source):
    """A labelled tree in one of the dataset layouts; labels are read as 19-class train ids."""

    kind, labelled = "dataset", True

    def __init__(self, root: Path, fmt: str, split: str | None, list_file: str | None, limit: int | None):
        super().__init__(f"{fmt}:{root}" + (f" ({split})" if split else ""))
        self.fmt = fmt
        try:
            self.samples = find_samples(root, fmt, split=split, list_file=list_file, require_labels=True)
        except DatasetError as e:
            raise SourceError(str(e)) from None
        if not self.samples:
            raise SourceError(f"{self.description} holds no images (is the split right? `jal-data check {root} "
                              f"--format {fmt}` lists what it finds)")
        self.samples = self.samples[:limit] if limit else self.samples
        self.length = len(self.samples)

    def _load(self, job) -> Item:
        i, s = job
        frame, error = _decode(s.image)
        label = None
        if frame is not None and self.read_labels:
            try:
                label = read_label(s, self.fmt)
                if label.shape != frame.shape[:2]:
                    error = f"label {s.label} is {label.shape[1]}x{label.shape[0]}, image {frame.shape[1]}x{frame.shape[0]}"
            except DatasetError as e:
                error = str(e)
        return Item(i, s.name, frame if error is None else None, label if error is None else None, error=error)

    def __iter__(self) -> Iterator[Item]:
        return _in_order(self._load, enumerate(self.samples))


def video_labels(video: str | Path) -> Path:
    """The folder of a video's per-frame labels: `drive.mp4` -> `drive_labelIds/` beside it."""
    video = Path(video)
    return video.with_name(f"{video.stem}_labelIds")


def video_label_name(stem: str, index: int) -> str:
    """Frame `index`'s label file: Cityscapes label ids, named like jal-segment's own `--save labelid`."""
    return f"{stem}_{index:06d}_labelIds.png"


class Video(Source):
    """A video file, camera or stream through OpenCV. Frames are read sequentially (OpenCV seeking is not
    frame-exact). A frame that fails to decode is listed and skipped; a file that stops decoding before its
    announced length is `truncated`. A video file with a `<stem>_labelIds/` folder beside it (what
    `jal-data synth-video` writes) is labelled: each frame's Cityscapes label ids are read as it is."""

    def __init__(self, target: str | int, kind: str, description: str, limit: int | None = None):
        super().__init__(description)
        self.limit = limit
        self.labels = video_labels(target) if kind == "video" and video_labels(target).is_dir() else None
        self.labelled, self.fmt = self.labels is not None, "cityscapes" if self.labels is not None else None
        self.unlabelled = 0  # frames of a labelled video without a usable label (not scored)
        self.kind, self.live = kind, kind in ("camera", "stream")
        self.capture = cv2.VideoCapture(target)
        if not self.capture.isOpened():
            what = {"camera": f"camera {target} cannot be opened (not connected, or in use?)",
                    "stream": f"stream {target} cannot be opened (unreachable, or a codec OpenCV lacks)"}
            raise SourceError(what.get(kind, f"cannot open video {target}: corrupt, truncated (no index), or a "
                                             f"format OpenCV's FFmpeg cannot read"))
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else (None if self.live else 25.0)
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.announced = count if count > 0 and not self.live else None
        self.length = min(self.announced, limit) if self.announced and limit else self.announced or limit
        self.stem = Path(str(target)).stem if kind == "video" else f"{kind}{target}" if kind == "camera" else "stream"

    def __iter__(self) -> Iterator[Item]:
        index, bad = 0, 0
        while self.limit is None or index < self.limit:
            ok, frame = self.capture.read()
            if ok and frame is not None:
                bad = 0
                yield Item(index, f"{self.stem}_{index:06d}", frame, label=self._label(index, frame))
                index += 1
                continue
            if self.announced is None or index >= self.announced:
                if self.live:
                    self.notes.append(f"{self.description} stopped delivering frames after {index}")
                return  # end of stream
            bad += 1
            if bad > MAX_BAD_FRAMES:
                self.status = "truncated"
                self.notes.append(f"{self.description} stopped decoding at frame {index} of {self.announced} "
                                  f"(truncated or corrupt)")
                return
            # OpenCV skips the broken packet: the next read returns the following frame.
            yield Item(index, f"{self.stem}_{index:06d}", None, error=f"frame {index} of {self.description} "
                                                                      f"failed to decode")
            index += 1

    def _label(self, index: int, frame: np.ndarray) -> np.ndarray | None:
        """Frame `index`'s 19-class train ids, or None (counted, and noted once the video ends)."""
        if self.labels is None or not self.read_labels:
            return None
        path = self.labels / video_label_name(self.stem, index)
        label = None
        if path.is_file():
            try:
                label = read_label(path, "cityscapes")
            except DatasetError:
                label = None
        if label is None or label.shape != frame.shape[:2]:
            self.unlabelled += 1
            if self.unlabelled == 1:
                self.notes.append(f"{self.labels} has no usable label for some frames (first: {path.name}, "
                                  f"missing, unreadable or not {frame.shape[1]}x{frame.shape[0]}); they are not scored")
            return None
        return label

    def close(self) -> None:
        self.capture.release()


def _is_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def open_source(spec: str, split: str | None = None, list_file: str | None = None,
                limit: int | None = None) -> Source:
    """Parse SOURCE as jal-segment does: `fmt:PATH` dataset trees, camera index, URL, folder, glob, file."""
    fmt, sep, rest = spec.partition(":")
    if sep and fmt in FORMATS and not rest.startswith("//"):
        root = Path(rest).expanduser()
        if not root.is_dir():
            raise SourceError(f"dataset root {root} does not exist or is not a folder")
        return DatasetTree(root, fmt, split if fmt == "cityscapes" else None, list_file, limit)
    if split or list_file:
        raise SourceError("--split and --list apply to dataset sources (cityscapes:PATH, gta5:PATH, synthia:PATH)")
    if spec.isdigit():
        return Video(int(spec), "camera", f"camera {spec}", limit)
    if spec.lower().startswith(STREAM_SCHEMES):
        return Video(spec, "stream", spec, limit)
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                       and not p.name.startswith("."))
        if not files:
            raise SourceError(f"folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        source = ImageFiles(files[:limit] if limit else files, path, "folder", f"folder {path}")
        if fmt := tree_format(path):  # every image below it, label PNGs too, and no score: rarely what was meant
            source.notes.append(f"{path} is laid out as a {fmt} tree, and as a plain folder every image below it is "
                                f"segmented, its label maps included, with no mIoU; `{fmt}:{spec}` segments its "
                                f"{'val split' if fmt == 'cityscapes' else 'images'} and scores them against "
                                "their labels")
        return source
    if not path.exists() and _is_glob(spec):
        files = sorted(Path(p) for p in globlib.glob(os.path.expanduser(spec), recursive=True)
                       if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"no images match {spec!r}")
        root = Path(os.path.commonpath([str(p.parent) for p in files]))
        return ImageFiles(files[:limit] if limit else files, root, "glob", f"glob {spec}")
    if not path.exists():
        hint = " (dataset trees are written as cityscapes:PATH, gta5:PATH or synthia:PATH)" if sep else ""
        raise SourceError(f"source {spec} does not exist{hint}")
    if not path.is_file():
        raise SourceError(f"source {spec} is neither a file nor a folder")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return ImageFiles([path], None, "image", f"image {path}")
    if suffix in VIDEO_SUFFIXES:
        return Video(str(path), "video", f"video {path}", limit)
    raise SourceError(f"{path}: unknown file type {suffix or '(no suffix)'}; images "
                      f"({', '.join(sorted(IMAGE_SUFFIXES))}) or videos ({', '.join(sorted(VIDEO_SUFFIXES))})")
