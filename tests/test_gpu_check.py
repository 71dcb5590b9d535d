"""benchmarks/gpu_check.sh is not run here (no GPU): its shell is syntax-checked, it refuses to measure without CUDA,
and its real-backbone piece runs on CPU at the smoke budget on tiny real-format checkpoints."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def test_the_script_parses_and_needs_cuda(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    import torch

    if torch.cuda.is_available():
        return
    res = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True,
                         env={**os.environ, "PYTHON": sys.executable}, timeout=300)
    assert res.returncode == 1 and "no CUDA device" in res.stderr


def test_the_real_backbone_check_runs_on_cpu(capsys):
    import json

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["real", "--budget", "smoke", "--device", "cpu", "--precision", "fp32"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["check"] == "llava-real@smoke" and line["samples_per_s"] > 0 and line["peak_memory_gib"] is None
    assert 0 <= line["test_overall"] <= 1
