"""Ablation and comparison studies: what the notebooks 20-23 and 30 (and ``tools/arch_table.py``) share.

A *study* is a list of configurations (:class:`Case`: an architecture, its non-default knobs, and the labels a
plot uses, e.g. ``{"K": 256}``) crossed with seeds at one budget. :func:`run_study` launches the runs it lacks
and reuses the rest:

- every study writes into **one shared run store**, ``<store>/study-<budget>/<params hash>/`` (default store:
  ``papermill_runs/``), one directory per run of ``notebooks/run.ipynb`` named by the hash of its parameters
  ``{arch, knobs, seed, budget}``. The knobs are *canonical*: only those that differ from the architecture's
  defaults (:func:`canonical_knobs`), so ``{"attention": "causal"}`` and ``{}`` are the same LLaVA run. The
  comparison's LLaVA seed-0 run and the attention ablation's LLaVA-causal seed-0 run are therefore one run,
  executed once, whichever notebook comes first.
- ``executor="papermill"`` goes through :func:`vlmlab.sweep.run_sweep` (one papermill process per run, a local
  pool, resume, failures recorded); ``executor="inprocess"`` trains the runs one after another in the calling
  process (no kernel start per run: the tests and quick smoke looks) and writes the same ``params.json`` and
  ``record.json`` into the same directories, so either executor reuses the other's runs.

Then :func:`accuracy_frame` turns the records into one tidy frame (a row per run, split, category and source:
model / floor / ceiling / chance), :func:`ablation_plot` draws accuracy per category against the ablated value
(bars = mean over seeds, error bars = sd over seeds, points = the seeds, floor and ceiling as lines),
:func:`summary_table` prints mean ± std per configuration, and :func:`compare`, :func:`ranking`,
:func:`category_wins`, :func:`gap_closed` build the notebooks' conclusions as sentences computed from the frame.
:data:`PAPER` holds what each paper reported (quoted from docs/papers.md) for the notebooks to
print beside the measured numbers.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .budgets import get_budget
from .jsonio import params_hash, write_json_atomic
from .results import ROWS, tidy
from .sweep import DEFAULT_OUT, REPO, RunOutcome, SweepResult, SweepSpec, read_record, run_sweep
from .world import CATEGORIES
from .widgets import interactive_view

RUN_NOTEBOOK = REPO / "notebooks" / "run.ipynb"
EXECUTORS = ("papermill", "inprocess")
SOURCES = ("model", "floor", "ceiling", "chance")
FLOOR_STYLE = {"color": "#7f7f7f", "ls": "--", "lw": 1.6}
CEILING_STYLE = {"color": "#2ca02c", "ls": "--", "lw": 1.6}
CHANCE_STYLE = {"color": "black", "ls": ":", "lw": 1.2}


# --------------------------------------------------------------------------------------------------------------
# Configurations and studies

def canonical_knobs(arch: str, knobs: dict | None) -> dict:
    """The knobs that differ from ``arch``'s defaults, after validation (an unknown knob or value raises, naming
    it). Resolved defaults and explicitly given default values give the same dict, hence the same run."""
    from .archs import get_arch

    cls = get_arch(arch).KnobsClass
    resolved = dataclasses.asdict(cls.build(arch, knobs))
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    return {k: v for k, v in resolved.items() if v != defaults[k]}


@dataclass(frozen=True)
class Case:
    """One configuration of a study: ``arch`` with ``knobs`` (canonicalised), and ``labels`` (column -> value)
    under which plots and tables show it. ``name``: its legend/table label (default: the label values)."""

    arch: str
    knobs: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "knobs", canonical_knobs(self.arch, self.knobs))
        if not self.name:
            object.__setattr__(self, "name", ", ".join(str(v) for v in self.labels.values()) or self.arch)

    def params(self) -> dict:
        """The run notebook's per-case parameters (the sweep adds budget and seed)."""
        return {"arch": self.arch, "knobs": dict(self.knobs)}


def store_dir(budget: str, store: str | Path | None = None) -> Path:
    """The shared run store of a budget: ``<store>/study-<budget>`` (store default: ``papermill_runs/``)."""
    root = Path(store) if store else DEFAULT_OUT
    if not root.is_absolute():
        root = REPO / root
    return root.resolve() / f"study-{budget}"


