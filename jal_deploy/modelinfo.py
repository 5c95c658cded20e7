"""`ModelInfo`: everything the runtime needs to know about an exported model, carried by the artefact.

Embedded in ONNX `metadata_props` (key `jal_deploy.model_info`, JSON), in the JSON sidecar of a TensorRT
engine and in the extra files of a torch.export program, so no runtime flag repeats what the artefact
knows: classes, palette, normalisation, input size, I/O contract and provenance.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

METADATA_KEY = "jal_deploy.model_info"
FORMAT_VERSION = 1
INPUTS = ("uint8_bgr_nhwc", "float_bgr_nchw")  # raw camera frames | frames already normalised
# argmax inside the graph (uint8 per pixel) | class scores at the input size | class scores at the network's
# stride (1/8 of the input: 64x fewer floats; the runtime upsamples them, and --temporal fuses them)
OUTPUTS = ("labels", "logits", "scores")


class ModelInfoError(ValueError):
    """Metadata that is missing, from a newer exporter, or inconsistent."""


@dataclass
class ModelInfo:
    arch: str
    class_names: list[str]
    palette: list[list[int]]  # RGB per class
    protocol: str = "19"
    mean: list[float] = field(default_factory=lambda: [104.00698793, 116.66876762, 122.67891434])  # BGR
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    input_size: list[int] = field(default_factory=lambda: [1024, 512])  # (W, H) the model was trained at
    input_format: str = "uint8_bgr_nhwc"
    output: str = "labels"
    dynamic: bool = True  # height/width (and batch) may vary at run time
    precision: str = "fp32"
    input_name: str = "image"
    output_names: list[str] = field(default_factory=lambda: ["labels"])
    provenance: dict = field(default_factory=dict)  # preset, method, iteration, datasets, measured mIoU
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def validate(self) -> "ModelInfo":
        if self.input_format not in INPUTS:
            raise ModelInfoError(f"input_format must be one of {INPUTS}, got {self.input_format!r}")
        if self.output not in OUTPUTS:
            raise ModelInfoError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if len(self.palette) != self.num_classes:
            raise ModelInfoError(f"{len(self.palette)} palette colours for {self.num_classes} classes")
        if self.format_version > FORMAT_VERSION:
            raise ModelInfoError(f"model metadata version {self.format_version} is newer than this runtime "
                                 f"understands ({FORMAT_VERSION}): upgrade jal-deploy")
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelInfo":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModelInfoError(f"model metadata is not valid JSON ({e})") from None
        known = {f.name for f in fields(cls)}
        missing = {"arch", "class_names", "palette"} - set(data)
        if missing:
            raise ModelInfoError(f"model metadata lacks {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known}).validate()

    @classmethod
    def from_onnx_metadata(cls, props: dict[str, str]) -> "ModelInfo":
        if METADATA_KEY not in props:
            raise ModelInfoError(f"the ONNX model carries no {METADATA_KEY} metadata: was it exported by jal-export?")
        return cls.from_json(props[METADATA_KEY])
