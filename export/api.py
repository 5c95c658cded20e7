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
from .tensorrt_engine import TensorRTUnavailable


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


def export_checkpoint(checkpoint: str | Path, out: str | Path, onnx: bool = True, torch_program: bool = False,
                      fp16: bool = False, int8_calibration: str | None = None, calibration_count: int = 32,
                      trt_precisions: tuple[str, ...] = (), trt_options: dict | None = None,
                      input_format: str = "uint8_bgr_nhwc", output: str = "labels", dynamic: bool = True,
                      val_root: str | None = None, val_limit: int = 20, arch: str | None = None,
                      num_classes: int | None = None, aspp_branches: int | None = None, log=print) -> dict:
    out = Path(out)
    if "int8" in trt_precisions and not int8_calibration:
        raise ExportError("--trt int8 needs calibration images: pass --int8 CALIB_ROOT")
    if not onnx and (fp16 or int8_calibration or trt_precisions):
        raise ExportError("--fp16, --int8 and --trt are derived from the fp32 ONNX: drop --no-onnx")
    model, meta = load_trained(checkpoint, arch, num_classes, aspp_branches)  # fail before touching `out`
    reason = unwritable_reason(out)
    if reason:
        raise ExportError(reason)
    info = model_info(model, meta, input_format, output, dynamic)
    net = DeployNet(model, info.mean, info.std, input_format, output)
    frames, labels = parity_frames(info, val_root, val_limit)
    mean, std = np.float32(info.mean).reshape(1, 3, 1, 1), np.float32(info.std).reshape(1, 3, 1, 1)

    def feed(frame: np.ndarray) -> np.ndarray:  # raw frames, or normalised NCHW floats for float graphs
        if input_format == "uint8_bgr_nhwc":
            return frame
        return np.ascontiguousarray((frame.transpose(0, 3, 1, 2).astype(np.float32) - mean) / std)

    reports: list[ParityReport] = []

    def check(name: str, precision: str, run) -> None:
        reports.append(compare(name, precision, model, lambda f: run(feed(f)), frames, info.mean, info.std,
                               labels, model.num_classes))

    calib = calibration_frames(info, int8_calibration, calibration_count) if int8_calibration else None
    written = {}
    stem = Path(checkpoint).stem
    if onnx:
        from .onnx_export import export_onnx
        import onnxruntime as ort
        path = export_onnx(net, info, out / f"{stem}.onnx")
        from .precision import to_fp16, to_int8
        variants = [("onnx", "fp32", path)]
        if fp16:
            variants.append(("fp16", "fp16", to_fp16(path, out / f"{stem}.fp16.onnx", info)))
        if calib:
            variants.append(("int8", "int8", to_int8(path, out / f"{stem}.int8.onnx", info, calib)))
        for key, precision, vpath in variants:
            session = ort.InferenceSession(str(vpath), providers=["CPUExecutionProvider"])
            check(vpath.name, precision, lambda x, s=session: s.run(None, {info.input_name: x})[0])
            written[key] = str(vpath)
    if torch_program:
        import torch
        from .torch_program import export_program, load_program
        path = export_program(net, info, out / f"{stem}.pt2")
        program, _ = load_program(path)
        module = program.module()
        check(path.name, "fp32", lambda x: module(torch.from_numpy(x)).numpy())
        written["torch"] = str(path)
    trt_error = None
    if trt_precisions:
        try:
            _build_engines(trt_precisions, out, stem, written, info, calib, trt_options or {}, check)
        except TensorRTUnavailable as e:  # the other artefacts stay; the command still fails
            trt_error = str(e)
    for r in reports:
        log(r.line())
    summary = {"checkpoint": str(checkpoint), "model_info": json.loads(info.to_json()), "artefacts": written,
               "parity": [r.to_dict() for r in reports]}
    write_text(out / "parity.json", json.dumps(summary, indent=2))
    if trt_error:
        raise ExportError(f"{trt_error}. The other artefacts were written to {out}.")
    failed = [r for r in reports if not r.passed]
    if failed:
        for path in written.values():  # a failed artefact is not left behind as if it were good
            Path(path).unlink(missing_ok=True)
        raise ExportError("parity check failed: " + "; ".join(r.line() for r in failed))
    return summary


def _build_engines(precisions, out, stem, written, info, calib, options, check) -> None:
    """TensorRT 11 takes precision from the graph (fp16 ONNX, Q/DQ ONNX); TensorRT 10 from builder flags."""
    from .precision import to_fp16, to_int8
    from jal_deploy.backends.trt_backend import TensorRTBackend

    from .tensorrt_engine import build_engine, import_tensorrt, strongly_typed_only

    trt = import_tensorrt()
    typed = strongly_typed_only(trt)
    fp32_onnx = Path(written["onnx"])
    for precision in precisions:
        source = fp32_onnx
        if typed and precision == "fp16":
            source = Path(written.get("fp16") or to_fp16(fp32_onnx, out / f"{stem}.fp16.onnx", info))
            written["fp16"] = str(source)
        if typed and precision == "int8":
            source = Path(written.get("int8") or to_int8(fp32_onnx, out / f"{stem}.int8.onnx", info, calib))
            written["int8"] = str(source)
        engine = build_engine(source, out / f"{stem}.{precision}.engine", info, precision,
                              timing_cache=out / "timing.cache",
                              calibration=calib if precision == "int8" else None, **options)
        check(engine.name, precision, TensorRTBackend(engine))
        written[f"trt_{precision}"] = str(engine)