@dataclass
class Study:
    """A named set of cases crossed with seeds at one budget, stored in the shared store of that budget."""

    name: str
    cases: list
    seeds: list
    budget: str = "default"
    store: str | Path | None = None
    notebook: Path = RUN_NOTEBOOK

    def __post_init__(self):
        get_budget(self.budget)  # raises naming the allowed budgets
        if not self.cases:
            raise ValueError(f"study {self.name!r}: no configurations (an empty grid)")
        if not isinstance(self.seeds, list) or not self.seeds:
            raise ValueError(f"study {self.name!r}: seeds must be a non-empty list of ints, got {self.seeds!r}")
        seen = {}
        for c in self.cases:
            key = json.dumps(c.params(), sort_keys=True)
            if key in seen:
                raise ValueError(f"study {self.name!r}: {c.name!r} and {seen[key]!r} are the same run "
                                 f"({c.params()}); list each configuration once")
            seen[key] = c.name
        self.spec()  # validates seeds and parameters against the run notebook

    def spec(self) -> SweepSpec:
        root = store_dir(self.budget, self.store)
        return SweepSpec(notebook=self.notebook, name=root.name, fixed={"budget": self.budget},
                         cases=[c.params() for c in self.cases], seeds=list(self.seeds), out=root.parent)

    @property
    def run_root(self) -> Path:
        return store_dir(self.budget, self.store)

    def runs(self) -> list[tuple[Case, dict, Path]]:
        """(case, run parameters, run directory) of every run, seeds outermost."""
        spec = self.spec()
        out = []
        for seed in self.seeds:
            for c in self.cases:
                p = {"budget": self.budget, **c.params(), "seed": seed}
                out.append((c, p, spec.run_dir(p)))
        return out

    def levels(self, column: str) -> list:
        """The values of a label column in the order of the cases (the x order of the plots)."""
        return list(dict.fromkeys(c.labels[column] for c in self.cases if column in c.labels))

    def name_of(self, **labels) -> str | None:
        """The name of the case with these label values (e.g. ``arch="llava", attention="causal"``), or None."""
        for c in self.cases:
            if all(c.labels.get(k) == v for k, v in labels.items()):
                return c.name
        return None

    def missing(self) -> list[Path]:
        """Run directories without a complete, current record (stale records count as missing: see
        :meth:`stale`)."""
        return [rd for _, _, rd in self.runs() if _current_record(rd, self.budget) is None]

    def stale(self) -> list[Path]:
        """Run directories whose record was made under another definition of the budget (its sizes, steps,
        evaluation size or backbone recipe changed since, e.g. with a new version of vlmlab). The store is keyed
        by the run's parameters, which name the budget but not what it holds, so such a record would otherwise
        be reused as if current. :func:`run_study` sets them aside (``record.stale.json``) and retrains them."""
        out = []
        for _, _, rd in self.runs():
            rec = read_record(rd)
            if rec is not None and not _is_current(rec, self.budget):
                out.append(rd)
        return out


def _is_current(rec: dict, budget: str) -> bool:
    """Whether a record was made under the current definition of ``budget``. A record without a budget (written
    by hand) counts as current."""
    return "budget" not in rec or rec["budget"] == get_budget(budget).as_dict()


def _current_record(run_dir: Path, budget: str) -> dict | None:
    """The run's record if complete and current (:func:`_is_current`), else None."""
    rec = read_record(run_dir)
    return rec if rec is not None and _is_current(rec, budget) else None


def grid_study(name: str, arch: str, knob: str, values: list, *, label: str | None = None, fixed_knobs=None,
               seeds, budget: str, store=None, names=None) -> Study:
    """A one-knob ablation of one architecture: a case per value of ``knob`` (plot column ``label``)."""
    label = label or knob
    names = names or {}
    cases = [Case(arch, {**(fixed_knobs or {}), knob: v}, {"arch": arch, label: names.get(v, v)})
             for v in values]
    return Study(name, cases, list(seeds), budget, store)


# --------------------------------------------------------------------------------------------------------------
# The workbook's studies (notebooks 20-23, 30 and tools/arch_table.py build them here, so they agree)

COMPARISON_ARCHS = ["llava", "ovis", "vwlmm", "hovle", "xformer", "llavit"]
ATTENTION_KNOB = {"llava": "attention", "llavit": "attention", "hovle": "embed_attention"}
# arch -> feature value -> (label, knobs): X-Former with CL only is BLIP-2 (no MAE stream, so no fusion and no
# reconstruction loss); with MIM only the MAE tokens replace C and keep the dual cross-attention
FEATURE_KNOBS = {
    "xformer": {"cl": ("CL", {"features": "cl", "fusion": "none", "rec_stage1": False}),
                "mim": ("MIM", {"features": "mim"}), "both": ("CL+MIM", {"features": "both"})},
    "llava": {"cl": ("CL", {"encoder": "cl"}), "mim": ("MIM", {"encoder": "mim"})},
}


def seeds_from(seed: int, n_seeds: int) -> list[int]:
    """The notebooks' seeds: ``seed, seed + 1, ..., seed + n_seeds - 1``."""
    if not isinstance(n_seeds, int) or n_seeds < 1:
        raise ValueError(f"n_seeds={n_seeds!r}; must be an int >= 1 (>= 3 for meaningful error bars)")
    if not isinstance(seed, int):
        raise ValueError(f"seed={seed!r}; must be an int")
    return list(range(seed, seed + n_seeds))


def _need_list(name: str, values) -> list:
    if not isinstance(values, list) or not values:
        raise ValueError(f"{name}={values!r}; must be a non-empty list")
    return values


def table_size_study(table_sizes, seeds, budget, store=None) -> Study:
    """Ovis with each table size K (column ``K``), everything else at its default."""
    ks = sorted(_need_list("table_sizes", table_sizes))
    return Study("table_size", [Case("ovis", {"table_size": k}, {"arch": "ovis", "K": k}, f"K={k}") for k in ks],
                 list(seeds), budget, store)


def indexings_study(indexings, table_size, seeds, budget, store=None) -> Study:
    """Ovis at table size ``table_size`` keeping the top-k entries per patch for each k (0 = all: dense).
    Column ``indexings`` holds "k=1", ..., "dense (k=K)"; configurations from sparse to dense."""
    ks = _need_list("indexings", indexings)
    ks = sorted(ks, key=lambda k: table_size if k in (0, table_size) else k)

    def name(k):
        return f"dense (k=K={table_size})" if k in (0, table_size) else f"k={k}"
    return Study("indexings", [Case("ovis", {"table_size": table_size, "indexings": k},
                                    {"arch": "ovis", "indexings": name(k)}, name(k)) for k in ks],
                 list(seeds), budget, store)


