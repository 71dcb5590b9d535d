"""Papermill sweeps: a small YAML spec -> a grid of notebook executions -> one directory per run.

A spec names a parameterized notebook, its ``fixed`` parameters, a ``grid`` (parameter -> list of values; a
dict parameter such as ``knobs`` can be gridded key by key as ``knobs.<name>``) and ``seeds``::

    name: attention             # the sweep's directory under out (default: the spec file's name)
    notebook: notebooks/run.ipynb
    fixed: {arch: llava, budget: smoke}
    grid:
      knobs.attention: [causal, bidirectional]
    seeds: [0, 1]
    out: papermill_runs         # default; relative paths are taken from the repository root

Configurations that are not a product (e.g. a different knob per architecture) go in ``cases``, a list of
parameter mappings (same keys as ``fixed``) each crossed with the grid and the seeds::

    cases:
      - {arch: llava, knobs.attention: bidirectional}
      - {arch: hovle, knobs.embed_attention: bidirectional}

:meth:`SweepSpec.runs` expands it (seeds outermost, then the cases, then the grid in file order) into parameter
dicts. Each
run executes in its own papermill process into ``<out>/<name>/<params_hash>/``, which holds the executed
notebook, ``params.json``, the notebook's ``record.json`` (written atomically by the notebook) and
``papermill.log``. A run whose ``record.json`` is a valid run record (:func:`vlmlab.jsonio.load_record`) is
complete: re-running a sweep skips it (resume). The notebook writes its record into ``<run>/.pending/``, moved to
``<run>/record.json`` only once the whole notebook has executed without error, so a run killed in its last cells
is not complete. A failed run keeps ``error.json`` and the notebook executed up to the failing cell, and the sweep goes
on; a later sweep retries it (removing the stale ``error.json`` first). A run directory is locked (``flock``)
while a process executes it, so two sweeps over the same directory never execute one run twice at once; a sweep
that finds a run busy waits for the other process to end it, then counts it complete (or executes it, had the
other failed or been stopped).

Runs go to a local pool (``workers`` papermill processes at a time) or, given a scheduler address, to a Dask
cluster (:func:`run_sweep`). Both call :func:`run_one`, so the same spec gives the same records. On a Dask
cluster every worker must see the notebook and the output directory at the same paths (a shared filesystem)
and have vlmlab installed.

The driver imports neither torch nor papermill: starting a sweep, and resuming a finished one, is quick.
"""
from __future__ import annotations

import ast
import contextlib
import copy
import fcntl
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .checks import article, check_output_dir, check_seed
from .jsonio import PENDING, RecordError, load_record, params_hash, read_record, write_json_atomic

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "papermill_runs"
SPEC_FIELDS = ("name", "notebook", "fixed", "grid", "seeds", "out", "cases")
RESERVED_PARAMS = ("output_dir",)  # set by the sweep for every run
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------------------------------------------
# One notebook execution

class RunFailed(RuntimeError):
    pass


def execute_notebook(notebook: str | Path, run_dir: str | Path, params: dict, *, progress: bool = False,
                     kernel: str = "python3") -> dict:
    """Execute ``notebook`` with ``params`` into ``run_dir``: the executed notebook, ``params.json`` and the
    notebook's ``record.json``. Returns the record. On failure the executed notebook (up to the failing cell)
    and ``error.json`` are kept and :class:`RunFailed` carries the notebook's error message.

    The notebook writes its record into ``run_dir/.pending/``; it becomes ``run_dir/record.json`` (the mark of a
    complete run) only after papermill has executed every cell."""
    import papermill as pm

    run_dir = Path(run_dir).absolute()  # the kernel runs in run_dir: a relative path would point inside it
    check_output_dir("output_dir", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "params.json", params)
    out_nb = run_dir / Path(notebook).name
    pending = run_dir / PENDING
    try:
        pm.execute_notebook(str(notebook), str(out_nb), parameters={**params, "output_dir": str(pending)},
                            kernel_name=kernel, cwd=str(run_dir), progress_bar=progress, log_output=False)
    except pm.PapermillExecutionError as e:
        msg = f"{e.ename}: {e.evalue}"
        write_json_atomic(run_dir / "error.json", {"error": msg, "cell": e.exec_count})
        raise RunFailed(msg) from None
    try:
        rec = load_record(pending / "record.json")
    except RecordError as e:
        msg = f"the notebook finished without writing a valid record: {e}"
        write_json_atomic(run_dir / "error.json", {"error": msg, "cell": None})
        raise RunFailed(msg) from None
    os.replace(pending / "record.json", run_dir / "record.json")  # atomic: the run is complete from here on
    _remove_pending(run_dir)
    return rec


