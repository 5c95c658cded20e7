"""Every console entry point, run where an optional package is missing, names the extra to install in one line,
exits non-zero (zero for --help) and prints no traceback."""
import subprocess
import sys

import pytest

from jal_deploy.cli import extras

# `sys.modules[name] = None` makes `import name` raise ModuleNotFoundError, as in an environment without it
RUN = ("import sys; sys.modules[{module!r}] = None; sys.argv = [{command!r}, *{args!r}]; "
       "from jal_deploy.cli.extras import {entry}; {entry}()")


def run_without(module: str, entry: str, command: str, *args: str) -> subprocess.CompletedProcess:
    code = RUN.format(module=module, entry=entry, command=command, args=list(args))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("entry,command,args,extras", [
    ("jal_train", "jal-train", ["--preset", "synthetic-tiny", "--out", "runs/x"], "train"),
    ("jal_train", "jal-train", ["pipeline", "--help"], "train"),
    ("jal_export", "jal-export", ["run.pth", "--out", "models/x"], "train,export"),
])
def test_missing_torch_names_the_extra_without_a_traceback(entry, command, args, extras):
    result = run_without("torch", entry, command, *args)
    out = result.stdout + result.stderr
    assert "Traceback" not in out
    assert f"pip install 'jal-deploy[{extras}]'" in out and "'torch'" in out
    assert result.returncode == (0 if "--help" in args else 1)


def test_help_without_the_extra_still_describes_the_command():
    result = run_without("torch", "jal_train", "jal-train", "--help")
    assert result.returncode == 0 and result.stdout.startswith("Usage: jal-train")
    assert "Adaptation training" in result.stdout


def test_an_unrelated_missing_module_is_not_hidden(monkeypatch):
    monkeypatch.setitem(extras.COMMANDS, "jal-x", ("no_such_module_here:main", "train", "x"))
    with pytest.raises(ModuleNotFoundError):
        extras.run("jal-x")


def test_entry_points_run_the_real_commands():
    for entry, command in (("jal_train", "jal-train"), ("jal_export", "jal-export"), ("jal_segment", "jal-segment"),
                           ("jal_data", "jal-data"), ("jal_demo", "jal-demo")):
        result = subprocess.run([sys.executable, "-c", f"import sys; sys.argv = [{command!r}, '--help']; "
                                 f"from jal_deploy.cli.extras import {entry}; {entry}()"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert f"Usage: {command}" in result.stdout
