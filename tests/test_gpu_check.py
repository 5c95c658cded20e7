"""bench/gpu_check.sh in its CPU mode: the same script the GPU machine runs, with a tiny network, ends in the
one summary table with every part measured."""
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_gpu_check_cpu_mode_prints_one_complete_summary_table(tmp_path):
    env = {**os.environ, "GPU_CHECK_CPU": "1", "TMPDIR": str(tmp_path)}
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True,
                            env=env, timeout=600, cwd=str(tmp_path))
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.count("GPU check summary") == 1, out[-3000:]
    table = out[out.index("GPU check summary"):].splitlines()
    assert table[1].startswith("| part") and table[2].startswith("|---")
    parts = [line.split("|")[1].strip() for line in table[3:] if line.startswith("|")]
    assert {"training JAL+WTM", "deploy graph, torch backend", "jal-segment end to end",
            "parity on this device"} == set(parts)
    assert parts.count("deploy graph, torch backend") == 4  # fp32 and bf16 at batch 1 and 2
    assert "not measured" not in "\n".join(table) and "failed" not in out
