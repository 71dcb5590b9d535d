"""Run records -> tidy pandas tables."""
from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from .jsonio import RecordError, load_record
from .world import CATEGORIES

ROWS = list(CATEGORIES) + ["semantic", "structural", "overall"]


REFERENCES = (("floor", "floor (blind)"), ("ceiling", "ceiling (text oracle)"))


def _columns(model: dict, chance: dict, refs: dict, split: str) -> dict:
    """The table's columns: the model's accuracies on ``split``, chance, and the floor and ceiling where run."""
    cols = {"model": model[split], "chance": chance}
    for key, name in REFERENCES:
        if refs.get(key):
            cols[name] = refs[key][split]
    return cols


def accuracy_table(record: dict, split: str = "test") -> pd.DataFrame:
    """Per-category accuracy (in %) of the model beside chance, the blind floor and the text-oracle ceiling."""
    cols = _columns(record["metrics"], record["chance"], record, split)
    df = pd.DataFrame({k: {r: v.get(r) for r in ROWS} for k, v in cols.items()})
    return (df * 100).round(1)


def wording_table(record: dict, split: str = "test") -> pd.DataFrame:
    """Accuracy (in %) per wording of the categories asked in more than one wording (``vlmlab.world.wording``),
    beside chance, the blind floor and the text-oracle ceiling. A category's mean can hide opposite gaps: the
    text oracle reads "same color as" well and "bigger than" at chance (docs/lab-notes/oracle-wordings.md)."""
    w = record.get("wordings")
    if not w:
        raise ValueError("this record has no per-wording accuracies (it was written before vlmlab recorded them); "
                         "run the experiment again")
    cols = _columns(w["model"], w["model"]["chance"], w, split)
    rows = [(c, wd) for c in CATEGORIES for wd in w["model"][split].get(c, {})]
    df = pd.DataFrame({k: [v.get(c, {}).get(wd) for c, wd in rows] for k, v in cols.items()},
                      index=pd.MultiIndex.from_tuples(rows, names=["category", "wording"]))
    return (df * 100).round(1)


def tidy(record: dict, run: str | None = None) -> pd.DataFrame:
    """One row per (split, category, source) accuracy, with the run's config flattened beside it."""
    cfg = record["config"]
    base = {"run": run, "arch": cfg["arch"], "seed": cfg["seed"], "budget": cfg["budget"],
            **{f"knob.{k}": v for k, v in cfg["knobs"].items()}}
    rows = []
    sources = {"model": record["metrics"]}
    for ref in ("floor", "ceiling"):
        if record.get(ref):
            sources[ref] = record[ref]
    for source, by_split in sources.items():
        for split, cats in by_split.items():
            if split == "chance":
                continue
            for cat, acc in cats.items():
                rows.append({**base, "source": source, "split": split, "metric": f"accuracy.{cat}", "value": acc})
    for cat, acc in record["chance"].items():
        rows.append({**base, "source": "chance", "split": "test", "metric": f"accuracy.{cat}", "value": acc})
    for source, by_split in (record.get("wordings") or {}).items():  # per wording: metric "wording.<cat>.<wording>"
        for split, cats in by_split.items():
            src, split = ("chance", "test") if split == "chance" else (source, split)
            if src == "chance" and source != "model":
                continue  # chance is the same for every source
            rows += [{**base, "source": src, "split": split, "metric": f"wording.{cat}.{wd}", "value": acc}
                     for cat, ws in cats.items() for wd, acc in ws.items()]
    for source, by_split in (record.get("valid_answer_rate") or {}).items():  # metric "valid.<category>"
        rows += [{**base, "source": source, "split": split, "metric": f"valid.{cat}", "value": v}
                 for split, cats in by_split.items() for cat, v in cats.items()]
    for key in ("train_seconds", "wall_seconds", "samples_per_s"):
        rows.append({**base, "source": "model", "split": None, "metric": key, "value": record.get(key)})
    for key, v in record["params"].items():
        rows.append({**base, "source": "model", "split": None, "metric": f"params.{key}", "value": v})
    for st in record.get("stages") or []:  # each stage's loss where it ended (e.g. HoVLE's distillation)
        if isinstance(st, dict) and isinstance(st.get("final_loss"), (int, float)):
            rows.append({**base, "source": "model", "split": None, "metric": f"stage.{st['name']}.final_loss",
                         "value": st["final_loss"]})
    for key, v in (record.get("diagnostics") or {}).items():  # the scalar diagnostics (maps and lists left out)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            rows.append({**base, "source": "model", "split": None, "metric": f"diagnostic.{key}", "value": v})
    return pd.DataFrame(rows)


def load_records(root: str | Path, *, bad: list | None = None) -> list[tuple[str, dict]]:
    """Every valid ``record.json`` under root (recursively; hidden directories such as a run's ``.pending``
    skipped), as (run directory, record). An invalid one (:func:`vlmlab.jsonio.load_record`) is skipped: appended
    to ``bad`` as (path, reason) when given, else a warning naming its path."""
    out = []
    root = Path(root)
    for p in sorted(root.rglob("record.json")):
        if any(part.startswith(".") for part in p.relative_to(root).parts[:-1]):
            continue
        try:
            out.append((str(p.parent), load_record(p)))
        except RecordError as e:
            _skip(bad, p, str(e).removeprefix(f"{p}: "))
    return out


def _skip(bad: list | None, path: Path, reason: str) -> None:
    if bad is None:
        warnings.warn(f"skipped {path}: {reason}", stacklevel=3)
    else:
        bad.append((str(path), reason))


def collect(root: str | Path, *, bad: list | None = None) -> pd.DataFrame:
    """One tidy frame (:func:`tidy`) of every valid record under ``root``; invalid ones are skipped as in
    :func:`load_records`, as are records whose contents :func:`tidy` cannot read."""
    frames = []
    for run, rec in load_records(root, bad=bad):
        try:
            frames.append(tidy(rec, run))
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            _skip(bad, Path(run) / "record.json", f"not a run record ({type(e).__name__}: {e})")
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
