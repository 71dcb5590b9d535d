"""Papermill execution of notebooks into run directories (the base of sweeps)."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .runs import write_json_atomic


class RunFailed(RuntimeError):
    pass


def execute_notebook(notebook: str | Path, run_dir: str | Path, params: dict, *, progress: bool = False,
                     kernel: str = "python3") -> dict:
    """Execute ``notebook`` with ``params`` into ``run_dir``: the executed notebook, ``params.json`` and the
    notebook's ``record.json``. Returns the record. On failure the executed notebook (up to the failing cell)
    and ``error.json`` are kept and :class:`RunFailed` carries the notebook's error message."""
    import papermill as pm

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "params.json", params)
    out_nb = run_dir / Path(notebook).name
    try:
        pm.execute_notebook(str(notebook), str(out_nb), parameters={**params, "output_dir": str(run_dir)},
                            kernel_name=kernel, cwd=str(run_dir), progress_bar=progress, log_output=False)
    except pm.PapermillExecutionError as e:
        msg = f"{e.ename}: {e.evalue}"
        write_json_atomic(run_dir / "error.json", {"error": msg, "cell": e.exec_count})
        raise RunFailed(msg) from None
    return json.loads((run_dir / "record.json").read_text())
