"""Package-level promises: console scripts answer --help, the runtime stays torch-free, CLIs fail cleanly."""
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from training.checkpoints import save_checkpoint
from training.cli import main as train_main
from training.models import build_model


@pytest.mark.parametrize("script", ["jal-train", "jal-export", "jal-segment", "jal-data"])
def test_console_scripts_answer_help(script):
    out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout


def test_runtime_package_never_imports_torch_or_training():
    code = (
        "import sys, pkgutil, importlib, jal_deploy\n"
        "for m in pkgutil.walk_packages(jal_deploy.__path__, 'jal_deploy.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in ('torch', 'training', 'export') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_inspect_weights_reports_a_complete_load(tmp_path):
    model = build_model("deeplabv2-r18", 19)
    save_checkpoint(tmp_path / "r18.pth", model)
    result = CliRunner().invoke(train_main, ["inspect-weights", str(tmp_path / "r18.pth"), "--arch", "deeplabv2-r18"])
    assert result.exit_code == 0, result.output
    assert f"format jal, {len(model.state_dict())} tensors loaded" in result.output
    assert "backbone: complete" in result.output


def test_inspect_weights_on_a_bad_file_exits_non_zero_without_traceback(tmp_path):
    (tmp_path / "broken.pth").write_bytes(b"\x00" * 64)
    result = CliRunner().invoke(train_main, ["inspect-weights", str(tmp_path / "broken.pth")])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "is not a readable PyTorch checkpoint" in result.output
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "other.pth")
    result = CliRunner().invoke(train_main, ["inspect-weights", str(tmp_path / "other.pth"), "--arch",
                                             "deeplabv2-r18"])
    assert result.exit_code == 1 and "does not fit this architecture" in result.output
