"""A scores artefact cut out of an exported labels or logits ONNX file: the same graph, ending before its upsample.

`jal-export --output scores` makes one from a checkpoint; this makes the same graph from an ONNX file when the
checkpoint is not at hand (how `models/*.scores.onnx` were made from the shipped labels models). The cut is
ONNX's own subgraph extraction (`onnx.utils.Extractor`): from the image input to the tensor the final bilinear
Resize reads, renamed `scores`; the metadata then says `output: scores`.

    python -m export.scores_graph models/jal-wtm-ssl-synthetic-r18.onnx models/jal-wtm-ssl-synthetic-r18.scores.onnx
"""
from __future__ import annotations

import argparse
from pathlib import Path

import onnx
from onnx import helper
from onnx.utils import Extractor

from jal_deploy.atomic import atomic_path
from jal_deploy.modelinfo import METADATA_KEY, ModelInfo


def scores_tensor(model: onnx.ModelProto) -> str:
    """The input of the Resize that produces the graph's output (directly, or through ArgMax and Cast)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    name = model.graph.output[0].name
    while name in producer and producer[name].op_type in ("Cast", "ArgMax", "Resize"):
        node = producer[name]
        if node.op_type == "Resize":
            return node.input[0]
        name = node.input[0]
    raise ValueError(f"the graph's output {model.graph.output[0].name!r} does not come from a Resize "
                     f"(through ArgMax/Cast): not a jal-export labels or logits graph")


def scores_from_graph(src: str | Path, dst: str | Path) -> ModelInfo:
    model = onnx.load(str(src))
    info = ModelInfo.from_json(next(p.value for p in model.metadata_props if p.key == METADATA_KEY))
    if info.output == "scores":
        raise ValueError(f"{src} already returns scores")
    cut = Extractor(model).extract_model([model.graph.input[0].name], [scores_tensor(model)])
    cut.graph.node.append(helper.make_node("Identity", [cut.graph.output[0].name], ["scores"], name="scores"))
    out = helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, ["batch", len(info.class_names), "h", "w"])
    del cut.graph.output[:]
    cut.graph.output.append(out)
    info.output, info.output_names = "scores", ["scores"]
    info.provenance = {**(info.provenance or {}), "cut_from": Path(src).name}
    cut.ir_version, cut.producer_name = model.ir_version, model.producer_name
    del cut.opset_import[:]
    cut.opset_import.extend(model.opset_import)
    del cut.metadata_props[:]
    for p in model.metadata_props:
        cut.metadata_props.add(key=p.key, value=info.to_json() if p.key == METADATA_KEY else p.value)
    onnx.checker.check_model(cut)
    with atomic_path(Path(dst)) as tmp:
        onnx.save(cut, str(tmp))
    return info


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="a labels or logits ONNX file made by jal-export")
    ap.add_argument("dst", type=Path, help="the scores ONNX file to write")
    args = ap.parse_args(argv)
    info = scores_from_graph(args.src, args.dst)
    print(f"{args.dst}: {info.arch}, output scores ({len(info.class_names)} classes at 1/8 of the input size), "
          f"cut from {args.src.name}")


if __name__ == "__main__":
    main()
