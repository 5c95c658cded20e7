"""`jal-export`: thin Click shell over `export.api.export_checkpoint`."""
from __future__ import annotations

import click

from jal_deploy.modelinfo import INPUTS, OUTPUTS


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog="""\b
Examples:
  jal-export runs/tiny/checkpoints/last.pth --out models/tiny --torch --fp16 \\
      --int8 data/synth/cityscapes --val data/synth/cityscapes
  jal-export GTA2Cityscapes_multi.pth --arch deeplabv2-r101 --classes 19 --aspp-branches 2 --out out/
  jal-export runs/r101/checkpoints/last.pth --out engines/ --trt fp16      # on a GPU machine with TensorRT
""")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the artefacts.")
@click.option("--onnx/--no-onnx", default=True, show_default=True, help="fp32 ONNX (opset 18, onnxslim).")
@click.option("--fp16", is_flag=True, help="Also an fp16 ONNX (fp32 I/O kept; for GPUs, storage-only on CPU).")
@click.option("--int8", "int8_calibration", type=click.Path(file_okay=False), metavar="CALIB_ROOT",
              help="Also an int8 Q/DQ ONNX for CPU, calibrated on the train images of this Cityscapes-format tree.")
@click.option("--calib-count", default=32, show_default=True, help="Calibration images for --int8.")
@click.option("--torch", "torch_program", is_flag=True, help="Also a torch.export program (.pt2).")
@click.option("--trt", "trt_precisions", multiple=True, type=click.Choice(["fp32", "fp16", "int8"]),
              help="TensorRT engine(s) (repeatable); needs TensorRT and an NVIDIA GPU. int8 needs --int8.")
@click.option("--trt-shapes", metavar="MIN:OPT:MAX",
              help="TensorRT profile as BxHxW triples, e.g. 1x256x512:1x512x1024:4x1024x2048 "
                   "(default: half to twice the training size, batch 1-8).")
@click.option("--workspace", default=4.0, show_default=True, help="TensorRT workspace limit in GiB.")
@click.option("--version-compatible", is_flag=True, help="TensorRT: build a version-compatible engine.")
@click.option("--tf32", is_flag=True, help="TensorRT fp32 engines: allow TF32 math (faster, ~1e-3 relative "
              "error; off by default so fp32 means fp32).")
@click.option("--trt-calibrator", is_flag=True, help="TensorRT 10 int8: calibrate the fp32 ONNX with TensorRT's "
              "(deprecated) entropy calibrator instead of building the TensorRT Q/DQ ONNX.")
@click.option("--hardware-compatible", is_flag=True, help="TensorRT: build for Ampere and newer GPUs.")
@click.option("--input", "input_format", type=click.Choice(INPUTS), default=INPUTS[0], show_default=True,
              help="Raw uint8 BGR frames (normalised inside the graph) or normalised float NCHW.")
@click.option("--output", type=click.Choice(OUTPUTS), default=OUTPUTS[0], show_default=True,
              help="Label map (argmax inside the graph, uint8), logits at the input size, or scores: the logits "
                   "before the upsample (1/8 of the input size), which the runtime upsamples; export scores for "
                   "--temporal video, whose fusion steadies scores more than labels (docs/video.md).")
@click.option("--static", is_flag=True, help="Fixed batch 1 at the training size instead of dynamic shapes.")
@click.option("--val", "val_root", type=click.Path(file_okay=False),
              help="Cityscapes-format tree: parity also reports the mIoU delta on its val split.")
@click.option("--val-limit", default=20, show_default=True, help="Validation images for the parity check.")
@click.option("--pad-classes", type=click.IntRange(min=1), metavar="N",
              help="Zero-pad the classifier to N output channels (e.g. 24 or 32, multiples of 8 for tensor cores), "
                   "sliced off before the upsample: same labels. Off by default: keep it only where "
                   "bench/runtime_gpu.py measures it faster.")
@click.option("--arch", help="For checkpoints without a config (released AdaptSegNet/ADVENT models).")
@click.option("--classes", type=int, help="Class count, for checkpoints without a config.")
@click.option("--aspp-branches", type=click.IntRange(1, 4), help="2 for AdaptSegNet-trained heads.")
def main(checkpoint, out, onnx, fp16, int8_calibration, calib_count, torch_program, trt_precisions, trt_shapes, workspace,
         version_compatible, tf32, trt_calibrator, hardware_compatible, input_format, output, static, val_root, val_limit,
         pad_classes, arch, classes, aspp_branches) -> None:
    """Fold WTM into Dec2^T, drop everything training-only, write artefacts and prove they match PyTorch.

    Each artefact is compared with the unfolded trained model (WTM applied on the fly): argmax agreement,
    max logit error (logit outputs) and the mIoU delta on --val. The report is printed and saved as
    parity.json with every artefact's status; an artefact that fails (build or parity) is deleted, the others
    are kept, and the command fails naming it.
    """
    from export.api import ExportError, export_checkpoint
    from jal_deploy.datasets import DatasetError
    from training.checkpoints import CheckpointError

    from export.tensorrt_engine import EngineShapes

    try:
        shapes = EngineShapes.parse(trt_shapes) if trt_shapes else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--trt-shapes") from None
    if not (onnx or torch_program):
        raise click.UsageError("nothing to export: keep --onnx or add --torch")
    try:
        summary = export_checkpoint(checkpoint, out, onnx=onnx, torch_program=torch_program, fp16=fp16,
                                    int8_calibration=int8_calibration, calibration_count=calib_count,
                                    trt_precisions=tuple(trt_precisions),
                                    trt_options={"shapes": shapes, "workspace_gib": workspace, "version_compatible": version_compatible,
                                                 "hardware_compatible": hardware_compatible, "tf32": tf32,
                                                 "calibrator": trt_calibrator},
                                    input_format=input_format, output=output, dynamic=not static,
                                    val_root=val_root, val_limit=val_limit, arch=arch, num_classes=classes,
                                    aspp_branches=aspp_branches, pad_classes=pad_classes, log=click.echo)
    except (ExportError, CheckpointError, DatasetError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Wrote {', '.join(summary['artefacts'].values())} and {out}/parity.json")
