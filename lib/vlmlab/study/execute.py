"""Launching a study's missing runs (papermill through :func:`vlmlab.sweep.run_sweep`, or in-process) and
reusing the rest."""
from __future__ import annotations

import json

from ..budgets import get_budget
from ..jsonio import write_json_atomic
from ..sweep import RunOutcome, SweepResult, read_record, run_sweep
from .store import Study


EXECUTORS = ("papermill", "inprocess")

def _run_inprocess(study: Study, progress: bool, threads: int | None = None) -> SweepResult:
    """Train the study's missing runs one after another in this process, into the same run directories (and
    with the same lock, params.json and atomic record.json) as the papermill executor. A run another process
    holds is left to it (``busy``): so several of these loops can share one study (:func:`_run_workers`)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    import time
    import traceback

    from ..backbones import load_backbones
    from ..device import pick_device
    from ..runs import RunConfig, run
    from ..sweep import claim_run
    from ..world import WorldConfig

    spec = study.spec()
    result = SweepResult(spec)
    t0 = time.perf_counter()
    bb = None
    for case, p, rd in study.runs():
        if read_record(rd) is not None:
            result.skipped.append(RunOutcome(p, rd, "skipped"))
            continue
        with claim_run(rd) as (state, _):
            if state == "busy":
                result.busy.append(RunOutcome(p, rd, "busy", f"{rd} is being executed by another process"))
                continue
            if state == "skipped":
                result.skipped.append(RunOutcome(p, rd, "skipped"))
                continue
            write_json_atomic(rd / "params.json", p)
            t1 = time.perf_counter()
            try:
                config = RunConfig.from_params(**p)
                if bb is None:
                    bb = load_backbones(WorldConfig(), get_budget(study.budget), device=pick_device("auto"),
                                        progress=progress)
                run(config, progress=False, backbones=bb, output_dir=rd)
            except Exception as e:  # recorded like a failed notebook; the study goes on
                msg = f"{type(e).__name__}: {e}"
                write_json_atomic(rd / "error.json", {"error": msg, "cell": None,
                                                      "traceback": traceback.format_exc()[-4000:]})
                result.failed.append(RunOutcome(p, rd, "failed", msg, time.perf_counter() - t1))
                continue
            result.done.append(RunOutcome(p, rd, "done", None, time.perf_counter() - t1))
            if progress:
                print(f"[{study.name}] {case.name} seed {p['seed']}: done in {time.perf_counter() - t1:.1f}s",
                      flush=True)
    result.seconds = time.perf_counter() - t0
    return result


def _run_workers(study: Study, workers: int, threads: int, progress: bool) -> SweepResult:
    """``workers`` warm processes, each training runs one after another in-process (imports and backbones paid
    once per process, not once per run as a papermill kernel pays them), the run locks sharing the work out.
    Spawned, not forked: a forked copy of a process that already ran torch's thread pool can hang."""
    import multiprocessing as mp
    import time
    from concurrent.futures import ProcessPoolExecutor

    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        parts = list(pool.map(_run_inprocess, [study] * workers, [progress] * workers, [threads] * workers))
    result = SweepResult(study.spec())
    for part in parts:
        result.done += part.done
        result.failed += part.failed
    # a run another worker trained was skipped or busy in the rest; one complete before, skipped by every worker
    counted = {o.run_dir for o in result.done + result.failed}
    for kind in ("skipped", "busy"):
        for o in (o for part in parts for o in getattr(part, kind)):
            if o.run_dir not in counted:
                counted.add(o.run_dir)
                getattr(result, kind).append(o)
    result.seconds = time.perf_counter() - t0
    return result


def run_study(study: Study, *, executor: str = "papermill", workers: int = 2, threads: int = 1,
              progress: bool = True) -> SweepResult:
    """Execute the study's missing runs (complete ones are reused, whichever study or executor made them) and
    return the sweep result (done / skipped / failed lists). Failed runs do not stop the study.

    executor: ``papermill`` (one process per run of ``notebooks/run.ipynb``, ``workers`` at a time, ``threads``
    CPU threads each: what ``vlmlab sweep`` does) or ``inprocess`` (no notebook per run: with one worker the runs
    train one after another in this process, with more each of ``workers`` warm processes trains run after run,
    ``threads`` CPU threads each)."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor={executor!r}; allowed values: {list(EXECUTORS)}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}; must be an int >= 1")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r}; must be an int >= 1")
    for rd in study.stale():  # set aside, not deleted: retrained below like a missing run
        (rd / "record.json").replace(rd / "record.stale.json")
        if progress:
            print(f"[{study.name}] {rd.name}: its record was made under another definition of budget "
                  f"{study.budget!r}; kept as record.stale.json and retrained", flush=True)
    if executor == "papermill":
        result = run_sweep(study.spec(), workers=workers, threads=threads, progress=progress)
    elif workers > 1:
        result = _run_workers(study, workers, threads, progress)
    else:
        result = _run_inprocess(study, progress)
    manifest = {"study": study.name, "budget": study.budget, "seeds": study.seeds,
                "cases": [{"name": c.name, "labels": c.labels, **c.params()} for c in study.cases],
                "runs": {rd.name: p for _, p, rd in study.runs()}}
    write_json_atomic(study.run_root / "studies" / f"{study.name}.json", manifest)
    return result


def describe_result(result: SweepResult, study: Study) -> str:
    """One line per outcome kind, plus each failure with its error: what a notebook prints after launching."""
    n = len(study.runs())
    lines = [f"study {study.name!r}: {n} run(s) = {len(study.cases)} configuration(s) x {len(study.seeds)} seed(s) "
             f"at budget {study.budget!r}; {len(result.done)} trained now, {len(result.skipped)} reused from "
             f"{study.run_root}, {len(result.failed)} failed" + (f", {len(result.busy)} busy" if result.busy else "")
             + f" ({result.seconds:.0f}s)"]
    for o in result.failed:
        lines.append(f"  FAILED {o.run_dir.name} {json.dumps(o.params, sort_keys=True)}: {o.error}")
    return "\n".join(lines)
