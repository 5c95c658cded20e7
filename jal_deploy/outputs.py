"""What jal-segment writes under --out, each kind in its own folder so tools that glob one kind (the
official Cityscapes evaluator globs `<city>_<seq>_<frame>*.png`) never see another:

  overlay/<name>.jpg   colour mask blended over the frame (--opacity)
  color/<name>.png     colour mask (dataset palette)
  side/<name>.jpg      frame and colour mask side by side
  compare/<name>.jpg   with --compare: this model's overlay next to the other model's, each captioned
  trainIds/<name>.png  19-class Cityscapes train ids (255 = ignore)
  labelIds/<name>_labelIds.png  Cityscapes label ids at full resolution, for the official evaluator
  <source>.mp4         annotated video (video, camera and stream sources), every frame at the source's rate

Every file is written to a temporary name and renamed when complete; a video is finalised on any exit.
"""
from __future__ import annotations

import contextlib
import importlib.util
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from jal_deploy.atomic import atomic_path, unwritable_reason, write_bytes

FRAME_KINDS = ("overlay", "color", "side", "trainid", "labelid", "compare")
KINDS = FRAME_KINDS + ("video",)
FOLDERS = {"overlay": "overlay", "color": "color", "side": "side", "trainid": "trainIds", "labelid": "labelIds",
           "compare": "compare"}
VIDEO_STYLES = ("overlay", "side", "color")
# codec -> container suffix; pip OpenCV cannot write H.264, so h264 goes through PyAV (extra `video`).
CODECS = {"mp4v": ".mp4", "MJPG": ".avi", "VP80": ".webm", "VP90": ".webm", "h264": ".mp4"}


class OutputError(RuntimeError):
    """An output that cannot be written (folder not writable, codec unavailable, disk full)."""


def check_writable(out: Path) -> None:
    reason = unwritable_reason(out)
    if reason:
        raise OutputError(reason)


def caption(image: np.ndarray, text: str, scale: float | None = None) -> np.ndarray:
    """The image under a black band with `text` in white, scaled to the image's width unless `scale` is given."""
    h, w = image.shape[:2]
    scale = scale or max(0.4, w / 900)
    band = max(18, int(28 * scale))
    out = np.zeros((h + band, w, 3), dtype=np.uint8)
    out[band:] = image if image.ndim == 3 else image[..., None]
    cv2.putText(out, text, (6, band - max(5, band // 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (255, 255, 255),
                max(1, round(scale)), cv2.LINE_AA)
    return out


class FrameFiles:
    """Per-frame image outputs of the kinds asked for. `names`: the captions of the two models of a comparison
    (this one first), needed for the `compare` kind and comparison videos."""

    def __init__(self, out: Path, kinds, segmenter, opacity: float = 0.5, jpeg_quality: int = 90,
                 names: tuple[str, str] | None = None):
        self.out, self.kinds, self.seg, self.opacity = Path(out), [k for k in kinds if k in FRAME_KINDS], segmenter, opacity
        if "compare" in self.kinds and names is None:
            raise OutputError("the compare output needs a second model (jal-segment --compare OTHER_MODEL)")
        self.names = names
        self.jpeg = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
        self.counts = dict.fromkeys(self.kinds, 0)

    def path(self, kind: str, name: str) -> Path:
        suffix = {"overlay": ".jpg", "side": ".jpg", "compare": ".jpg", "labelid": "_labelIds.png"}.get(kind, ".png")
        return self.out / FOLDERS[kind] / (name + suffix)

    def render_pair(self, kind: str, frame: np.ndarray, labels: np.ndarray, other: np.ndarray) -> np.ndarray:
        """This model's rendering of `kind` next to the other model's, each captioned with its name (both models
        predict the same classes, so one palette serves both)."""
        a, b = (self.render(kind, frame, x) for x in (labels, other))
        return np.hstack([caption(a, self.names[0]), caption(b, self.names[1])])

    def render(self, kind: str, frame: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if kind == "overlay":
            return self.seg.overlay(frame, labels, self.opacity)
        if kind == "color":
            return self.seg.colorize(labels)
        if kind == "side":
            return self.seg.side_by_side(frame, labels)
        if kind == "trainid":
            return self.seg.to_train_ids(labels)
        return self.seg.to_label_ids(labels)

    def write(self, name: str, frame: np.ndarray, labels: np.ndarray, other: np.ndarray | None = None) -> None:
        for kind in self.kinds:
            path = self.path(kind, name)
            image = (self.render_pair("overlay", frame, labels, other) if kind == "compare"
                     else self.render(kind, frame, labels))
            ok, data = cv2.imencode(path.suffix, image, self.jpeg if path.suffix == ".jpg" else [])
            if not ok:
                raise OutputError(f"OpenCV could not encode {path}")
            try:
                write_bytes(path, data.tobytes())
            except OSError as e:
                raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
            self.counts[kind] += 1


class VideoFile:
    """An annotated video written to a temporary file and renamed on `close()`: never left truncated.
    Opened on the first frame (the size is known then); later frames of another size are resized."""

    def __init__(self, path: Path, fps: float, codec: str = "mp4v"):
        if codec not in CODECS:
            raise OutputError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
        self.path, self.fps, self.codec = Path(path), float(fps), codec
        self.size = None
        self.frames = 0
        self._writer = self._av = None
        self._stack = contextlib.ExitStack()
        if codec == "h264" and importlib.util.find_spec("av") is None:
            raise OutputError("H.264 needs PyAV: pip install 'jal-deploy[video]' (or use --codec mp4v, which "
                              "pip OpenCV writes)")

    def _open(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        self.size = (w, h)
        tmp = self._stack.enter_context(atomic_path(self.path))
        if self.codec == "h264":
            import av
            self._av = av.open(str(tmp), mode="w")
            self._stream = self._av.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            self._stream.width, self._stream.height = w + w % 2, h + h % 2  # yuv420p needs even sides
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": "20", "preset": "veryfast"}
            return
        self._writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*self.codec), self.fps, (w, h))
        if not self._writer.isOpened():
            self.abort()
            raise OutputError(f"OpenCV cannot write {self.codec} into {self.path.suffix} files here "
                              f"(pip OpenCV writes mp4v/.mp4, MJPG/.avi, VP80 and VP90/.webm; H.264 needs --codec h264)")

    def write(self, frame: np.ndarray) -> None:
        if self.size is None:
            self._open(frame)
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        if self._av is not None:
            import av
            w, h = self.size
            if w % 2 or h % 2:
                frame = cv2.copyMakeBorder(frame, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                self._av.mux(packet)
        else:
            self._writer.write(frame)
        self.frames += 1

    def close(self) -> Path | None:
        """Flush, finalise and rename; returns the path (None if no frame was written)."""
        if self.size is None:
            return None
        if self._av is not None:
            for packet in self._stream.encode():
                self._av.mux(packet)
            self._av.close()
        else:
            self._writer.release()
        self._stack.close()  # renames the finished temp file onto self.path
        return self.path

    def abort(self) -> None:
        """Drop the temp file (used when the video cannot be completed at all)."""
        if self._writer is not None:
            self._writer.release()
        if self._av is not None:
            with contextlib.suppress(Exception):
                self._av.close()
        self._stack.__exit__(OutputError, OutputError("aborted"), None)
        self.size = None
