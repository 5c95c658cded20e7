"""Shared fixtures: a small synthetic benchmark generated once per test session by the project itself."""
import importlib.util
from pathlib import Path

import pytest

from jal_deploy.synth import generate


@pytest.fixture(scope="session")
def bench_module():
    """Import a script of bench/ by name (bench/ is scripts, not a package): `bench_module("runtime_gpu")`."""
    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=0, counts={"gta5": 6, "synthia": 4, "cs_train": 6, "cs_val": 4}, size=(128, 64),
             progress=False, workers=1)
    return root


@pytest.fixture(scope="session")
def runtime_models(synth_root, tmp_path_factory):
    """Artefacts of a real (1-iteration) JAL+WTM checkpoint, exported as jal-export does:
    {'labels': uint8-in/labels-out ONNX, 'logits': logits ONNX, 'pt2': logits torch.export program}."""
    import torch

    from export.api import export_checkpoint
    from tests.test_training import tiny_cfg
    from training.engine import Trainer

    run = tmp_path_factory.mktemp("runtime-run")
    trainer = Trainer(tiny_cfg(synth_root, "jal-wtm", iters=1), run, progress=False)
    trainer.run()
    torch.manual_seed(2)
    with torch.no_grad():  # move WTM2 off the identity so folding matters
        trainer.model.wtm2.conv.weight.add_(0.05 * torch.randn_like(trainer.model.wtm2.conv.weight))
    ckpt = trainer.save("tiny.pth")
    out = tmp_path_factory.mktemp("runtime-models")
    quiet = {"log": lambda *_: None}
    labels = export_checkpoint(ckpt, out / "labels", **quiet)["artefacts"]["onnx"]
    logits = export_checkpoint(ckpt, out / "logits", output="logits", torch_program=True, **quiet)["artefacts"]
    return {"labels": labels, "logits": logits["onnx"], "pt2": logits["torch"], "checkpoint": ckpt}
