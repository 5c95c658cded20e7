"""`export_checkpoint`: one call from a training checkpoint to verified artefacts (what `jal-export` runs)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from jal_deploy.atomic import unwritable_reason, write_text
from jal_deploy.datasets import find_samples, read_image, read_label

from .deploy import DeployNet, load_trained, model_info
from .parity import ParityReport, compare
from .tensorrt_engine import EngineBuildError, EngineShapes, TensorRTUnavailable, build_engine, sidecar_path


class ExportError(RuntimeError):
    """An export that cannot proceed, with a message a user can act on."""


def parity_frames(info, val_root: str | None, limit: int, seed: int = 0):
    """Frames (1, H, W, 3) uint8 and, for a labelled Cityscapes tree, protocol labels at the same size."""
    w, h = info.input_size
    if not val_root:
        rng = np.random.default_rng(seed)  # no data given: random frames at the model size and an odd size
        sizes = [(h, w), (h + h // 2 + 1, w + w // 2 + 3)] if info.dynamic else [(h, w)]
        return [rng.integers(0, 256, (1, hh, ww, 3), dtype=np.uint8) for hh, ww in sizes for _ in range(2)], None
    from jal_deploy.labels import get_protocol
    lut = get_protocol(info.protocol).from_trainid19
    frames, labels = [], []
    for s in find_samples(val_root, "cityscapes", split="val")[:limit]:
        frames.append(_frame_at_model_size(s.image, info))
        labels.append(cv2.resize(lut[read_label(s, "cityscapes")], (w, h), interpolation=cv2.INTER_NEAREST))
    return frames, labels


def calibration_frames(info, root: str, count: int) -> list[np.ndarray]:
    """Target images (Cityscapes-format train split, labels not needed) at the model's input size."""
    samples = find_samples(root, "cityscapes", split="train", require_labels=False)[:count]
    return [_frame_at_model_size(s.image, info) for s in samples]


def _frame_at_model_size(path, info) -> np.ndarray:
    return cv2.resize(read_image(path), tuple(info.input_size), interpolation=cv2.INTER_CUBIC)[None]


class ParityFailure(RuntimeError):
    """An artefact that was made but does not match PyTorch closely enough."""


class Artefacts:
    """Builds every artefact through one wrapper (as Ultralytics' @try_export, mmdeploy's per-stage status):
    any failure is recorded with its reason, the artefact's files (an engine with its sidecar and
    calibration cache) are removed, and the other artefacts go on."""

    def __init__(self, log=print):
        self.log = log
        self.written: dict[str, str] = {}
        self.status: dict[str, dict] = {}
        self.reports: list[ParityReport] = []

    def build(self, key: str, path: Path, make, check=None, companions: tuple[Path, ...] = ()) -> Path | None:
        """`make() -> path` then `check(path) -> ParityReport`; returns the path, or None when it failed."""
        try:
            made = Path(make())
            if check is not None:
                report = check(made)
                self.reports.append(report)
                if not report.passed:
                    raise ParityFailure(f"parity check failed: {report.line()}")
        except Exception as e:  # noqa: BLE001 - every artefact fails the same way, the others go on
            self._remove(path, companions)
            self.status[key] = {"artefact": path.name, "status": "failed", "reason": _reason(e)}
            self.log(f"{path.name}: FAILED: {_reason(e)}")
            return None
        except BaseException:  # Ctrl-C: leave no half-checked artefact behind
            self._remove(path, companions)
            raise
        self.written[key] = str(made)
        self.status[key] = {"artefact": made.name, "status": "ok"}
        return made

    def reuse_or_build(self, key: str, path: Path, make, check=None) -> Path | None:
        """The artefact already written under `key` (e.g. the fp16 ONNX an engine is built from), else `build`."""
        return Path(self.written[key]) if key in self.written else self.build(key, path, make, check)

    def fail(self, key: str, path: Path, reason: str) -> None:
        """An artefact that could not even be attempted (its source failed)."""
        self.status[key] = {"artefact": path.name, "status": "failed", "reason": reason}

    def failures(self) -> list[str]:
        return [f"{s['artefact']}: {s['reason']}" for s in self.status.values() if s["status"] == "failed"]

    @staticmethod
    def _remove(path: Path, companions) -> None:
        for p in (path, *companions):
            Path(p).unlink(missing_ok=True)


