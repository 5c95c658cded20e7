"""Shared fixtures: a small synthetic benchmark generated once per test session by the project itself."""
import importlib.util
import sys
from pathlib import Path

import pytest

from jal_deploy.synth import generate


@pytest.fixture(scope="session")
def bench_module():
    """Import a script of bench/ by name (bench/ is scripts, not a package): `bench_module("runtime_gpu")`."""
    bench = Path(__file__).resolve().parents[1] / "bench"
    if str(bench) not in sys.path:  # as when run as a script: its modules import their neighbours
        sys.path.append(str(bench))

    def load(name: str):
        path = bench / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # registered before it runs, as an import does (dataclasses look it up there)
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
    {'labels': uint8-in/labels-out ONNX, 'logits': logits ONNX, 'scores': scores-at-stride ONNX (with its
    parity report), 'pt2': logits torch.export program}."""
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
    scores = export_checkpoint(ckpt, out / "scores", output="scores", **quiet)
    return {"labels": labels, "logits": logits["onnx"], "pt2": logits["torch"], "checkpoint": ckpt,
            "scores": scores["artefacts"]["onnx"], "scores_parity": scores["parity"]}


@pytest.fixture(scope="session")
def adapted(synth_root, tmp_path_factory):
    """A (2-iteration) JAL+WTM checkpoint with WTM2 moved off the identity, so Dec2^T differs from Dec2."""
    import torch

    from tests.test_training import tiny_cfg
    from training.engine import Trainer

    trainer = Trainer(tiny_cfg(synth_root, "jal-wtm", iters=2), tmp_path_factory.mktemp("adapted"), progress=False)
    trainer.run()
    torch.manual_seed(3)
    with torch.no_grad():
        trainer.model.wtm2.conv.weight.add_(0.05 * torch.randn_like(trainer.model.wtm2.conv.weight))
    return trainer.save("adapted.pth")


@pytest.fixture(scope="session")
def many_targets(tmp_path_factory):
    """A Cityscapes-format target tree of MANY train frames: writing their pseudo labels takes seconds, far longer
    than the Ctrl-C of `ctrl_c_once_written` takes to land once the first file is there."""
    from tests.test_pseudo_labels import MANY

    root = tmp_path_factory.mktemp("many")
    generate(root, seed=1, counts={"gta5": 0, "synthia": 0, "cs_train": MANY, "cs_val": 0}, size=(128, 64),
             progress=False, workers=1)
    return root / "cityscapes"


@pytest.fixture(scope="session")
def pseudo(synth_root, adapted, tmp_path_factory):
    """The adapted model's pseudo labels of the synthetic target train split, with default options."""
    from training.pseudo_labels import PseudoLabelOptions, make_pseudo_labels

    out = tmp_path_factory.mktemp("pseudo") / "pl"
    summary = make_pseudo_labels(adapted, synth_root / "cityscapes", out, PseudoLabelOptions(batch=4),
                                 progress=False, log=lambda *_: None)
    return out, summary


@pytest.fixture
def slow_segmenter(runtime_models):
    """A Segmenter over the real labels-out backend, made slower (20 ms a call) than a live camera's frames."""
    import time

    from jal_deploy.segmenter import Segmenter

    backend = Segmenter.from_path(runtime_models["labels"]).backend

    class Slow:
        info, notes, name, device, path = backend.info, [], "slow", "cpu", None

        def __call__(self, x):
            time.sleep(0.02)
            return backend(x)

        def close(self):
            pass

    return Segmenter(Slow())
