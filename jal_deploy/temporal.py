"""Video that holds still: dense optical flow between consecutive frames, used two ways.

- **Fusion** (`jal-segment --temporal`): the previous fused result is warped onto the current frame and
  combined with the current prediction (NetWarp / Accel: the warped past steadies the present), so a pixel
  that one frame gets wrong does not flip while nothing moved.
- **Propagation** (`--vid-stride N`): frames the network skips get the last result warped along the flow
  (Deep Feature Flow's key frames), not repeated, so the mask follows the moving scene.

Flow is OpenCV's DIS optical flow on a grayscale copy at a reduced width (`FLOW_WIDTH`): it costs a few ms
where the network costs tens. A pixel takes the past only where it can be trusted: the backward flow lands
inside the previous frame, the forward flow leads back to where it started (forward-backward check, which
marks occlusions) and the warped previous frame looks like the current one (brightness check). When most
pixels fail, the frame is a scene cut and everything falls back to the current frame.

Two kinds of result are fused. Class scores (models exported with `--output scores` or `logits`): probabilities
accumulated with a decay, A_t = decay * warp(A_{t-1}) + p_t, at the network's resolution; the label a pixel showed
(warped) is kept until another class leads it by `HYSTERESIS` of the pixel's accumulated weight, so two classes
that the scores rate alike do not take turns. Labels only (the default export, argmax in the graph):
the same vote, kept as the winning label and its margin over the runner-up, so a pixel's label changes only
once the current frames have out-voted the decayed past. A label-only model gives no confidence, so a
pixel's vote weighs the share of its 8 neighbours that agree with it: isolated specks and ragged
boundaries, where such models err, weigh least.
Torch-free: NumPy and OpenCV only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

FLOW_WIDTH = 256        # flow is computed at this width (the frame's own if narrower): 512x256 -> 256x128
FLOW_PRESET = cv2.DISOPTICAL_FLOW_PRESET_FAST  # ~0.6 ms a flow at 256x128 on one core; MEDIUM is 5x slower
                                               # and steadied the labelled drives no more
# Forward-backward check of Sundaram et al. (2010), |w_f + w_b|^2 <= a (|w_f|^2 + |w_b|^2) + b px^2, with a = 0.2
# (theirs: 0.01): at half resolution DIS flow errs by several percent of the motion inside rigid surfaces, and a
# stricter check dropped the history of pixels the flow follows well (lab notebook, "Steadier video").
FB_RELATIVE, FB_ABSOLUTE = 0.2, 0.5
BRIGHTNESS_TOLERANCE = 24  # gray levels between a pixel and its warped predecessor before it counts as changed
CUT_SHARE = 0.5         # fewer pixels than this can take the past: a scene cut
# Weight of the past per frame: a long-held label flips after 2-3 disagreeing frames. A heavier past (0.8) steadied
# 50 km/h drives more but cost up to 0.7 mIoU (scores) and 0.4 (labels) at 90 km/h, where the flow errs more.
DECAY = 0.6
HYSTERESIS = 0.05       # scores: share of a pixel's accumulated weight by which a new class must lead the held one


@dataclass
class Motion:
    """How the previous frame maps onto the current one, at the flow's resolution: `backward[y, x]` is the
    displacement from current pixel (x, y) to where it was in the previous frame; `valid` marks pixels whose
    past can be trusted; `cut`: too few can, the past is dropped."""

    backward: np.ndarray  # (h, w, 2) float32
    valid: np.ndarray     # (h, w) bool
    cut: bool
    _cache: dict = field(default_factory=dict, repr=False)  # maps and masks per size: the models share them

    @property
    def valid_share(self) -> float:
        return np.count_nonzero(self.valid) / self.valid.size

    def maps(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """cv2.remap coordinates at (width, height): where each pixel was in the previous frame."""
        if ("maps", width, height) not in self._cache:
            self._cache["maps", width, height] = self._maps(width, height)
        return self._cache["maps", width, height]

    def _maps(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.backward.shape[:2]
        sx, sy = width / w, height / h
        flow = self.backward if (w, h) == (width, height) else cv2.resize(self.backward, (width, height),
                                                                           interpolation=cv2.INTER_LINEAR)
        gx, gy = _grid(width, height)
        return gx + flow[..., 0] * sx, gy + flow[..., 1] * sy

    def warp(self, image: np.ndarray, nearest: bool = False) -> np.ndarray:
        """The previous frame's `image` ((H, W) or (H, W, C), any size) seen from the current frame."""
        mx, my = self.maps(image.shape[1], image.shape[0])
        out = cv2.remap(image, mx, my, cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
        return out[..., None] if image.ndim == 3 and out.ndim == 2 else out

    def valid_at(self, width: int, height: int) -> np.ndarray:
        """`valid` at (width, height), nearest-resized once per size (the models and their upsamples share it)."""
        if self.valid.shape == (height, width):
            return self.valid
        if ("valid", width, height) not in self._cache:
            self._cache["valid", width, height] = cv2.resize(self.valid.view(np.uint8), (width, height),
                                                             interpolation=cv2.INTER_NEAREST).view(bool)
        return self._cache["valid", width, height]


_GRIDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    if (width, height) not in _GRIDS:
        _GRIDS[(width, height)] = tuple(np.meshgrid(np.arange(width, dtype=np.float32),
                                                    np.arange(height, dtype=np.float32)))
    return _GRIDS[(width, height)]


class MotionEstimator:
    """Flow from each frame to the one before it. `check=False` skips the forward flow (the occlusion check):
    propagation to skipped frames has no current prediction to fall back to, only cuts matter there."""

    def __init__(self, width: int = FLOW_WIDTH, check: bool = True, preset: int = FLOW_PRESET):
        self.width, self.check = width, check
        self._dis = cv2.DISOpticalFlow_create(preset)
        self._previous: np.ndarray | None = None

    def gray(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        if w <= self.width:
            return np.ascontiguousarray(gray)
        size = (self.width, max(8, int(round(h * self.width / w))))
        return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)

    def reset(self) -> None:
        self._previous = None

    def __call__(self, frame: np.ndarray) -> Motion | None:
        """The motion from the previous frame given to this one (None for the first, or after a size change)."""
        current, previous = self.gray(frame), self._previous
        self._previous = current
        if previous is None or previous.shape != current.shape:
            return None
        return estimate(previous, current, self._dis, self.check)


def estimate(previous: np.ndarray, current: np.ndarray, dis=None, check: bool = True) -> Motion:
    """Motion between two grayscale frames of one size (see `Motion`)."""
    dis = dis if dis is not None else cv2.DISOpticalFlow_create(FLOW_PRESET)
    previous, current = np.ascontiguousarray(previous), np.ascontiguousarray(current)
    backward = dis.calc(current, previous, None)
    h, w = current.shape
    gx, gy = _grid(w, h)
    mx, my = gx + backward[..., 0], gy + backward[..., 1]
    valid = (mx >= -0.5) & (mx <= w - 0.5) & (my >= -0.5) & (my <= h - 0.5)
    seen = cv2.remap(previous, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    valid &= np.abs(seen.astype(np.int16) - current) <= BRIGHTNESS_TOLERANCE
    if check:
        forward = dis.calc(previous, current, None)
        fx, fy = cv2.split(cv2.remap(forward, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
        bx, by = backward[..., 0], backward[..., 1]
        error = np.square(bx + fx) + np.square(by + fy)  # per channel: numpy sums a last axis of 2 slowly
        valid &= error <= FB_RELATIVE * (bx * bx + by * by + fx * fx + fy * fy) + FB_ABSOLUTE
    return Motion(backward, valid, cut=np.count_nonzero(valid) < CUT_SHARE * valid.size)


def agreement(labels: np.ndarray) -> np.ndarray:
    """Share of each pixel's 8 neighbours with its label (the border counts as agreeing): float32 in [0, 1]."""
    h, w = labels.shape
    padded = np.pad(labels, 1, mode="edge")
    same = np.zeros((h, w), np.float32)
    for dy in range(3):
        for dx in range(3):
            if dy != 1 or dx != 1:
                same += padded[dy:dy + h, dx:dx + w] == labels
    return same / 8.0


class LabelFusion:
    """Fused labels of a model that returns labels only: the winning label per pixel and its vote margin.
    A frame votes for its label with weight `agreement` (the confidence proxy): agreeing adds it to the decayed
    margin, disagreeing subtracts it and takes the pixel over once the margin is no larger. Untrusted pixels
    (occluded, or a scene cut) start afresh from the current frame."""

    def __init__(self, decay: float = DECAY):
        self.decay = decay
        self.labels: np.ndarray | None = None
        self.margin: np.ndarray | None = None

    def reset(self, labels: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        self.labels, self.margin = labels, agreement(labels) if weight is None else weight
        return labels

    def fuse(self, labels: np.ndarray, motion: Motion | None) -> np.ndarray:
        """This frame's labels combined with the warped past; the current frame where the past is untrusted."""
        weight = agreement(labels)
        if motion is None or motion.cut or self.labels is None or self.labels.shape != labels.shape:
            return self.reset(labels, weight)
        past, margin = self._warped(motion)
        margin *= self.decay
        margin[~motion.valid_at(labels.shape[1], labels.shape[0])] = 0.0
        agree = past == labels
        keep = ~agree & (margin > weight)
        self.labels = np.where(keep, past, labels)
        self.margin = np.where(agree, margin + weight, np.abs(margin - weight)).astype(np.float32)
        return self.labels

    def propagate(self, motion: Motion | None, shape: tuple[int, int]) -> np.ndarray | None:
        """A skipped frame: the last result warped onto it (every pixel: nothing better is known there)."""
        if self.labels is None:
            return None
        if motion is not None and self.labels.shape == shape:
            self.labels, self.margin = self._warped(motion)
        elif self.labels.shape != shape:
            self.reset(cv2.resize(self.labels, shape[::-1], interpolation=cv2.INTER_NEAREST))
        return self.labels

    def _warped(self, motion: Motion) -> tuple[np.ndarray, np.ndarray]:
        return motion.warp(self.labels, nearest=True), motion.warp(self.margin, nearest=True)


class ScoreFusion:
    """Fused class scores of a model that returns scores or logits: softmax probabilities accumulated with a
    decay at the model's output resolution, (C, h, w). The caller upsamples them and calls `hold` for the labels:
    the argmax, except where the label the pixel showed before still trails the leader by less than the
    hysteresis."""

    def __init__(self, decay: float = DECAY, hysteresis: float = HYSTERESIS):
        self.decay, self.hysteresis = decay, hysteresis
        self.scores: np.ndarray | None = None  # (h, w, C) float32
        self.labels: np.ndarray | None = None  # the last fused frame's labels (warped along on skipped frames)

    def fuse(self, logits: np.ndarray, motion: Motion | None) -> np.ndarray:
        probs = softmax(logits)
        if motion is None or motion.cut or self.scores is None or self.scores.shape != probs.shape:
            self.scores = probs
        else:
            past = motion.warp(self.scores)
            valid = motion.valid_at(probs.shape[1], probs.shape[0])
            self.scores = np.where(valid[..., None], self.decay * past + probs, probs)
        return self.scores.transpose(2, 0, 1)

    def total(self) -> np.ndarray:
        """(1, h, w): each pixel's accumulated weight (the sum of its fused probabilities)."""
        return self.scores.sum(axis=2)[None]

    def hold(self, scores: np.ndarray, total: np.ndarray, motion: Motion | None) -> np.ndarray:
        """Labels from fused `scores` (H, W, C) at the frame's size (changed in place) and their `total` weight
        (H, W): the held label gets a bonus of `hysteresis * total` before the argmax, so another class takes
        the pixel only by leading it by more (one argmax, as without fusion)."""
        h, w, c = scores.shape
        if motion is not None and not motion.cut and self.labels is not None and self.labels.shape == (h, w):
            held = motion.warp(self.labels, nearest=True).ravel()
            rows = np.flatnonzero(motion.valid_at(w, h))
            flat = scores.reshape(-1, c)
            flat[rows, held[rows]] += self.hysteresis * total.ravel()[rows]
        self.labels = scores.argmax(axis=2).astype(np.uint8)
        return self.labels

    def propagate(self, motion: Motion | None) -> np.ndarray | None:
        if self.scores is None:
            return None
        if motion is not None:
            self.scores = motion.warp(self.scores)
            if self.labels is not None:
                self.labels = motion.warp(self.labels, nearest=True)
        return self.scores.transpose(2, 0, 1)


def softmax(logits: np.ndarray) -> np.ndarray:
    """(C, h, w) logits -> (h, w, C) float32 probabilities."""
    x = np.ascontiguousarray(logits.transpose(1, 2, 0), dtype=np.float32)
    x = np.exp(x - x.max(axis=2, keepdims=True))
    return x / x.sum(axis=2, keepdims=True)


class VideoState:
    """The temporal state of one stream for its models (one, or two with `--compare`), which share the flow.
    `fuse`: frames the network ran on combine with the warped past (--temporal); `propagate`: frames it
    skipped (--vid-stride) show the last result warped along the flow, else that result unchanged."""

    def __init__(self, models, fuse: bool, propagate: bool, flow_width: int = FLOW_WIDTH):
        self.models, self.fuse, self.propagate = models, fuse, propagate
        self.estimator = MotionEstimator(flow_width, check=fuse)
        self.states = [LabelFusion() if m.info.output == "labels" else ScoreFusion() for m in models]
        self.shown: list[np.ndarray] = []  # the last key frame's labels (what `propagate=False` repeats)

    def motion(self, frame: np.ndarray) -> Motion | None:
        return self.estimator(frame)

    def key(self, outputs, width: int, height: int, motion: Motion | None) -> list[np.ndarray]:
        """Labels of a frame the network ran on: fused with the past, or the frame's own (which also start the
        state that skipped frames propagate)."""
        past = motion if self.fuse and motion is not None and not motion.cut else None
        labels = []
        for model, state, out in zip(self.models, self.states, outputs):
            if isinstance(state, LabelFusion):
                labels.append(state.fuse(model.postprocess(out, width, height), past))
            elif past is None:
                state.fuse(out, None)
                state.labels = model.postprocess(out, width, height)  # exactly the frame alone
                labels.append(state.labels)
            else:
                scores = model.upsample(state.fuse(out, past), width, height)
                labels.append(state.hold(scores, model.upsample(state.total(), width, height)[..., 0], past))
        self.shown = labels
        return labels

    def skipped(self, width: int, height: int, motion: Motion | None) -> list[np.ndarray | None]:
        """Labels of a frame the network skipped: the last result warped onto it, or repeated. The state
        follows the flow either way, so the next fusion meets a past that is in place."""
        if motion is not None and motion.cut:  # (only when repeating: a cut with flow runs the network)
            self.states = [type(state)() for state in self.states]  # nothing before the cut fits
        labels = []
        for model, state in zip(self.models, self.states):
            if isinstance(state, LabelFusion):
                labels.append(state.propagate(motion, (height, width)))
            else:
                scores = state.propagate(motion)
                labels.append(None if scores is None or not self.propagate else model.postprocess(scores, width, height))
        if self.propagate:
            return labels
        return [x if x.shape == (height, width) else cv2.resize(x, (width, height), interpolation=cv2.INTER_NEAREST)
                for x in self.shown]