def _reason(e: BaseException) -> str:
    known = (ParityFailure, TensorRTUnavailable, EngineBuildError, ValueError, OSError, RuntimeError)
    text = str(e).strip() or type(e).__name__
    return text if isinstance(e, known) else f"{type(e).__name__}: {text}"


def export_checkpoint(checkpoint: str | Path, out: str | Path, onnx: bool = True, torch_program: bool = False,
                      fp16: bool = False, int8_calibration: str | None = None, calibration_count: int = 32,
                      trt_precisions: tuple[str, ...] = (), trt_options: dict | None = None,
                      input_format: str = "uint8_bgr_nhwc", output: str = "labels", dynamic: bool = True,
                      val_root: str | None = None, val_limit: int = 20, arch: str | None = None,
                      num_classes: int | None = None, aspp_branches: int | None = None,
                      pad_classes: int | None = None, log=print) -> dict:
    """Write the requested artefacts to `out`, each proven against PyTorch, and `out/parity.json` with every
    artefact's status (ok / failed and why) and the parity of those made. Raises ExportError naming every
    failed artefact after the others are written. pad_classes: zero-pad the classifier's output channels to this
    many (sliced off inside the graph; the labels are the model's)."""
    out = Path(out)
    trt_options = dict(trt_options or {})
    if "int8" in trt_precisions and not int8_calibration:
        raise ExportError("--trt int8 needs calibration images: pass --int8 CALIB_ROOT")
    if not onnx and (fp16 or int8_calibration or trt_precisions):
        raise ExportError("--fp16, --int8 and --trt are derived from the fp32 ONNX: drop --no-onnx")
    model, meta = load_trained(checkpoint, arch, num_classes, aspp_branches)  # fail before touching `out`
    if pad_classes is not None and pad_classes < model.num_classes:
        raise ExportError(f"--pad-classes {pad_classes} is fewer than the model's {model.num_classes} classes")
    info = model_info(model, meta, input_format, output, dynamic)
    frames, labels = parity_frames(info, val_root, val_limit)
    if trt_precisions:
        _check_profile(trt_options, info, frames)
    reason = unwritable_reason(out)
    if reason:
        raise ExportError(reason)
    net = DeployNet(model, info.mean, info.std, input_format, output, pad_classes=pad_classes)
    mean, std = np.float32(info.mean).reshape(1, 3, 1, 1), np.float32(info.std).reshape(1, 3, 1, 1)

    def feed(frame: np.ndarray) -> np.ndarray:  # raw frames, or normalised NCHW floats for float graphs
        if input_format == "uint8_bgr_nhwc":
            return frame
        return np.ascontiguousarray((frame.transpose(0, 3, 1, 2).astype(np.float32) - mean) / std)

    def checker(name: str, precision: str, run):
        return compare(name, precision, model, lambda f: run(feed(f)), frames, info.mean, info.std, labels,
                       model.num_classes)

    calib = None
    if int8_calibration:  # in the graph's input format, for ONNX Runtime and TensorRT alike
        calib = [feed(f) for f in calibration_frames(info, int8_calibration, calibration_count)]
    arts = Artefacts(log)
    stem = Path(checkpoint).stem
    if onnx:
        _onnx_artefacts(arts, net, info, out, stem, fp16, calib, checker)
    if torch_program:
        _torch_artefact(arts, net, info, out / f"{stem}.pt2", checker)
    if trt_precisions:
        _engines(arts, trt_precisions, out, stem, info, calib, trt_options, checker)
    for r in arts.reports:
        log(r.line())
    summary = {"checkpoint": str(checkpoint), "model_info": json.loads(info.to_json()), "pad_classes": pad_classes,
               "artefacts": arts.written,
               "status": arts.status, "parity": [r.to_dict() for r in arts.reports]}
    write_text(out / "parity.json", json.dumps(summary, indent=2))
    failures = arts.failures()
    if failures:
        kept = f" The other artefacts were written to {out}." if arts.written else ""
        raise ExportError("; ".join(failures) + "." + kept)
    return summary


