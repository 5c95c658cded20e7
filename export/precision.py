"""Reduced-precision ONNX variants of an exported fp32 graph.

- fp16: weights and activations in float16 with fp32 inputs/outputs kept (`keep_io_types`). Converters are
  known to leave a graph output in fp16 or emit nodes out of order, so the result is topologically sorted,
  checked with `onnx.checker`, and its output types are asserted. On ONNX Runtime's CPU provider fp16 only
  saves storage (it inserts casts); it is meant for GPUs and TensorRT 11.
- int8: static Q/DQ quantisation for ONNX Runtime on CPU, calibrated on target images: per-channel int8
  weights, **uint8** activations (int8 activations leave most convs in fp32 on x86), MinMax calibration
  averaged over the calibration frames (`CalibMovingAverage`: the mean of each frame's min and max, so one
  frame's outlier does not widen a tensor's range for all; on an adapted width-0.375 R18 the argmax agreement
  with fp32 rose from 94.1 % to 97.5 %, and it was as good or better on every model tried),
  `quant_pre_process` first, and the final Resize/ArgMax kept in float (quantising the Resize creates
  argmax ties). Weights use 7 bits (`reduce_range`): x86 CPUs without VNNI multiply uint8 x int8 with
  VPMADDUBSW, whose int16 sum of two products saturates above 32767 (255 * 127 * 2 = 64770); with weights in
  [-64, 64] no pair can saturate (255 * 64 * 2 = 32640), so AVX2, AVX-512 VNNI and AMX machines compute the
  same integer convolutions. Cost on the shipped adapted model: argmax agreement with fp32 97.9 % -> 96.5 %,
  mIoU unchanged, same speed.
- int8 for TensorRT (`to_int8_tensorrt`): TensorRT's parser accepts only symmetric int8 Q/DQ without int32
  bias dequantisation, so it gets its own Q/DQ model: int8 symmetric activations and weights, float biases.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx

from jal_deploy.atomic import atomic_path
from jal_deploy.modelinfo import ModelInfo

from .onnx_export import set_metadata

_FLOAT = onnx.TensorProto.FLOAT
CALIBRATION = {"CalibMovingAverage": True}  # activation ranges: per-frame min/max averaged over the frames


def _io_types(model: onnx.ModelProto) -> dict[str, int]:
    return {v.name: v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)}


def to_fp16(src: str | Path, dst: str | Path, info: ModelInfo) -> Path:
    from onnxruntime.transformers import float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(src))
    before = _io_types(model)
    converted = float16.convert_float_to_float16(model, keep_io_types=True)
    wrapper = OnnxModel(converted)
    wrapper.topological_sort()
    converted = wrapper.model
    after = _io_types(converted)
    changed = {k: (before[k], after.get(k)) for k in before if after.get(k) != before[k]}
    if changed:  # e.g. an fp32 output left as fp16 by the converter
        raise RuntimeError(f"fp16 conversion changed graph I/O types {changed}")
    set_metadata(converted, _with_precision(info, "fp16"))
    onnx.checker.check_model(converted)
    with atomic_path(dst) as tmp:
        onnx.save_model(converted, str(tmp))
    return Path(dst)


class _Frames:
    """CalibrationDataReader over (1, H, W, 3) frames (or whatever the graph input expects)."""

    def __init__(self, name: str, frames: Iterable[np.ndarray]):
        self.name, self.frames = name, iter(list(frames))

    def get_next(self):
        frame = next(self.frames, None)
        return None if frame is None else {self.name: frame}

    def rewind(self):  # pragma: no cover - part of the reader protocol
        pass


def to_int8(src: str | Path, dst: str | Path, info: ModelInfo, calibration: list[np.ndarray]) -> Path:
    """Q/DQ model for ONNX Runtime on CPU: uint8 asymmetric activations (fast on x86), per-channel 7-bit
    int8 weights (no saturation on any x86 CPU, module docstring); TensorRT cannot read it (see
    `to_int8_tensorrt`)."""
    from onnxruntime.quantization import QuantType
    return _quantize(src, dst, info, calibration, QuantType.QUInt8, {}, reduce_range=True)


# TensorRT reads only symmetric int8 Q/DQ (zero point 0) and no int32 DequantizeLinear (quantised biases):
# int8 activations, symmetric ranges, float biases, and weights kept in float with a Q/DQ pair (the form
# TensorRT folds into its int8 kernels).
TENSORRT_QDQ = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                "AddQDQPairToWeight": True}


def to_int8_tensorrt(src: str | Path, dst: str | Path, info: ModelInfo, calibration: list[np.ndarray]) -> Path:
    """Q/DQ model for TensorRT's explicit quantisation (int8 engines on TensorRT 10 and 11), calibrated on the
    same frames as the CPU model. ONNX Runtime runs it too, which is how its parity is checked on CPU."""
    from onnxruntime.quantization import QuantType
    return _quantize(src, dst, info, calibration, QuantType.QInt8, TENSORRT_QDQ)


def _quantize(src, dst, info: ModelInfo, calibration, activation_type, extra_options: dict,
              reduce_range: bool = False) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ValueError("int8 quantisation needs calibration frames (target images)")
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        keep_float = [n.name for n in model.graph.node if n.op_type in ("Resize", "ArgMax")]
        out = Path(tmp) / "int8.onnx"
        quantize_static(str(pre), str(out), _Frames(info.input_name, calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=activation_type, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float,
                        op_types_to_quantize=["Conv"], reduce_range=reduce_range,
                        extra_options={**CALIBRATION, **extra_options})
        quantized = onnx.load(str(out))
    set_metadata(quantized, _with_precision(info, "int8"))
    onnx.checker.check_model(quantized)
    with atomic_path(dst) as tmp_path:
        onnx.save_model(quantized, str(tmp_path))
    return Path(dst)


def _with_precision(info: ModelInfo, precision: str) -> ModelInfo:
    return dataclasses.replace(info, precision=precision)