def _remove_pending(run_dir: Path) -> None:
    """Drop what a run's notebook left in ``.pending`` (temp files, a record of an execution that did not end)."""
    pending = run_dir / PENDING
    if pending.is_dir():
        for f in pending.iterdir():
            f.unlink(missing_ok=True)
        pending.rmdir()


@contextlib.contextmanager
def _run_lock(run_dir: Path):
    """Non-blocking exclusive lock on a run directory; yields the open lock file, or None when another process
    holds it. The lock dies with the processes holding it (flock), so a killed sweep leaves none behind."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fh = open(run_dir / ".lock", "w")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


def _clean_for_retry(run_dir: Path) -> None:
    """Before (re-)executing a run: drop a stale error.json, the pending record of an execution that did not end
    and leftover temp files; an invalid record.json is kept aside as record.invalid.json, not deleted."""
    (run_dir / "error.json").unlink(missing_ok=True)
    if (run_dir / "record.json").exists() and read_record(run_dir) is None:
        (run_dir / "record.json").replace(run_dir / "record.invalid.json")
    _remove_pending(run_dir)
    for tmp in run_dir.glob(".*.json.*"):  # temp files of an atomic write that was killed mid-way
        tmp.unlink(missing_ok=True)


def _wait_unlocked(run_dir: Path) -> None:
    """Block until no process holds the run directory's lock (another sweep executing it has ended)."""
    with open(run_dir / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def claim_run(run_dir: Path):
    """Take a run directory for executing it, whichever executor: yields ``("busy", None)`` when another process
    holds its lock, ``("skipped", None)`` when it is complete (a valid record.json), otherwise ``(None, lock)``
    with what an earlier attempt left cleaned away (:func:`_clean_for_retry`); the lock is held until the block
    ends."""
    with _run_lock(run_dir) as lock:
        if lock is None:
            yield "busy", None
        elif read_record(run_dir) is not None:  # completed by another sweep meanwhile
            yield "skipped", None
        else:
            _clean_for_retry(run_dir)
            yield None, lock


def _log_tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


_ACTIVE: set[subprocess.Popen] = set()  # this process's running papermill children (stopped on Ctrl-C)
_ACTIVE_LOCK = threading.Lock()
# set on Ctrl-C, under _ACTIVE_LOCK: a worker thread that picks up a run after the stop began does not start it
# (it would inherit the stop's ignored SIGINT, escape _stop_active's snapshot and run to its end)
_STOPPING = threading.Event()
_INTERRUPTED_RC = (-signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL, 130, 137, 143)


def run_one(notebook: str, run_dir: str, params: dict, threads: int | None = None) -> dict:
    """Execute one run in a fresh papermill process (the unit of work of both executors). Never raises for a
    failed run: returns ``{"status": "done" | "skipped" | "failed" | "busy" | "interrupted", "error",
    "seconds"}``. "busy": another process is executing this run directory right now."""
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    with claim_run(run_dir) as (state, lock):
        if state == "busy":
            return {"status": "busy", "error": f"{run_dir} is being executed by another process", "seconds": 0.0}
        if state == "skipped":
            return {"status": "skipped", "error": None, "seconds": 0.0}
        from .widgets import BATCH_ENV

        env = {**os.environ, BATCH_ENV: "1"}  # unattended: no interactive widgets (vlmlab.widgets.batch_mode)
        if threads:
            env.update({v: str(threads) for v in THREAD_VARS})
        cmd = [sys.executable, "-c", "from vlmlab.sweep import _child_main; _child_main()", str(notebook),
               str(run_dir), json.dumps(params)]
        log_path = run_dir / "papermill.log"
        with open(log_path, "w") as log:
            # the child inherits the lock's file descriptor: the run stays locked while it lives, even if this
            # process dies first
            with _ACTIVE_LOCK:
                proc = None if _STOPPING.is_set() else subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, env=env, pass_fds=(lock.fileno(),))
                if proc is not None:
                    _ACTIVE.add(proc)
            if proc is not None:
                try:
                    rc = proc.wait()
                finally:
                    with _ACTIVE_LOCK:
                        _ACTIVE.discard(proc)
        if proc is None:
            log_path.unlink(missing_ok=True)
            return {"status": "interrupted", "error": "the sweep was stopping: not started", "seconds": 0.0}
        seconds = time.perf_counter() - t0
        if rc == 0 and read_record(run_dir) is not None:
            return {"status": "done", "error": None, "seconds": seconds}
        err_path = run_dir / "error.json"
        if err_path.is_file():
            try:
                err = json.loads(err_path.read_text()).get("error")
            except ValueError:
                err = None
            return {"status": "failed", "error": err or f"see {err_path}", "seconds": seconds}
        if rc in _INTERRUPTED_RC:
            return {"status": "interrupted", "error": f"papermill process ended by a signal (exit {rc})",
                    "seconds": seconds}
        msg = (f"papermill process exited with status {rc} without a record"
               if rc else "the notebook finished without writing a valid record.json")
        write_json_atomic(err_path, {"error": msg, "cell": None, "log_tail": _log_tail(log_path)})
        return {"status": "failed", "error": msg, "seconds": seconds}


