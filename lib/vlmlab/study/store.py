"""The run store: a study's configurations (:class:`Case`) crossed with seeds, one directory per run under
``<store>/study-<budget>/<params hash>/``, and which of its records are current."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..budgets import get_budget
from ..sweep import DEFAULT_OUT, REPO, SweepSpec, read_record


RUN_NOTEBOOK = REPO / "notebooks" / "run.ipynb"

def canonical_knobs(arch: str, knobs: dict | None) -> dict:
    """The knobs that differ from ``arch``'s defaults, after validation (an unknown knob or value raises, naming
    it). Resolved defaults and explicitly given default values give the same dict, hence the same run."""
    from ..archs import get_arch

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
