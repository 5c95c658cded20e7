"""ONNX export of the deploy graph (torch.export-based exporter, opset 18), simplified with onnxslim,
`ModelInfo` in `metadata_props`, written atomically as one file."""
from __future__ import annotations

import logging
from pathlib import Path

import onnx
import torch

from jal_deploy.atomic import atomic_path
from jal_deploy.backends.base import MAX_BATCH, MAX_SIDE, MIN_SIDE
from jal_deploy.modelinfo import METADATA_KEY, ModelInfo

from .deploy import DeployNet

OPSET = 18


def trace_inputs(net: DeployNet, info: ModelInfo) -> tuple[torch.Tensor, dict | None]:
    """Example input and torch.export dynamic shapes (batch 1-64, sides 32-4096) shared by every exporter.
    The example batch is 2 when dynamic: a batch of 1 would be specialised as a constant."""
    w, h = info.input_size
    batch = 2 if info.dynamic else 1
    if net.input_format == "uint8_bgr_nhwc":
        x, axes = torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8), (0, 1, 2)
    else:
        x, axes = torch.randn(batch, 3, h, w), (0, 2, 3)
    if not info.dynamic:
        return x, None
    dims = (torch.export.Dim("batch", min=1, max=MAX_BATCH), torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE),
            torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE))
    return x, {"image": dict(zip(axes, dims))}


def export_onnx(net: DeployNet, info: ModelInfo, path: str | Path, simplify: bool = True) -> Path:
    """Write `path`; dynamic batch/height/width (32..4096) when `info.dynamic`, else fixed at input_size."""
    x, dynamic_shapes = trace_inputs(net, info)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with torch.no_grad():
        program = torch.onnx.export(net, (x,), dynamo=True, opset_version=OPSET, input_names=[info.input_name],
                                    output_names=info.output_names, dynamic_shapes=dynamic_shapes, verbose=False)
    model = program.model_proto
    if simplify:
        import onnxslim
        model = onnxslim.slim(model)
    set_metadata(model, info)
    onnx.checker.check_model(model)
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))
    return path


def set_metadata(model: onnx.ModelProto, info: ModelInfo) -> None:
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=METADATA_KEY, value=info.to_json())


def read_metadata(path: str | Path) -> ModelInfo:
    model = onnx.load(str(path), load_external_data=False)
    return ModelInfo.from_onnx_metadata({p.key: p.value for p in model.metadata_props})