def _child_main() -> None:
    """Entry of the per-run papermill process: ``python -c ... NOTEBOOK RUN_DIR PARAMS_JSON``."""
    notebook, run_dir, params = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    try:
        execute_notebook(notebook, run_dir, params)
    except RunFailed as e:
        print(f"run failed: {e}", file=sys.stderr)
        sys.exit(3)
    except Exception as e:  # a dead kernel, an nbclient/papermill error: record it like a notebook error
        import traceback

        traceback.print_exc()
        write_json_atomic(run_dir / "error.json", {"error": f"{type(e).__name__}: {e}", "cell": None})
        sys.exit(4)


def _stop_active(grace: float = 10.0) -> None:
    """Ctrl-C: ask running papermill children to stop (papermill shuts its kernel down), then kill stragglers."""
    with _ACTIVE_LOCK:
        _STOPPING.set()
        procs = list(_ACTIVE)
    for p in procs:
        with contextlib.suppress(OSError):
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()


# --------------------------------------------------------------------------------------------------------------
# Spec

class SweepSpecError(ValueError):
    """An invalid sweep spec; the message names the field and what is allowed."""


def notebook_parameters(notebook: str | Path) -> dict:
    """The names and default values (literals; None where not a literal) of a notebook's parameters cell."""
    nb = json.loads(Path(notebook).read_text())
    cells = [c for c in nb.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise SweepSpecError(f"notebook: {notebook} has no cell tagged 'parameters'")
    src = cells[0]["source"]
    src = "".join(src) if isinstance(src, list) else src
    out = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets, value = [node.target], node.value
        elif isinstance(node, ast.Assign):
            targets, value = [t for t in node.targets if isinstance(t, ast.Name)], node.value
        else:
            continue
        try:
            default = ast.literal_eval(value) if value is not None else None
        except ValueError:
            default = None
        for t in targets:
            out[t.id] = default
    return out


def _type_name(v) -> str:
    return type(v).__name__


def _check_value(where: str, value, default) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise SweepSpecError(f"{where}: {value!r} is not a plain YAML value (string, number, bool, list, map)") \
            from None
    if default is None or value is None:
        return
    ok = isinstance(value, type(default)) and not (isinstance(value, bool) and not isinstance(default, bool))
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise SweepSpecError(f"{where}: expected {article(_type_name(default))} (the notebook's default is "
                             f"{default!r}), got {value!r} ({_type_name(value)})")


@dataclass
class SweepSpec:
    """A validated sweep spec (see the module docstring). Build it with :meth:`from_yaml` or :meth:`from_dict`;
    paths are resolved, so it can be shipped to other processes."""

    notebook: Path
    name: str
    fixed: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    seeds: list | None = None
    out: Path = DEFAULT_OUT
    source: Path | None = None
    cases: list | None = None  # parameter mappings crossed with the grid and the seeds (None: one empty case)

    def __post_init__(self):
        self.notebook = Path(self.notebook)
        self.out = Path(self.out)
        self._validate()

    # ---- construction
    @classmethod
    def from_yaml(cls, path: str | Path, *, out: str | Path | None = None) -> "SweepSpec":
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise SweepSpecError(f"sweep spec {path} does not exist") from None
        except yaml.YAMLError as e:
            raise SweepSpecError(f"sweep spec {path} is not valid YAML: {e}") from None
        return cls.from_dict(data, source=path, out=out)

    @classmethod
    def from_dict(cls, data: dict, *, source: str | Path | None = None,
                  out: str | Path | None = None) -> "SweepSpec":
        """``source``: the spec file (its directory is searched for the notebook, its stem is the default name);
        ``out`` overrides the spec's ``out``."""
        where = f"sweep spec {source}" if source else "sweep spec"
        if not isinstance(data, dict):
            raise SweepSpecError(f"{where} must be a mapping with fields {list(SPEC_FIELDS)}, got {data!r}")
        unknown = [k for k in data if k not in SPEC_FIELDS]
        if unknown:
            raise SweepSpecError(f"{where}: unknown field {unknown[0]!r}; allowed fields: {list(SPEC_FIELDS)}")
        source = Path(source).resolve() if source else None

        if "notebook" not in data:
            raise SweepSpecError(f"{where}: field 'notebook' is required (path of the notebook to execute)")
        nb = data["notebook"]
        if not isinstance(nb, str) or not nb:
            raise SweepSpecError(f"notebook: expected a path (string), got {nb!r}")
        candidates = [Path(nb)] if Path(nb).is_absolute() else \
            ([source.parent / nb] if source else []) + [REPO / nb, Path.cwd() / nb]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise SweepSpecError(f"notebook: {nb!r} not found (looked at {[str(p) for p in candidates]})")

        name = data.get("name", source.stem if source else None)
        if name is None:
            raise SweepSpecError("name: required when the spec does not come from a file")

        if out is None:
            out = data.get("out", DEFAULT_OUT)
            if not isinstance(out, (str, Path)) or not str(out):
                raise SweepSpecError(f"out: expected a directory path (string), got {out!r}")
            out = Path(out) if Path(out).is_absolute() else REPO / out
        for key in ("fixed", "grid"):
            if data.get(key) is None:
                data = {**data, key: {}}
        seeds = data.get("seeds")
        return cls(notebook=found.resolve(), name=name, fixed=data["fixed"], grid=data["grid"], seeds=seeds,
                   out=Path(out).resolve(), source=source, cases=data.get("cases"))

    # ---- validation
    def _validate(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise SweepSpecError(f"name: {self.name!r} is not a valid directory name; allowed: letters, digits, "
                                 "'_', '.', '-' (not starting with '.', '_' or '-')")
        if not self.notebook.is_file():
            raise SweepSpecError(f"notebook: {self.notebook} does not exist")
        params = notebook_parameters(self.notebook)
        allowed = [p for p in params if p not in RESERVED_PARAMS]
        dict_params = [p for p in allowed if isinstance(params[p], dict)]

        if not isinstance(self.fixed, dict):
            raise SweepSpecError(f"fixed: expected a mapping of parameter -> value, got {self.fixed!r}")
        if not isinstance(self.grid, dict):
            raise SweepSpecError(f"grid: expected a mapping of parameter -> list of values, got {self.grid!r}")

        def check_key(section: str, key) -> None:
            if not isinstance(key, str):
                raise SweepSpecError(f"{section}: parameter names are strings, got {key!r}")
            if key in RESERVED_PARAMS:
                raise SweepSpecError(f"{section}.{key}: set by the sweep for every run (each run gets its own "
                                     f"directory); allowed parameters: {allowed}")
            base, dot, sub = key.partition(".")
            if base not in allowed:
                raise SweepSpecError(f"{section}.{key}: {base!r} is not a parameter of {self.notebook.name}; "
                                     f"allowed parameters: {allowed}"
                                     + (f" (and '<p>.<key>' entries for the dict parameters {dict_params})"
                                        if dict_params else ""))
            if dot and (base not in dict_params or not sub):
                raise SweepSpecError(f"{section}.{key}: '<parameter>.<key>' entries are for dict parameters: "
                                     f"{dict_params}")

        def default_for(key):
            base, dot, sub = key.partition(".")
            return None if dot else params[base]

        for key, value in self.fixed.items():
            check_key("fixed", key)
            _check_value(f"fixed.{key}", value, default_for(key))
        for key, values in self.grid.items():
            check_key("grid", key)
            if not isinstance(values, list) or not values:
                raise SweepSpecError(f"grid.{key}: expected a non-empty list of values, got {values!r}")
            seen = set()
            for v in values:
                _check_value(f"grid.{key}", v, default_for(key))
                blob = json.dumps(v, sort_keys=True)
                if blob in seen:
                    raise SweepSpecError(f"grid.{key}: value {v!r} is listed twice")
                seen.add(blob)
            if key in self.fixed:
                raise SweepSpecError(f"grid.{key}: also set in fixed; a parameter is either fixed or gridded")
        if self.cases is not None:
            if not isinstance(self.cases, list) or not self.cases:
                raise SweepSpecError(f"cases: expected a non-empty list of mappings (parameter -> value), "
                                     f"got {self.cases!r}")
            for i, case in enumerate(self.cases):
                if not isinstance(case, dict):
                    raise SweepSpecError(f"cases[{i}]: expected a mapping of parameter -> value, got {case!r}")
                for key, value in case.items():
                    check_key(f"cases[{i}]", key)
                    _check_value(f"cases[{i}].{key}", value, default_for(key))
                    if key in self.fixed or key in self.grid or (key == "seed" and self.seeds is not None):
                        raise SweepSpecError(f"cases[{i}].{key}: also set in fixed, grid or seeds; a parameter "
                                             "is either fixed, gridded or given per case")
        if self.seeds is not None:
            if "seed" not in allowed:
                raise SweepSpecError(f"seeds: {self.notebook.name} has no 'seed' parameter; allowed parameters: "
                                     f"{allowed}")
            if not isinstance(self.seeds, list) or not self.seeds or not all(
                    isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
                raise SweepSpecError(f"seeds: expected a non-empty list of integers, got {self.seeds!r}")
            for seed in self.seeds:
                try:
                    check_seed("seed", seed)
                except ValueError as e:
                    raise SweepSpecError(f"seeds: {e}") from None
            if len(set(self.seeds)) != len(self.seeds):
                raise SweepSpecError(f"seeds: {self.seeds} lists a seed twice")
            if "seed" in self.fixed or "seed" in self.grid:
                raise SweepSpecError("seeds: 'seed' is also set in fixed or grid; give seeds only in 'seeds'")
        try:
            check_output_dir("out", self.out)
            check_output_dir("out", self.sweep_dir)
        except ValueError as e:
            raise SweepSpecError(str(e)) from None
        runs = self.runs()
        hashes = {}
        for p in runs:
            h = params_hash(p)
            if h in hashes:
                raise SweepSpecError(f"grid: two grid points give the same parameters {p}; remove the overlap")
            hashes[h] = p

    def check_values(self, runs: list[dict] | None = None) -> None:
        """Check every run's parameter values (default: all runs) by the run's own validation,
        :meth:`vlmlab.runs.RunConfig.from_params`, when the notebook takes its parameters (the run notebook
        does), so that a bad value fails here rather than inside each run's kernel. Imports torch: the CLI calls
        it before executing (for the runs it will execute) and at ``--list``."""
        import inspect

        from .runs import RunConfig

        defaults = notebook_parameters(self.notebook)
        accepted = set(inspect.signature(RunConfig.from_params).parameters) - {"cls"}
        if "arch" not in defaults or not set(defaults) <= accepted:
            return  # another notebook: its parameters mean what it says, not what a run's do
        base = {k: v for k, v in defaults.items() if k not in RESERVED_PARAMS and v is not None}
        for p in self.runs() if runs is None else runs:
            try:
                RunConfig.from_params(**{**base, **p}, output_dir=str(self.run_dir(p)))
            except (ValueError, TypeError) as e:
                raise SweepSpecError(f"run {json.dumps(p, sort_keys=True)}: {e}") from None

    # ---- expansion
    def runs(self) -> list[dict]:
        """Every run's parameters: seeds outermost (so every grid point gets its first seed early), then the
        cases, then the grid's product in the spec's order. Dict entries (``knobs.attention``) are merged into
        the dict parameter, on top of a fixed, per-case or gridded whole dict."""
        names = list(self.grid)
        seeds = self.seeds if self.seeds is not None else [None]
        cases = self.cases if self.cases is not None else [{}]
        out = []
        for seed in seeds:
            for case, combo in itertools.product(cases, itertools.product(*(self.grid[n] for n in names))):
                point = dict(zip(names, combo))
                params, dotted = {}, {}
                for source in (self.fixed, case, point):
                    for k, v in source.items():
                        if "." in k:
                            dotted[k] = v
                        else:
                            params[k] = copy.deepcopy(v)
                for k, v in dotted.items():
                    base, _, sub = k.partition(".")
                    params[base] = {**params.get(base, {}), sub: copy.deepcopy(v)}
                if seed is not None:
                    params["seed"] = seed
                out.append(params)
        return out

    @property
    def sweep_dir(self) -> Path:
        return self.out / self.name

    def run_dir(self, params: dict) -> Path:
        return self.sweep_dir / params_hash(params)

    def to_dict(self) -> dict:
        return {"name": self.name, "notebook": str(self.notebook), "fixed": self.fixed, "grid": self.grid,
                "seeds": self.seeds, "out": str(self.out), "source": str(self.source) if self.source else None,
                "cases": self.cases}


# --------------------------------------------------------------------------------------------------------------
# Executing a sweep

@dataclass
class RunOutcome:
    params: dict
    run_dir: Path
    status: str  # done | skipped | failed | busy
    error: str | None = None
    seconds: float = 0.0

    @property
    def record(self) -> dict | None:
        return read_record(self.run_dir)


@dataclass
class SweepResult:
    spec: SweepSpec
    done: list = field(default_factory=list)     # executed now, record written
    skipped: list = field(default_factory=list)  # complete before (resume)
    failed: list = field(default_factory=list)   # error.json + executed notebook up to the failure
    busy: list = field(default_factory=list)     # being executed by another process; not touched
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.busy

    def outcomes(self) -> list:
        return self.done + self.skipped + self.failed + self.busy

    def records(self) -> list[dict]:
        """The records of every complete run (executed now or before), in the spec's order."""
        order = {params_hash(p): i for i, p in enumerate(self.spec.runs())}
        runs = sorted(self.done + self.skipped, key=lambda o: order.get(o.run_dir.name, len(order)))
        return [r for r in (o.record for o in runs) if r is not None]

    def tidy(self):
        """One tidy DataFrame (vlmlab.results.tidy) of the complete runs of this sweep."""
        import pandas as pd

        from .results import tidy

        frames = [tidy(o.record, str(o.run_dir)) for o in self.done + self.skipped if o.record is not None]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def summary(self) -> str:
        lines = [f"sweep {self.spec.name}: {len(self.done)} run(s) executed, {len(self.skipped)} already complete, "
                 f"{len(self.failed)} failed" + (f", {len(self.busy)} busy elsewhere" if self.busy else "")
                 + f" ({self.seconds:.0f}s) in {self.spec.sweep_dir}"]
        for o in self.failed:
            lines.append(f"  FAILED {o.run_dir.name} {json.dumps(o.params, sort_keys=True)}\n"
                         f"         {o.error}\n         see {o.run_dir / 'error.json'}")
        for o in self.busy:
            lines.append(f"  BUSY   {o.run_dir.name}: executed by another process right now")
        return "\n".join(lines)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _default_workers() -> int:
    return max(1, _cores() // 2)


def run_sweep(spec: SweepSpec | str | Path, *, workers: int | None = None, dask_address=None,
              progress: bool = True, threads: int | None = None) -> SweepResult:
    """Execute every incomplete run of ``spec``; returns which runs were executed, skipped (already complete)
    and failed. Failures do not stop the sweep; Ctrl-C stops it (running notebooks are interrupted, nothing
    half-written is left as a record) and a later call resumes.

    workers: papermill processes at a time on this machine (default: one per two CPU cores); ignored with Dask.
    dask_address: a Dask scheduler address (or a ``distributed.Client``): runs become Dask tasks instead.
    threads: CPU threads per run (OMP/MKL_NUM_THREADS of its kernel); default on the local pool:
        cores // workers; with Dask: the workers' environment.
    """
    if not isinstance(spec, SweepSpec):
        spec = SweepSpec.from_yaml(spec)
    t0 = time.perf_counter()
    all_runs = spec.runs()
    spec.sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(spec.sweep_dir / "sweep.json",
                      {"spec": spec.to_dict(), "runs": {params_hash(p): p for p in all_runs}})
    result = SweepResult(spec)
    pending = []
    for p in all_runs:
        rd = spec.run_dir(p)
        if read_record(rd) is not None:
            result.skipped.append(RunOutcome(p, rd, "skipped"))
        else:
            pending.append((p, rd))
    if dask_address is None:
        workers = workers or _default_workers()
        if threads is None:
            threads = max(1, _cores() // workers)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(all_runs), initial=len(result.skipped), desc=f"sweep {spec.name}", unit="run",
               disable=not progress)

    def collect(params, rd, res: dict) -> None:
        status = res["status"]
        o = RunOutcome(params, rd, status, res.get("error"), res.get("seconds", 0.0))
        if status == "interrupted":
            raise KeyboardInterrupt(f"run {rd.name} was interrupted")
        {"done": result.done, "skipped": result.skipped, "failed": result.failed, "busy": result.busy}[status] \
            .append(o)
        if status != "busy":  # a busy run is counted once it has ended
            bar.update(1)
        if result.failed:
            bar.set_postfix(failed=len(result.failed))

    try:
        while pending:
            if dask_address is None:
                _run_local(spec, pending, workers, threads, collect)
            else:
                _run_dask(spec, pending, dask_address, threads, collect)
            # runs another process was executing: wait for it to end them, then take them again (complete ones
            # are skipped), so that two sweeps over one directory both end with every run accounted for
            pending = [(o.params, o.run_dir) for o in result.busy]
            result.busy = []
            for _, rd in pending:
                _wait_unlocked(rd)
    finally:
        bar.close()
    order = {params_hash(p): i for i, p in enumerate(all_runs)}
    for lst in (result.done, result.skipped, result.failed, result.busy):
        lst.sort(key=lambda o: order[o.run_dir.name])
    result.seconds = time.perf_counter() - t0
    return result


def _run_local(spec, pending, workers, threads, collect) -> None:
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    # threads only wait on their papermill child processes: one process per run, `workers` at a time
    ex = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vlmlab-sweep")
    _STOPPING.clear()
    try:
        futs = {ex.submit(run_one, str(spec.notebook), str(rd), p, threads): (p, rd) for p, rd in pending}
        remaining = set(futs)
        while remaining:
            finished, remaining = wait(remaining, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in finished:
                collect(*futs[f], f.result())
    except BaseException:
        ex.shutdown(wait=False, cancel_futures=True)
        with _sigint_ignored():  # a second Ctrl-C (or the kernels' own interrupt) must not cut the clean stop short
            _stop_active()
        raise
    ex.shutdown(wait=True)


@contextlib.contextmanager
def _sigint_ignored():
    """Ignore SIGINT for the block where this is the main thread (signal handlers live there), then restore."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _run_dask(spec, pending, address, threads, collect) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ImportError("the Dask executor needs dask.distributed: pip install 'dask[distributed]' "
                          "(or this package's [test] extra)") from None

    own = not isinstance(address, Client)
    client = Client(address) if own else address
    try:
        futs = {client.submit(run_one, str(spec.notebook), str(rd), p, threads, pure=False): (p, rd)
                for p, rd in pending}
        try:
            for fut in as_completed(list(futs)):
                p, rd = futs[fut]
                try:
                    res = fut.result()
                except Exception as e:  # the task itself died (lost worker, ...): record it as a failed run
                    msg = f"dask task failed: {type(e).__name__}: {e}"
                    with _run_lock(rd) as lock:
                        if lock is not None and read_record(rd) is None:
                            write_json_atomic(rd / "error.json", {"error": msg, "cell": None})
                    res = {"status": "failed", "error": msg, "seconds": 0.0}
                if res["status"] == "interrupted":  # a worker stopped it, not the user: a failed run here
                    res = {**res, "status": "failed", "error": f"on a Dask worker: {res['error']}"}
                    with _run_lock(rd) as lock:
                        if lock is not None and read_record(rd) is None:
                            write_json_atomic(rd / "error.json", {"error": res["error"], "cell": None})
                collect(p, rd, res)
        except BaseException:
            client.cancel(list(futs))  # queued runs never start; a run already executing completes on its worker
            raise
    finally:
        if own:
            client.close()


# --------------------------------------------------------------------------------------------------------------
# Command line: `vlmlab sweep`, `vlmlab results`

def cmd_sweep(a) -> None:
    spec = SweepSpec.from_yaml(a.spec, out=a.out)
    runs = spec.runs()
    if a.list:
        spec.check_values(runs)
        for p in runs:
            rd = spec.run_dir(p)
            state = "complete" if read_record(rd) else ("failed" if (rd / "error.json").exists() else
                                                        "invalid" if (rd / "record.json").exists() else "pending")
            print(f"{rd}  {state:8s}  {json.dumps(p, sort_keys=True)}")
        return
    try:
        todo = [p for p in runs if read_record(spec.run_dir(p)) is None]
        if todo:  # a finished sweep resumes without importing torch
            spec.check_values(todo)
        where = f"Dask cluster {a.dask}" if a.dask else f"{a.workers or _default_workers()} local worker(s)"
        print(f"sweep {spec.name}: {len(runs)} run(s) of {spec.notebook.name} on {where} -> {spec.sweep_dir}")
        res = run_sweep(spec, workers=a.workers, dask_address=a.dask, threads=a.threads, progress=True)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # exiting already: a further Ctrl-C changes nothing
        print(f"\ninterrupted; completed runs are kept. Resume with: vlmlab sweep {a.spec}"
              + (f" --out {a.out}" if a.out else ""), file=sys.stderr)
        raise SystemExit(130) from None
    print(res.summary())
    print(f"tidy table: vlmlab results {spec.sweep_dir}")
    if not res.ok:
        raise SystemExit(1)


def cmd_results(a) -> None:
    from .results import collect

    root = Path(a.dir)
    if not root.is_dir():
        raise ValueError(f"results: {root} is not a directory")
    out = Path(a.output) if a.output else root / "tidy.csv"
    check_output_dir("--output", out.parent)
    if out.is_dir():
        raise ValueError(f"results: --output {out} is a directory; give a CSV file path")
    bad: list = []
    df = collect(root, bad=bad)
    for path, reason in bad:  # one line each: the file and what is wrong with it
        print(f"vlmlab: warning: skipped {path}: {reason}", file=sys.stderr)
    if df.empty:
        raise ValueError(f"results: no valid record.json under {root}" + (f" ({len(bad)} skipped)" if bad else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    n_runs = df["run"].nunique()
    failed = sum(1 for p in root.rglob("error.json") if not (p.parent / "record.json").exists())
    print(f"{len(df)} rows from {n_runs} run(s) -> {out}" + (f" ({failed} failed run(s) have no record)"
                                                              if failed else "")
          + (f" ({len(bad)} invalid record(s) skipped)" if bad else ""))


def add_cli(sub) -> None:
    """Add ``sweep`` and ``results`` to the ``vlmlab`` argparse subcommands."""
    s = sub.add_parser("sweep", help="execute a papermill sweep spec (YAML); resumes, records failures",
                       description="Execute every incomplete run of a sweep spec (YAML: notebook, fixed, grid, "
                                   "seeds, name, out) into <out>/<name>/<params hash>/. Completed runs are "
                                   "skipped; failed runs keep error.json and the sweep goes on.")
    s.add_argument("spec", help="sweep spec (YAML), e.g. notebooks/sweeps/smoke.yaml")
    s.add_argument("--workers", type=int, help="papermill processes at a time (local pool; default: cores // 2)")
    s.add_argument("--dask", metavar="ADDRESS", help="run on the Dask cluster at this scheduler address "
                                                     "(workers must share the filesystem)")
    s.add_argument("--out", help="output root, overriding the spec's `out` (default: papermill_runs/)")
    s.add_argument("--threads", type=int, help="CPU threads per run (default: cores // workers locally)")
    s.add_argument("--list", action="store_true", help="list the runs, their directories and states; run nothing")
    s.set_defaults(fn=cmd_sweep)

    s = sub.add_parser("results", help="one tidy CSV (a row per run and metric) of all records under DIR")
    s.add_argument("dir", help="directory searched recursively for record.json (a sweep or papermill_runs/)")
    s.add_argument("-o", "--output", help="CSV path (default: DIR/tidy.csv)")
    s.set_defaults(fn=cmd_results)


__all__ = ["SweepSpec", "SweepSpecError", "SweepResult", "RunOutcome", "run_sweep", "run_one", "execute_notebook",
           "RunFailed", "read_record", "notebook_parameters", "add_cli"]
