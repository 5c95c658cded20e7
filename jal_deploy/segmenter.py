"""`Segmenter`: the embeddable runtime. One object holds a backend and everything the artefact's `ModelInfo`
says about pre- and post-processing, so `predict(frame_bgr)` is all a driving stack has to call.

    seg = Segmenter.from_path("models/jal-wtm-synthetic.onnx")
    labels = seg.predict(frame)                 # (H, W) uint8 class indices at the frame's size
    cv2.imshow("seg", seg.overlay(frame, labels))

Frames are resized (bicubic, as in training) to the inference size: the artefact's training width with the
frame's aspect ratio. Predictions come back at the frame's size: logits are upsampled bilinearly with
align_corners=True before the argmax (the reference evaluation); label outputs are upsampled nearest.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from jal_deploy.backends import Backend, open_backend
from jal_deploy.backends.base import MIN_SIDE, InputRange, export_range
from jal_deploy.labels import IGNORE, TRAINID_TO_ID, get_protocol


def fit_size(width: int, height: int, accepts: InputRange) -> tuple[int, int]:
    """(W, H) moved inside what the backend accepts: scaled uniformly (keeping the aspect ratio) until it fits
    where possible, then each side clamped; multiples of 8 where the range allows. E.g. a portrait frame
    on a TensorRT engine whose profile allows heights up to 1024."""
    if accepts.contains(1, height, width):
        return width, height
    (h_lo, h_hi), (w_lo, w_hi) = accepts.height, accepts.width
    scale = min(h_hi / height if h_hi and height > h_hi else 1.0, w_hi / width if w_hi and width > w_hi else 1.0)
    if scale == 1.0:
        scale = max(h_lo / height, w_lo / width, 1.0)

    def clamp(v, lo, hi):
        v = max(lo, int(round(v / 8.0)) * 8)
        return min(hi, v) if hi else v
    return clamp(width * scale, w_lo, w_hi), clamp(height * scale, h_lo, h_hi)


class Segmenter:
    def __init__(self, backend: Backend, size: tuple[int, int] | None = None):
        self.backend = backend
        self.info = info = backend.info
        self.protocol = get_protocol(info.protocol)
        self.class_names = list(info.class_names)
        self.size = tuple(size) if size else None
        if self.size and not info.dynamic and self.size != tuple(info.input_size):
            raise ValueError(f"this artefact has a fixed input size {info.input_size[0]}x{info.input_size[1]}; "
                             f"drop --size or export without --static")
        # What the loaded model accepts (a TensorRT profile, a static graph...): sizes are picked inside it
        # and larger batches split, so no call fails on a size the caller did not choose.
        self.accepts = backend.input_range() if hasattr(backend, "input_range") else export_range(info)
        if self.size and not self.accepts.contains(1, self.size[1], self.size[0]):
            raise ValueError(f"--size {self.size[0]}x{self.size[1]} is outside what {backend.path or 'this model'} "
                             f"accepts ({self.accepts.describe()})")
        self.palette_bgr = np.zeros((256, 3), np.uint8)  # ignore/unknown indices stay black
        self.palette_bgr[: info.num_classes] = np.asarray(info.palette, np.uint8)[:, ::-1]
        train_ids = np.full(256, IGNORE, np.uint8)
        train_ids[: info.num_classes] = self.protocol.train_ids
        self.to_train_ids_lut = train_ids
        self.to_label_ids_lut = np.zeros(256, np.uint8)  # 0 = unlabeled for anything outside the classes
        self.to_label_ids_lut[: info.num_classes] = TRAINID_TO_ID[list(self.protocol.train_ids)]
        self._mean = np.asarray(info.mean, np.float32).reshape(3, 1, 1)
        self._inv_std = 1.0 / np.asarray(info.std, np.float32).reshape(3, 1, 1)
        self._maps: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()  # the pipeline may call from two threads (a scene cut on a skipped frame)

    @classmethod
    def from_path(cls, path: str | Path, device: str = "auto", backend: str | None = None, precision: str = "fp32",
                  size: tuple[int, int] | None = None, threads: int | None = None) -> "Segmenter":
        """Open an exported artefact (.onnx, .engine/.plan + sidecar, .pt2); raises BackendError with a reason."""
        return cls(open_backend(path, device=device, backend=backend, precision=precision, threads=threads), size)

    # -- pre-processing ----------------------------------------------------------------------------------
    def inference_size(self, width: int, height: int) -> tuple[int, int]:
        """(W, H) the network sees for a frame of this size: --size, the fixed size of a static artefact, or
        the training width with the frame's aspect ratio (height rounded to a multiple of 8), moved inside the
        sizes the model accepts (`fit_size`)."""
        if self.size:
            return self.size
        w, h = self.info.input_size
        if not self.info.dynamic:
            return w, h
        return fit_size(w, max(MIN_SIDE, int(round(height * w / width / 8.0)) * 8), self.accepts)

    def preprocess(self, frame: np.ndarray) -> np.ndarray:
        """One frame -> the graph's input layout (no batch axis), at the inference size."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 BGR frame, got {frame.shape} {frame.dtype}")
        size = self.inference_size(frame.shape[1], frame.shape[0])
        if size != (frame.shape[1], frame.shape[0]):
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC)
        if self.info.input_format == "uint8_bgr_nhwc":
            return np.ascontiguousarray(frame)
        return (frame.transpose(2, 0, 1).astype(np.float32) - self._mean) * self._inv_std

    # -- inference -----------------------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Raw backend call on a pre-processed batch, split into calls of at most the model's batch limit."""
        limit = self.accepts.max_batch
        with self._lock:  # one call at a time: a TensorRT context or a torch module is not re-entrant
            if limit is None or len(batch) <= limit:
                return self.backend(batch)
            return np.concatenate([self.backend(batch[i:i + limit]) for i in range(0, len(batch), limit)])

    # -- post-processing -------------------------------------------------------------------------------
    def postprocess(self, output: np.ndarray, width: int, height: int) -> np.ndarray:
        """One network output (labels (h, w), or logits / scores (C, h, w)) -> uint8 labels (height, width)."""
        if self.info.output == "labels":
            labels = output.astype(np.uint8, copy=False)
            if labels.shape != (height, width):
                labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
            return labels
        return self.upsample(output, width, height).argmax(axis=2).astype(np.uint8)

    def upsample(self, scores: np.ndarray, width: int, height: int) -> np.ndarray:
        """(C, h, w) class scores -> (height, width, C) float32, bilinear with aligned corners: the graph's own
        upsampling for logits, and for scores at the network's stride the one the graph leaves out."""
        scores = np.ascontiguousarray(scores.transpose(1, 2, 0), dtype=np.float32)  # (h, w, C)
        if scores.shape[:2] != (height, width):
            mx, my = self._align_corners_maps(scores.shape[1], scores.shape[0], width, height)
            scores = cv2.remap(scores, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            if scores.ndim == 2:  # remap drops the channel axis of a one-channel output
                scores = scores[..., None]
        return scores

    def _align_corners_maps(self, w, h, W, H):
        key = (w, h, W, H)
        if key not in self._maps:  # PyTorch bilinear, align_corners=True: corner pixels map onto each other
            xs = np.linspace(0, w - 1, W, dtype=np.float32) if W > 1 else np.zeros(1, np.float32)
            ys = np.linspace(0, h - 1, H, dtype=np.float32) if H > 1 else np.zeros(1, np.float32)
            self._maps[key] = tuple(np.ascontiguousarray(m) for m in np.meshgrid(xs, ys))
        return self._maps[key]

    # -- one call ------------------------------------------------------------------------------------------
    def predict(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) BGR uint8 -> (H, W) uint8 class indices of this model's protocol."""
        return self.predict_batch([frame])[0]

    def predict_batch(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Frames of any sizes; frames sharing an inference size run as one batch."""
        results: list[np.ndarray | None] = [None] * len(frames)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault(self.inference_size(f.shape[1], f.shape[0]), []).append(i)
        for idx in groups.values():
            out = self.infer(np.stack([self.preprocess(frames[i]) for i in idx]))
            for k, i in enumerate(idx):
                results[i] = self.postprocess(out[k], frames[i].shape[1], frames[i].shape[0])
        return results

    def stream(self, source, batch: int = 1, vid_stride: int = 1, temporal: bool = False, fill: str = "flow",
               **kw) -> Iterator:
        """Predictions over a source (a path/spec string as jal-segment takes, or a `Source`), decoding and
        inference running ahead in threads. Yields `Prediction(item, labels, reused, other)`; `other` holds a
        second model's labels when `compare=` names one (see `pipeline.predictions`), else None.
        `temporal=True` fuses each frame with the flow-warped past (steadier masks, most with a model that
        returns class scores, `jal-export --output scores`); frames `vid_stride` skips get the last result
        warped onto them (`fill="flow"`) or repeated (`fill="repeat"`)."""
        from jal_deploy.pipeline import predictions
        from jal_deploy.sources import Source, open_source
        src = source if isinstance(source, Source) else open_source(str(source))
        try:
            yield from predictions(self, src, batch=batch, vid_stride=vid_stride, temporal=temporal, fill=fill, **kw)
        finally:
            if src is not source:
                src.close()

    # -- visualisation and label conversions -----------------------------------------------------------------
    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """Class indices -> BGR colour image (the dataset palette; ignore is black)."""
        return np.take(self.palette_bgr, labels, axis=0)  # 3x faster than fancy indexing

    def overlay(self, frame: np.ndarray, labels: np.ndarray, opacity: float = 0.5) -> np.ndarray:
        return cv2.addWeighted(frame, 1.0 - opacity, self.colorize(labels), opacity, 0.0)

    def side_by_side(self, frame: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return np.hstack([frame, self.colorize(labels)])

    def to_train_ids(self, labels: np.ndarray) -> np.ndarray:
        """Class indices -> 19-class Cityscapes train ids (a 16-class SYNTHIA model maps into the 19)."""
        return self.to_train_ids_lut[labels]

    def to_label_ids(self, labels: np.ndarray) -> np.ndarray:
        """Class indices -> Cityscapes label ids, as the official evaluator reads predictions."""
        return self.to_label_ids_lut[labels]

    def describe(self) -> str:
        return self.backend.describe()

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