def attention_study(archs, attentions, seeds, budget, store=None) -> Study:
    """Each architecture in ``archs`` with each attention type among an image's tokens (HoVLE: inside its
    holistic embedding module); columns ``arch`` and ``attention``."""
    for a in _need_list("archs", archs):
        if a not in ATTENTION_KNOB:
            raise ValueError(f"archs: {a!r} has no attention-type knob; allowed values: {sorted(ATTENTION_KNOB)}")
    cases = [Case(a, {ATTENTION_KNOB[a]: t}, {"arch": a, "attention": t}, f"{a} ({t})")
             for a in archs for t in _need_list("attentions", attentions)]
    return Study("attention", cases, list(seeds), budget, store)


def features_study(xformer_features, llava_encoders, seeds, budget, store=None) -> Study:
    """X-Former with CL, MIM or both visual streams, and LLaVA on the CL or the MIM encoder; columns ``arch``
    and ``features`` (CL / MIM / CL+MIM). Either list may be empty (not both)."""
    cases = []
    for arch, values in (("xformer", xformer_features), ("llava", llava_encoders)):
        if not isinstance(values, list):
            raise ValueError(f"{arch} features={values!r}; must be a list")
        choices = FEATURE_KNOBS[arch]
        for v in values:
            if v not in choices:
                raise ValueError(f"{arch} features: {v!r}; allowed values: {list(choices)}")
            label, knobs = choices[v]
            cases.append(Case(arch, knobs, {"arch": arch, "features": label}, f"{arch} ({label})"))
    if not cases:
        raise ValueError("xformer_features and llava_encoders are both empty: nothing to compare")
    return Study("features", cases, list(seeds), budget, store)


def comparison_study(archs, seeds, budget, store=None) -> Study:
    """Every architecture in ``archs`` with its default knobs (column ``arch``)."""
    return Study("comparison", [Case(a, {}, {"arch": a}, a) for a in _need_list("archs", archs)], list(seeds),
                 budget, store)


def cost_table(study: Study) -> pd.DataFrame:
    """Per configuration: parameter counts (total / trainable), train seconds and samples/s (mean ± sd over
    seeds), seeds."""
    c = cost_frame(study)
    rows = {}
    for case in study.cases:
        d = c[c["config"] == case.name]
        if d.empty:
            continue
        sd = (lambda s: s.std(ddof=1) if len(s) > 1 else float("nan"))
        rows[case.name] = {"params total": f"{int(d['params_total'].iloc[0]):,}",
                           "params trainable": f"{int(d['params_trainable'].iloc[0]):,}",
                           "train s": _pm(d["train_seconds"].mean(), sd(d["train_seconds"])),
                           "samples/s": _pm(d["samples_per_s"].mean(), sd(d["samples_per_s"])),
                           "seeds": len(d)}
    return pd.DataFrame(rows).T.rename_axis("config")