def _check_profile(options: dict, info, frames) -> None:
    """Engines are checked on the parity frames: refuse a profile that cannot run them before building."""
    shapes = options.get("shapes") or EngineShapes.for_model(info)
    outside = shapes.outside(frames)
    if outside:
        sizes = ", ".join(f"{w}x{h}" for h, w in outside)
        raise ExportError(f"the parity frames ({sizes}) lie outside the TensorRT profile {shapes.text()} "
                          f"(--trt-shapes, BxHxW): widen it to include them")


def _onnx_artefacts(arts: Artefacts, net, info, out: Path, stem: str, fp16: bool, calib, checker) -> None:
    from .onnx_export import export_onnx
    from .precision import to_fp16, to_int8

    fp32 = out / f"{stem}.onnx"
    source = arts.build("onnx", fp32, lambda: export_onnx(net, info, fp32), _ort_check("fp32", checker))
    variants = []
    if fp16:
        variants.append(("fp16", "fp16", out / f"{stem}.fp16.onnx", to_fp16, ()))
    if calib:
        variants.append(("int8", "int8", out / f"{stem}.int8.onnx", to_int8, (calib,)))
    for key, precision, path, convert, extra in variants:
        if source is None:
            arts.fail(key, path, "needs the fp32 ONNX, which failed")
            continue
        arts.build(key, path, lambda c=convert, p=path, x=extra: c(source, p, info, *x), _ort_check(precision, checker))


def _ort_check(precision: str, checker):
    def check(path: Path):
        import onnxruntime as ort
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return checker(path.name, precision, lambda x: session.run(None, {name: x})[0])
    return check


def _torch_artefact(arts: Artefacts, net, info, path: Path, checker) -> None:
    from .torch_program import export_program, load_program

    def check(made: Path):
        import torch
        module = load_program(made)[0].module()
        return checker(made.name, "fp32", lambda x: module(torch.from_numpy(x)).numpy())
    arts.build("torch", path, lambda: export_program(net, info, path), check)


def _engines(arts: Artefacts, precisions, out: Path, stem: str, info, calib, options: dict, checker) -> None:
    """One engine per precision, each from the ONNX that carries its precision (module doc of
    export.tensorrt_engine); the TensorRT Q/DQ ONNX is written even where TensorRT is missing."""
    from .precision import to_fp16, to_int8_tensorrt
    from .tensorrt_engine import calibration_cache_path, import_tensorrt, strongly_typed_only

    calibrator = bool(options.pop("calibrator", False))
    options.setdefault("timing_cache", out / "timing.cache")
    try:
        trt = import_tensorrt()
    except TensorRTUnavailable as e:
        trt, missing = None, str(e)
    fp32 = arts.written.get("onnx")
    for precision in precisions:
        engine = out / f"{stem}.{precision}.engine"
        companions = (sidecar_path(engine), calibration_cache_path(engine))
        source = Path(fp32) if fp32 else None
        if source is not None and precision == "int8" and not calibrator:
            qdq = out / f"{stem}.int8-tensorrt.onnx"
            source = arts.reuse_or_build("int8_tensorrt", qdq, lambda: to_int8_tensorrt(fp32, qdq, info, calib),
                                         _ort_check("int8", checker))
        if source is not None and precision == "fp16" and trt is not None and strongly_typed_only(trt):
            half = out / f"{stem}.fp16.onnx"
            source = arts.reuse_or_build("fp16", half, lambda: to_fp16(fp32, half, info), _ort_check("fp16", checker))
        if source is None:
            arts.fail(f"trt_{precision}", engine, "needs its ONNX source, which failed")
        elif trt is None:
            arts.fail(f"trt_{precision}", engine, missing)
        else:
            frames = calib if (precision == "int8" and calibrator) else None
            arts.build(f"trt_{precision}", engine, lambda s=source, e=engine, p=precision, f=frames: build_engine(
                s, e, info, p, calibration=f, log=arts.log, **options), _engine_check(precision, checker),
                companions)


def _engine_check(precision: str, checker):
    def check(path: Path):
        from jal_deploy.backends.trt_backend import TensorRTBackend
        backend = TensorRTBackend(path)
        try:
            report = checker(path.name, precision, backend)
        finally:
            backend.close()
        report.tf32 = json.loads(sidecar_path(path).read_text()).get("tf32")
        return report
    return check
