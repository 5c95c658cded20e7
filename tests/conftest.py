"""Shared fixtures: a small synthetic benchmark generated once per test session by the project itself."""
import pytest

from jal_deploy.synth import generate


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=0, counts={"gta5": 6, "synthia": 4, "cs_train": 6, "cs_val": 4}, size=(128, 64),
             progress=False, workers=1)
    return root