def markdown_table(df: pd.DataFrame) -> str:
    """A DataFrame (index = first column) as a GitHub Markdown table."""
    head = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in df.iterrows():
        lines.append("| " + " | ".join([str(i)] + ["" if (isinstance(v, float) and v != v) else str(v)
                                                    for v in r]) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Launching or reusing the runs

def _run_inprocess(study: Study, progress: bool) -> SweepResult:
    """Train the study's missing runs one after another in this process, into the same run directories (and
    with the same lock, params.json and atomic record.json) as the papermill executor."""
    import time
    import traceback

    from .backbones import load_backbones
    from .device import pick_device
    from .runs import RunConfig, run
    from .sweep import claim_run
    from .world import WorldConfig

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


def run_study(study: Study, *, executor: str = "papermill", workers: int = 2, threads: int = 1,
              progress: bool = True) -> SweepResult:
    """Execute the study's missing runs (complete ones are reused, whichever study or executor made them) and
    return the sweep result (done / skipped / failed lists). Failed runs do not stop the study.

    executor: ``papermill`` (one process per run of ``notebooks/run.ipynb``, ``workers`` at a time, ``threads``
    CPU threads each: what ``vlmlab sweep`` does) or ``inprocess`` (sequential, in this process)."""
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


# --------------------------------------------------------------------------------------------------------------
# Records -> tidy frames

def records(study: Study) -> list[tuple[Case, dict, Path, dict]]:
    """(case, params, run directory, record) of every complete, current run (see :meth:`Study.stale`), in the
    study's order."""
    out = []
    for case, p, rd in study.runs():
        rec = _current_record(rd, study.budget)
        if rec is not None:
            out.append((case, p, rd, rec))
    return out


def label_columns(study: Study) -> list[str]:
    cols = []
    for c in study.cases:
        cols += [k for k in c.labels if k not in cols]
    return cols


GROUPINGS = ("category", "wording")


def accuracy_rows(t: pd.DataFrame, per: str = "category") -> pd.DataFrame:
    """The accuracy rows of a tidy frame (:func:`vlmlab.results.tidy`, or its CSV), with ``category`` (or
    "<category>: <wording>" when ``per="wording"``) and ``accuracy`` in %."""
    if per not in GROUPINGS:
        raise ValueError(f"per={per!r}; allowed values: {GROUPINGS}")
    prefix = "accuracy." if per == "category" else "wording."
    t = t[t["metric"].str.startswith(prefix)].copy()
    t["category"] = t["metric"].str.removeprefix(prefix)
    if per == "wording":  # "comparison.is the <shape> ..." -> "comparison: is the <shape> ..."
        t["category"] = t["category"].str.replace(".", ": ", n=1, regex=False)
    t["accuracy"] = 100 * t["value"].astype(float)
    return t


def accuracy_frame(study: Study, per: str = "category") -> pd.DataFrame:
    """One row per (run, split, category, source) with ``accuracy`` in %: columns run, arch, seed, budget,
    config (the case's name), the cases' label columns, split, category, source (model / floor / ceiling /
    chance). Built with :func:`vlmlab.results.tidy` from every complete record of the study.

    ``per="wording"``: one row per wording of the categories asked two ways instead, its ``category`` column
    reading "<category>: <wording>" (records written before vlmlab recorded wordings contribute no rows)."""
    frames = []
    for case, _, rd, rec in records(study):
        t = accuracy_rows(tidy(rec, rd.name), per)
        t["config"] = case.name
        for k, v in case.labels.items():
            t[k] = v
        frames.append(t)
    if not frames:
        return pd.DataFrame(columns=["run", "arch", "seed", "budget", "config", "split", "category", "source",
                                     "accuracy", *label_columns(study)])
    df = pd.concat(frames, ignore_index=True)
    keep = ["run", "arch", "seed", "budget", "config", *[c for c in label_columns(study) if c != "arch"],
            "split", "category", "source", "accuracy"]
    df = df[keep]
    df["config"] = pd.Categorical(df["config"], [c.name for c in study.cases], ordered=True)
    return df


def cost_frame(study: Study) -> pd.DataFrame:
    """One row per run: parameter counts (total / trainable), train seconds, samples/s, backbones used."""
    rows = []
    for case, p, rd, rec in records(study):
        rows.append({"run": rd.name, "config": case.name, "arch": case.arch, "seed": p["seed"],
                     "params_total": rec["params"].get("total"), "params_trainable": rec["params"].get("trainable"),
                     "train_seconds": rec.get("train_seconds"), "samples_per_s": rec.get("samples_per_s"),
                     "backbones": json.dumps(rec.get("backbones"), sort_keys=True)})
    return pd.DataFrame(rows)


def diagnostics_frame(study: Study, keys=None) -> pd.DataFrame:
    """One row per run and scalar diagnostic (``record["diagnostics"]``, e.g. ``ovis_effective_entries``,
    ``answer_to_image_attention_mass``): run, config, arch, seed, the label columns, diagnostic, value."""
    rows = []
    for case, p, rd, rec in records(study):
        for k, v in (rec.get("diagnostics") or {}).items():
            if (keys is None or k in keys) and isinstance(v, (int, float)) and not isinstance(v, bool):
                rows.append({"run": rd.name, "config": case.name, "arch": case.arch, "seed": p["seed"],
                             **case.labels, "diagnostic": k, "value": float(v)})
    cols = ["run", "config", "arch", "seed", *[c for c in label_columns(study) if c != "arch"], "diagnostic",
            "value"]
    return pd.DataFrame(rows, columns=cols)


def mixed_backbones(study: Study) -> str | None:
    """A warning when the study's records were trained on different backbones of one kind (e.g. the cache was
    rebuilt between runs): their numbers are then not comparable. None when all agree. A record lists only the
    backbones its model reads (LLaVA: LM + CL; X-Former also the MIM encoder), so kinds are compared one by one.
    Builds are told apart by their content (``backbone_ids``), so a rebuild under the same cache path counts and a
    moved cache does not; if any record predates ids, all are compared by path."""
    recs = [rec for *_, rec in records(study)]
    field = "backbone_ids" if all("backbone_ids" in rec for rec in recs) else "backbones"
    seen: dict[str, set] = {}
    for rec in recs:
        for kind, path in (rec.get(field) or {}).items():
            seen.setdefault(kind, set()).add(str(path))
    mixed = sorted(k for k, v in seen.items() if len(v) > 1)
    if not mixed:
        return None
    counts = ", ".join(f"{len(seen[k])} {k.upper()} backbones" for k in mixed)
    return (f"warning: the records of study {study.name!r} were trained on {counts} (the backbone cache changed "
            "between runs); delete the stale run directories to retrain them")


# --------------------------------------------------------------------------------------------------------------
# Statistics and tables

def stats(frame: pd.DataFrame, by: str = "config", split: str = "test", source: str = "model") -> pd.DataFrame:
    """Mean, sd (over seeds; ddof=1) and number of seeds of the accuracy, per value of ``by`` and category."""
    d = frame[(frame["split"] == split) & (frame["source"] == source)]
    g = d.groupby([by, "category"], observed=True)["accuracy"]
    out = g.agg(mean="mean", sd=lambda s: s.std(ddof=1) if len(s) > 1 else float("nan"), n="count")
    return out.reset_index()


def reference(frame: pd.DataFrame, source: str, split: str = "test") -> pd.Series:
    """Mean over seeds of the blind floor / text-oracle ceiling / chance per category (one value per seed: the
    references depend on the world seed and the budget, never on the architecture)."""
    d = frame[(frame["split"] == (split if source != "chance" else "test")) & (frame["source"] == source)]
    per_seed = d.groupby(["seed", "category"])["accuracy"].first()
    return per_seed.groupby("category").mean()


def _pm(mean: float, sd: float) -> str:
    return f"{mean:.1f} ± {sd:.1f}" if sd == sd else f"{mean:.1f}"


def summary_table(frame: pd.DataFrame, by: str = "config", split: str = "test",
                  categories=ROWS) -> pd.DataFrame:
    """Mean ± sd over seeds (accuracy %) per configuration (rows) and category (columns), with the floor and the
    ceiling (mean ± sd over seeds) and chance as extra rows, and the number of seeds per configuration."""
    st = stats(frame, by, split)
    cats = [c for c in categories if c in set(st["category"])]
    rows = {}
    order = list(frame[by].cat.categories) if hasattr(frame[by], "cat") else list(dict.fromkeys(frame[by]))
    for v in order:
        s = st[st[by] == v].set_index("category")
        if s.empty:
            continue
        rows[str(v)] = {**{c: _pm(s.loc[c, "mean"], s.loc[c, "sd"]) for c in cats}, "seeds": int(s["n"].max())}
    for source, name in (("floor", "floor (blind)"), ("ceiling", "ceiling (text oracle)"), ("chance", "chance")):
        r = stats(frame.drop_duplicates(["seed", "split", "category", "source"]), "source",
                  split if source != "chance" else "test", source)  # chance depends on the answer sets only
        if r.empty:
            continue
        r = r.set_index("category")
        rows[name] = {**{c: _pm(r.loc[c, "mean"], r.loc[c, "sd"] if source != "chance" else float("nan"))
                         for c in cats if c in r.index}, "seeds": int(r["n"].max())}
    return pd.DataFrame(rows).T.rename_axis(by)


def wording_summary(study: Study, by: str = "config", split: str = "test") -> pd.DataFrame:
    """:func:`summary_table` per wording of the categories asked two ways (rows "<category>: <wording>" in the
    order of the categories; columns the configurations, floor, ceiling and chance): a category's mean can hide
    opposite gaps between its wordings (docs/lab-notes/oracle-wordings.md). The last row counts the seeds per column: a
    record written before vlmlab kept wordings contributes none. Empty when no record holds wordings."""
    words = accuracy_frame(study, per="wording")
    if words.empty:
        return pd.DataFrame()
    order = sorted(set(words["category"]), key=lambda c: (CATEGORIES.index(c.split(":")[0]), c))
    return summary_table(words, by, split, categories=order).T.rename_axis("wording")


# --------------------------------------------------------------------------------------------------------------
# Conclusions computed from the frame

def _get(frame: pd.DataFrame, by: str, value, category: str, split: str) -> tuple[float, float, int]:
    d = frame[(frame[by] == value) & (frame["category"] == category) & (frame["split"] == split)
              & (frame["source"] == "model")]["accuracy"]
    if d.empty:
        raise ValueError(f"no {split} records for {by}={value!r}, category {category!r}")
    return float(d.mean()), (float(d.std(ddof=1)) if len(d) > 1 else float("nan")), int(len(d))


def _where(category: str, split: str) -> str:
    return (f"{category}" if category in ("overall", "semantic", "structural") else f"on {category}") + \
        ("" if split == "test" else f" ({split} split)")


def compare(frame: pd.DataFrame, by: str, a, b, *, category: str = "overall", split: str = "test",
            name=str) -> str:
    """"A scores 62.1 ± 1.3 % overall vs 58.0 ± 2.0 % for B (+4.1 points; the difference is larger than the seed
    spread)": mean ± sd over seeds; the difference counts as larger than the seed spread when it exceeds the
    combined sd, sqrt(sd_a² + sd_b²)."""
    ma, sa, na = _get(frame, by, a, category, split)
    mb, sb, nb = _get(frame, by, b, category, split)
    diff = ma - mb
    spread = math.hypot(sa, sb)
    if spread != spread:
        verdict = "one seed only, so no seed spread to compare it with"
    elif round(abs(diff), 1) == round(spread, 1):  # as printed, equal: say so rather than pick a side
        verdict = f"about the size of the seed spread of {spread:.1f}"
    elif abs(diff) > spread:
        verdict = f"larger than the seed spread of {spread:.1f}"
    else:
        verdict = f"within the seed spread of {spread:.1f}"
    return (f"{name(a)} scores {_pm(ma, sa)} % {_where(category, split)} vs {_pm(mb, sb)} % for {name(b)} "
            f"({diff:+.1f} points over {min(na, nb)} seeds; the difference is {verdict})")


def ranking(frame: pd.DataFrame, by: str = "config", *, category: str = "overall", split: str = "test",
            name=str) -> str:
    """The configurations from best to worst (mean ± sd), beside the floor and the ceiling."""
    st = stats(frame, by, split)
    st = st[st["category"] == category].sort_values("mean", ascending=False)
    if st.empty:
        raise ValueError(f"no {split} records for category {category!r}")
    parts = [f"{name(r[by])} {_pm(r['mean'], r['sd'])} %" for _, r in st.iterrows()]
    lo, hi = reference(frame, "floor", split), reference(frame, "ceiling", split)
    refs = ""
    if category in lo.index and category in hi.index:
        refs = f" (blind floor {lo[category]:.1f} %, text-oracle ceiling {hi[category]:.1f} %)"
    return f"Ranking {_where(category, split)}, best first: " + "; ".join(parts) + refs


def gap_closed(frame: pd.DataFrame, by: str = "config", *, category: str = "overall", split: str = "test",
               name=str) -> str:
    """Which share of the floor-to-ceiling gap each configuration closes (mean over seeds)."""
    st = stats(frame, by, split)
    st = st[st["category"] == category]
    lo, hi = reference(frame, "floor", split), reference(frame, "ceiling", split)
    if category not in lo.index or category not in hi.index:
        return "The records hold no floor or ceiling, so the share of the gap closed is unknown."
    gap = hi[category] - lo[category]
    if gap <= 0:
        return (f"The ceiling ({hi[category]:.1f} %) is not above the floor ({lo[category]:.1f} %) at this budget, "
                "so the share of the gap closed is undefined.")
    parts = [f"{name(r[by])} {100 * (r['mean'] - lo[category]) / gap:.0f} %" for _, r in st.iterrows()]
    return f"Share of the floor-to-ceiling gap closed {_where(category, split)}: " + "; ".join(parts)


def category_wins(frame: pd.DataFrame, by: str, a, b, *, split: str = "test", categories=CATEGORIES,
                  name=str) -> str:
    """The categories where A beats B, and where B beats A, by more than the seed spread (combined sd)."""
    if _get(frame, by, a, categories[0], split)[2] < 2 or _get(frame, by, b, categories[0], split)[2] < 2:
        return f"{name(a)} vs {name(b)} per category: one seed only, so no difference can be told from the noise."
    wins, losses, ties = [], [], []
    for c in categories:
        ma, sa, _ = _get(frame, by, a, c, split)
        mb, sb, _ = _get(frame, by, b, c, split)
        spread = math.hypot(sa, sb)
        d = ma - mb
        if spread == spread and abs(d) > spread:
            (wins if d > 0 else losses).append(f"{c} ({abs(d):+.1f})")  # the winner's margin
        else:
            ties.append(c)
    s = f"Per category, {name(a)} beats {name(b)} by more than the seed spread in "
    s += (", ".join(wins) if wins else "no category")
    s += f"; {name(b)} beats {name(a)} in " + (", ".join(losses) if losses else "no category")
    s += f"; {len(ties)} of {len(categories)} categories are within the spread."
    return s


def diagnostic_summary(dframe: pd.DataFrame, key: str, by: str = "config", *, what: str | None = None,
                       digits: int = 2) -> str:
    """"<what>: A 3.21 ± 0.10, B ...": a diagnostic's mean ± sd over seeds per configuration, in the frame's
    order (a :func:`diagnostics_frame`). Empty string when no run recorded it."""
    d = dframe[dframe["diagnostic"] == key]
    if d.empty:
        return ""
    parts = []
    for v, g in d.groupby(by, sort=False):
        sd = g["value"].std(ddof=1) if len(g) > 1 else float("nan")
        parts.append(f"{v} {g['value'].mean():.{digits}f}" + (f" ± {sd:.{digits}f}" if sd == sd else ""))
    return f"{what or key}: " + "; ".join(parts)


def conclusions(frame: pd.DataFrame, by: str, pairs, *, name=str, categories=CATEGORIES) -> list[str]:
    """The notebooks' standard conclusions, as Markdown bullet lines: the overall ranking and the share of the
    gap closed, then for each (a, b) pair the overall comparison on the test and compositional splits and the
    per-category wins."""
    def item(s: str) -> str:
        return f"- {s}" if s.endswith(".") else f"- {s}."

    lines = [item(ranking(frame, by, name=name)), item(gap_closed(frame, by, name=name))]
    splits = set(frame["split"].dropna())
    for a, b in pairs:
        lines.append(item(compare(frame, by, a, b, name=name)))
        if "compositional" in splits:
            lines.append(item(compare(frame, by, a, b, split="compositional", name=name)))
        lines.append(item(category_wins(frame, by, a, b, name=name, categories=categories)))
    return lines


# --------------------------------------------------------------------------------------------------------------
# Plots

def ablation_plot(frame: pd.DataFrame, x: str, hue: str | None = None, *, split: str = "test", categories=ROWS,
                  order=None, hue_order=None, ncols: int = 4, title: str | None = None, xlabel: str | None = None):
    """Accuracy (%) against the ablated value ``x``, one panel per category: bars = mean over seeds, error bars =
    sd over seeds, black points = the individual seeds, dashed lines = blind floor (grey) and text-oracle
    ceiling (green), dotted = chance. ``hue`` splits the bars (e.g. by architecture). Returns the figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.lines import Line2D

    model = frame[(frame["split"] == split) & (frame["source"] == "model")].copy()
    cats = [c for c in categories if c in set(model["category"])]
    if model.empty or not cats:
        raise ValueError(f"no model accuracy on the {split} split to plot")
    model[x] = model[x].astype(str)
    present = set(model[x])
    order = [str(v) for v in order if str(v) in present] if order is not None else list(dict.fromkeys(model[x]))
    if hue is not None:
        model[hue] = model[hue].astype(str)
        hue_order = [str(v) for v in hue_order] if hue_order is not None else list(dict.fromkeys(model[hue]))
    lo, hi, ch = (reference(frame, s, split) for s in ("floor", "ceiling", "chance"))
    n_seeds = model.groupby([x] + ([hue] if hue else []))["seed"].nunique()
    nrows = math.ceil(len(cats) / ncols)
    w = max(3.2, 0.55 * len(order) * (len(hue_order) if hue else 1) + 1.2)
    fig, axes = plt.subplots(nrows, min(ncols, len(cats)), figsize=(w * min(ncols, len(cats)), 3.3 * nrows),
                             sharey=True, squeeze=False, constrained_layout=True)
    palette = sns.color_palette("deep", len(hue_order) if hue else len(order))
    for ax, c in zip(axes.flat, cats):
        d = model[model["category"] == c]
        kw = dict(hue=hue, hue_order=hue_order, palette=palette) if hue else \
            dict(hue=x, hue_order=order, palette=palette, legend=False)
        sns.barplot(data=d, x=x, y="accuracy", order=order, errorbar="sd", capsize=0.15, err_kws={"linewidth": 1.4},
                    ax=ax, alpha=0.85, **kw)
        sns.stripplot(data=d, x=x, y="accuracy", order=order, hue=hue, hue_order=hue_order,
                      dodge=hue is not None, palette=["black"] * (len(hue_order) if hue else 1) if hue else None,
                      color=None if hue else "black", size=3.5, jitter=0.12, ax=ax, legend=False)
        for ref, style in ((lo, FLOOR_STYLE), (hi, CEILING_STYLE), (ch, CHANCE_STYLE)):
            if c in ref.index:
                ax.axhline(ref[c], **style, zorder=0)
        ax.set_title(c, fontsize=12)
        ax.set_xlabel(xlabel or x, fontsize=10)
        ax.set_ylabel("accuracy (%)", fontsize=10)
        ax.set_ylim(0, 105)
        ax.tick_params(axis="x", labelsize=9, rotation=20 if max(len(o) for o in order) > 6 else 0)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    for ax in list(axes.flat)[len(cats):]:
        ax.set_visible(False)
    handles = [Line2D([], [], **FLOOR_STYLE, label="blind floor"), Line2D([], [], **CEILING_STYLE,
               label="text-oracle ceiling"), Line2D([], [], **CHANCE_STYLE, label="chance"),
               Line2D([], [], color="black", marker="o", ls="", ms=4, label="one seed")]
    if hue:
        handles = [plt.Rectangle((0, 0), 1, 1, color=palette[i], label=h) for i, h in enumerate(hue_order)] + handles
    seeds = f"{n_seeds.min()}" if n_seeds.min() == n_seeds.max() else f"{n_seeds.min()}-{n_seeds.max()}"
    fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize=10, title=hue)
    fig.suptitle(title or f"accuracy per category vs {x} ({split} split; bars: mean, error bars: sd over "
                          f"{seeds} seeds)", fontsize=13)
    return fig


def diagnostic_plot(frame: pd.DataFrame, x: str, keys, hue: str | None = None, *, order=None, title=None,
                    xlabel=None, labels: dict | None = None):
    """One panel per diagnostic (a :func:`diagnostics_frame`): mean over seeds as bars, sd as error bars, the
    seeds as points. ``labels``: diagnostic -> y-axis label (default: the key without its arch prefix, in words).
    Diagnostics absent from the frame are skipped."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    keys = [k for k in keys if k in set(frame["diagnostic"])]
    if not keys:
        raise ValueError("none of the requested diagnostics is in the records")
    d = frame.copy()
    d[x] = d[x].astype(str)
    order = [str(v) for v in order] if order is not None else list(dict.fromkeys(d[x]))
    hue_order = None
    if hue is not None:
        d[hue] = d[hue].astype(str)
        hue_order = list(dict.fromkeys(d[hue]))
    fig, axes = plt.subplots(1, len(keys), figsize=(max(3.6, 0.9 * len(order) + 1.5) * len(keys), 3.6),
                             squeeze=False, constrained_layout=True)
    for ax, k in zip(axes[0], keys):
        dk = d[d["diagnostic"] == k]
        present = [o for o in order if o in set(dk[x])]
        kw = dict(hue=hue, hue_order=hue_order) if hue else dict(hue=x, hue_order=present, legend=False)
        sns.barplot(data=dk, x=x, y="value", order=present, errorbar="sd", capsize=0.15, palette="deep", ax=ax,
                    alpha=0.85, **kw)
        sns.stripplot(data=dk, x=x, y="value", order=present, hue=hue, hue_order=hue_order,
                      dodge=hue is not None, palette=["black"] * len(hue_order) if hue else None,
                      color=None if hue else "black", size=3.5, jitter=0.12, ax=ax, legend=False)
        ax.set_title(k.replace("_", " "), fontsize=11)  # "ovis effective entries", not the record's key
        ax.set_ylabel((labels or {}).get(k, k.split("_", 1)[-1].replace("_", " ")), fontsize=10)
        ax.set_xlabel(xlabel or x, fontsize=10)
    fig.suptitle(title or f"diagnostics vs {x}\n(bars: mean, error bars: sd over seeds, points: seeds)", fontsize=11)
    return fig


@interactive_view(figure="above")
def explorer(frame: pd.DataFrame, x: str, hue: str | None = None, **kw):
    """An ipywidgets view: pick the split and the category, see that panel of :func:`ablation_plot` (the
    static fallback is the full :func:`ablation_plot` figure the notebooks draw for each split)."""
    import ipywidgets as W
    import matplotlib.pyplot as plt

    splits = [s for s in ("test", "compositional") if s in set(frame["split"].dropna())]
    cats = [c for c in ROWS if c in set(frame["category"])]

    def show(split, category):
        fig = ablation_plot(frame, x, hue, split=split, categories=[category], ncols=1, **kw)
        plt.show()
        plt.close(fig)

    return W.interactive(show, split=W.Dropdown(options=splits, description="split"),
                         category=W.Dropdown(options=cats, value="overall", description="category"))


# --------------------------------------------------------------------------------------------------------------
# What the papers reported (quoted word for word from docs/papers.md, which cites each paper's section or table;
# the measured conclusions are computed)

OVIS_TABLE3 = ("Ovis, arXiv 2405.20797, Table 3", "Against a connector of equal size (Qwen1.5-7B-Chat, CLIP-L/336, "
               "the same data), Ovis wins on every benchmark, +8.8 % on average.")
XFORMER_ROW = ("X-Former, arXiv 2407.13851, ablation table (secondary)", "X-Former (dual cross-attention, "
               "reconstruction loss): VQAv2 55.0, GQA 34.9, OK-VQA 34.2.")
PAPER = {
    "table_size": [
        ("Ovis, arXiv 2405.20797, §4.1", "K = 2^17 = 131,072 entries (the training scripts pass "
                                         "`--visual_vocab_size 131072`)."),
        ("Ovis, arXiv 2405.20797", "The paper does not ablate K, the temperature, or soft against hard tokens."),
        OVIS_TABLE3,
    ],
    "indexings": [
        ("Ovis, arXiv 2405.20797, Appendix E", "Over 10k ImageNet images with Ovis-Llama3-8B, only 0.22 % of "
                                               "probability entries exceed 1e-4: about 288 of the 131,072 per "
                                               "patch, so the many indexings are effectively a few hundred."),
        ("Ovis, official code", "No top-k or sparsity: every patch's distribution is dense (the workbook's "
                                "indexings knob is an extension)."),
    ],
    "attention": [
        ("LLaViT, arXiv 2511.10301, §2.2 (secondary)", "LLaVA's LLM translates misaligned visual tokens in its early "
                                                       "layers, and visual-to-visual attention is critical."),
        ("LLaViT, arXiv 2511.10301, Abstract (components ablated in Table 3)",
         "LLaViT significantly outperforms the baseline LLaVA method on a multitude of benchmarks"),
        ("HoVLE, official model code", "HoVLE is causal everywhere: image tokens are not bidirectional."),
    ],
    "features": [
        ("X-Former, arXiv 2407.13851, ablation table (secondary)", "BLIP-2 retrained on the same 14M pairs (CL "
                                                                   "features only): VQAv2 52.4, GQA 33.1, OK-VQA "
                                                                   "31.5."),
        XFORMER_ROW,
        ("X-Former, arXiv 2407.13851, ablation table (secondary)", "MAE beats an intermediate CLIP layer (layer 26) "
                                                                   "as the local stream: 53.7 / 32.6 / 31.2 with "
                                                                   "the CLIP layer."),
    ],
    "comparison": [
        OVIS_TABLE3,
        ("VW-LMM, official repository's main results", "GQA 62.7 against 62.0; not a controlled ablation."),
        ("HoVLE, arXiv 2412.16158, Abstract", "HoVLE achieves performance close to leading compositional models on "
                                              "various benchmarks, outperforming previous monolithic models by a "
                                              "large margin."),
        XFORMER_ROW,
        ("LLaViT, arXiv 2511.10301, Abstract", "even surpassing models with double its parameter count"),
    ],
}

PAPER_NOTES = {
    "features": "Zero-shot, OPT-6.7B. Secondary: read from a public note on the paper, not checked against its PDF.",
    "comparison": "Ovis: against a connector of equal size; VW-LMM: VW-LMM-Vicuna-7B against LLaVA-1.5-7B; "
                  "X-Former: VQAv2 | GQA | OK-VQA; none is a like-for-like comparison of all six, which only this "
                  "workbook's tiny world gives.",
}


def paper_markdown(key: str) -> str:
    """What the paper(s) reported for a study, as Markdown quotes with their place in the paper (docs/papers.md)."""
    if key not in PAPER:
        raise ValueError(f"paper key {key!r}; allowed values: {sorted(PAPER)}")
    lines = ["**What the papers reported** (sources: docs/papers.md in the repository):", ""]
    for where, quote in PAPER[key]:
        lines.append(f"> {quote}  \n> — *{where}*")
        lines.append("")
    if key in PAPER_NOTES:
        lines.append(PAPER_NOTES[key])
    return "\n".join(lines)


__all__ = ["Case", "Study", "canonical_knobs", "grid_study", "store_dir", "seeds_from", "table_size_study",
           "indexings_study", "attention_study", "features_study", "comparison_study", "COMPARISON_ARCHS",
           "run_study", "describe_result", "records", "accuracy_rows", "accuracy_frame", "cost_frame", "cost_table",
           "diagnostics_frame", "mixed_backbones", "stats", "reference", "summary_table", "markdown_table",
           "compare", "ranking", "gap_closed", "category_wins", "diagnostic_summary", "conclusions",
           "ablation_plot", "diagnostic_plot", "explorer", "PAPER", "paper_markdown", "EXECUTORS", "params_hash"]
