"""The docs' tables, generated from the committed tidy CSVs under ``docs/results/`` (never typed by hand).

A Markdown file marks each generated table by a pair of comments naming its generator::

    <!-- floor-ceiling:begin -->
    ... (replaced by the generator's output)
    <!-- floor-ceiling:end -->

``render(path)`` rewrites every marked block of a file; ``tools/render_docs.py`` does it for README.md and every
Markdown file under ``data/`` and ``docs/``, and with ``--check`` fails on a doc that has drifted from its data
(a test runs that).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "docs" / "results"
BLOCK = re.compile(r"(<!-- (?P<name>[a-z0-9-]+):begin -->\n)(?P<body>.*?)(<!-- (?P=name):end -->)", re.S)
GENERATORS: dict[str, Callable[[Path], str]] = {}


def generator(name: str):
    def register(fn):
        GENERATORS[name] = fn
        return fn
    return register


def tidy_frame(csv: Path, per: str = "category", by: str = "arch") -> pd.DataFrame:
    """A tidy CSV of run records (``vlmlab results``' schema) as the frame :func:`vlmlab.study.summary_table`
    reads: one row per run, split, category (or "<category>: <wording>") and source, accuracy in %, ``config``
    taken from the column ``by``."""
    return tidy_frame_from(pd.read_csv(csv), per, by)


def _markdown(df: pd.DataFrame) -> str:
    from .study import markdown_table

    return markdown_table(df) + "\n"


def _categories(frame: pd.DataFrame) -> list:
    """The frame's categories (or wordings) in first-seen order, for summary_table's column list."""
    return list(dict.fromkeys(frame["category"]))


def _references(frame: pd.DataFrame, split: str = "test", per_wording: bool = False) -> pd.DataFrame:
    from .study import summary_table

    t = summary_table(frame, split=split, **({"categories": _categories(frame)} if per_wording else {}))
    return t.loc[[r for r in ("chance", "floor (blind)", "ceiling (text oracle)") if r in t.index]]


@generator("floor-ceiling")
def floor_ceiling(results: Path = RESULTS) -> str:
    """Chance, the blind floor and the text oracle per category, test split, mean ± sd over the world-v2 seeds."""
    frame = tidy_frame(results / "world-v2.csv")
    t = _references(frame).drop(columns="seeds").T.rename_axis("category")
    seeds = ", ".join(str(s) for s in sorted(frame["seed"].unique()))
    return f"Test split, accuracy %, mean ± sd over world seeds {seeds}:\n\n" + _markdown(t)


@generator("oracle-wordings")
def oracle_wordings(results: Path = RESULTS) -> str:
    """The blind floor and the text oracle per wording of the categories asked several ways."""
    frame = tidy_frame(results / "world-v2.csv", per="wording")
    t = _references(frame, per_wording=True).drop(columns="seeds").T.rename_axis("wording")
    return _markdown(t)


@generator("world-v2-designs")
def designs(results: Path = RESULTS) -> str:
    """Every design measured on world v2, per category, test split, mean ± sd over seeds."""
    from .study import summary_table

    frame = tidy_frame(results / "world-v2.csv")
    return _markdown(summary_table(frame, split="test").rename_axis("design"))


@generator("world-v2-headline")
def designs_headline(results: Path = RESULTS) -> str:
    """The world-v2 designs table with each category as its mean over seeds and only the overall with its sd."""
    return _markdown(_headline(tidy_frame(results / "world-v2.csv")))


@generator("world-v2-design-wordings")
def design_wordings(results: Path = RESULTS) -> str:
    from .study import summary_table

    frame = tidy_frame(results / "world-v2.csv", per="wording")
    return _markdown(summary_table(frame, split="test", categories=_categories(frame)).drop(columns="seeds").T
                     .rename_axis("wording"))


@generator("probes")
def probes(results: Path = RESULTS) -> str:
    """Each encoder's held-out probe accuracy per attribute at its best block (test split), and the pixels."""
    t = pd.read_csv(results / "probes-default.csv")
    t = t[t["split"] == "test"]
    feat = t[t["encoder"] != "pixels"]
    best = feat.loc[feat.groupby(["encoder", "attribute"])["accuracy"].idxmax()]
    cell = best.assign(v=best["accuracy"].map("{:.1f}".format) + " (block " + best["block"].astype(int).astype(str)
                       + ")").pivot(index="encoder", columns="attribute", values="v")
    px = t[t["encoder"] == "pixels"].set_index("attribute")["accuracy"].map("{:.1f}".format)
    cell.loc["pixels"] = px
    order = [a for a in ("color", "shape", "size", "texture", "row", "col") if a in cell.columns]
    return _markdown(cell[order].rename_axis("probe"))


@generator("spatial-levers")
def spatial_levers(results: Path = RESULTS) -> str:
    """LLaVA per spatial lever: spatial accuracy and its wordings, overall (mean ± sd over seeds, test split), and
    each lever's paired difference from the base recipe on spatial questions (95 % interval over common seeds)."""
    from .stats import paired, per_seed
    from .study import summary_table

    csv = results / "spatial-levers.csv"
    frame = tidy_frame(csv, by="lever")
    cat = summary_table(frame, split="test", categories=("spatial", "overall"))
    wf = tidy_frame(csv, per="wording", by="lever")
    wf = wf[wf["category"].str.startswith("spatial:")]
    per_lever = wf[wf["source"] == "model"].groupby("config", observed=True)["category"].agg(set)
    common = [c for c in _categories(wf) if all(c in got for got in per_lever)]
    words = summary_table(wf[wf["category"].isin(common)], split="test", categories=common)[common]
    extra = wf[~wf["category"].isin(common) & (wf["source"] == "model") & (wf["split"] == "test")]
    for c, g in extra.groupby("category"):  # a wording only some levers ask (the symmetric control)
        words[c] = g.groupby("config", observed=True)["accuracy"].agg(
            lambda a: f"{a.mean():.1f}" + (f" ± {a.std(ddof=1):.1f}" if len(a) > 1 else "")).reindex(words.index)
    base = per_seed(frame, "config", "base", "spatial")
    delta = {str(v): str(paired(per_seed(frame, "config", v, "spatial"), base)) if v != "base" else ""
             for v in frame["config"].cat.categories}
    t = pd.concat([cat.drop(columns="seeds"), words, cat[["seeds"]]], axis=1)
    t.insert(1, "spatial vs base", pd.Series(delta))
    return _markdown(t.loc[[r for r in t.index if r in delta or r in ("floor (blind)", "chance")]]
                     .rename_axis("lever"))


def _recipe_knobs(t: pd.DataFrame) -> pd.Series:
    """Each row's recipe as the knob values that differ from the design's defaults ({} for the default)."""
    import dataclasses

    from .archs import get_arch

    knobs = [c for c in t.columns if c.startswith("knob.")]
    defaults = {a: {f.name: f.default for f in dataclasses.fields(get_arch(a).KnobsClass)} for a in set(t["arch"])}

    def differs(v, default) -> bool:
        if isinstance(default, bool) or isinstance(v, bool):
            return str(v) != str(default)
        if isinstance(default, (int, float)):
            return float(v) != float(default)
        return str(v) != str(default)

    def value(v, default):
        return int(float(v)) if isinstance(default, int) and not isinstance(default, bool) else v

    def changed(r):
        d = defaults[r["arch"]]
        return {c[5:]: value(r[c], d[c[5:]]) for c in knobs
                if pd.notna(r[c]) and c[5:] in d and differs(r[c], d[c[5:]])}
    # once per distinct design and knob values (a run has hundreds of rows), then mapped back to every row
    keys = pd.util.hash_pandas_object(t[["arch", *knobs]], index=False)
    first = ~keys.duplicated()
    return keys.map(dict(zip(keys[first], (changed(r) for _, r in t[first].iterrows()))))


def _recipe_name(knobs: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(knobs.items())) or "default"


def _recipe_names(t: pd.DataFrame) -> pd.Series:
    """Each row's recipe: its knob values that differ from the design's defaults ("default" when none)."""
    return _recipe_knobs(t).map(_recipe_name)


def _one_knob_controls(raw: pd.DataFrame) -> dict:
    """Each non-default recipe's control: the recipe of the same design that differs from it in one knob only,
    the one nearest the default where there are several (a recipe experiment changes one factor), else the
    design's default (a lever that sets several knobs together, such as HoVLE's Stage I scale)."""
    recipes = {}
    for arch, knobs in zip(raw["arch"], _recipe_knobs(raw)):
        recipes.setdefault(f"{arch}: {_recipe_name(knobs)}", (arch, knobs))

    def distance(a: dict, b: dict) -> int:
        return sum(a.get(k) != b.get(k) for k in set(a) | set(b))
    out = {}
    for name, (arch, knobs) in recipes.items():
        near = [(len(k), n) for n, (a, k) in recipes.items() if a == arch and distance(k, knobs) == 1]
        if knobs and near:
            out[name] = min(near)[1]
        elif knobs and f"{arch}: default" in recipes:
            out[name] = f"{arch}: default"
    return out


def _recipe_frame(results: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """recipes.csv with a ``recipe`` column (design: recipe), as read by the recipe tables."""
    raw = pd.read_csv(results / "recipes.csv")
    raw["recipe"] = raw["arch"] + ": " + _recipe_names(raw)
    return raw, tidy_frame_from(raw, by="recipe")


def tidy_frame_from(raw: pd.DataFrame, per: str = "category", by: str = "arch") -> pd.DataFrame:
    from .study import accuracy_rows

    t = accuracy_rows(raw, per)
    t["config"] = pd.Categorical(t[by].astype(str), list(dict.fromkeys(t[by].astype(str))), ordered=True)
    return t


@generator("recipes")
def recipes(results: Path = RESULTS) -> str:
    """Each design's recipe experiments: overall, semantic and structural accuracy (mean ± sd over seeds, test
    split) and each lever's paired difference overall (95 % interval) from its control, the recipe one knob
    away (:func:`_one_knob_controls`)."""
    from .stats import paired, per_seed
    from .study import summary_table

    raw, frame = _recipe_frame(results)
    t = summary_table(frame, split="test", categories=("overall", "semantic", "structural"))
    controls = _one_knob_controls(raw)
    t.insert(1, "control", pd.Series({r: c.split(": ", 1)[1] for r, c in controls.items()}))
    t.insert(2, "overall vs control", pd.Series({
        r: str(paired(per_seed(frame, "config", r, "overall"), per_seed(frame, "config", c, "overall")))
        for r, c in controls.items()}))
    floor = {r: str(paired(per_seed(frame, "config", r, "overall"), per_seed(frame, "config", r, "overall",
                                                                              source="floor")))
             for r in frame["config"].cat.categories}
    t.insert(3, "overall minus floor", pd.Series(floor))
    return _markdown(t.fillna("").rename_axis("design: recipe"))


@generator("recipe-diagnostics")
def recipe_diagnostics(results: Path = RESULTS) -> str:
    """What each recipe's mechanism reached (mean over seeds): HoVLE's distillation loss at the end of Stage I
    and its cosines after training, VW-LMM's visual-word entropy and the share of patches whose top word names an
    attribute, Ovis's effective table entries per patch."""
    raw, _ = _recipe_frame(results)
    keys = {"hovle": ["stage.distill.final_loss", "diagnostic.distill_cos_image", "diagnostic.distill_cos_text"],
            "vwlmm": ["diagnostic.visual_word_entropy", "diagnostic.top_visual_word_color_fraction",
                      "diagnostic.top_visual_word_shape_fraction", "diagnostic.top_visual_word_texture_fraction"],
            "ovis": ["diagnostic.ovis_effective_entries", "diagnostic.ovis_table_usage"]}
    out = []
    for arch, metrics in keys.items():
        d = raw[(raw["arch"] == arch) & raw["metric"].isin(metrics)]
        if d.empty:
            continue
        g = d.groupby(["recipe", "metric"], sort=False)["value"].agg(["mean", "size"]).reset_index()
        for _, r in g.iterrows():
            out.append({"design: recipe": r["recipe"], "measure": r["metric"].split(".", 1)[1],
                        "mean": f"{r['mean']:.3f}", "seeds": int(r["size"])})
    return _markdown(pd.DataFrame(out).set_index("design: recipe"))


@generator("spatial-plateau")
def spatial_plateau(results: Path = RESULTS) -> str:
    """Per spatial lever, the spatial loss on a fixed validation batch (recorded every 100 steps): its lowest and
    last value and the best accuracy on that batch, mean over seeds. Yes/no at chance is a loss of ln 2."""
    c = pd.read_csv(results / "spatial-curves.csv")
    per_run = c.groupby(["lever", "seed"]).agg(lowest=("spatial_val_loss", "min"),
                                               last=("spatial_val_loss", "last"),
                                               best=("spatial_val_accuracy", "max"),
                                               steps=("step", "max"))
    t = per_run.groupby("lever").agg(lowest=("lowest", "mean"), last=("last", "mean"), best=("best", "mean"),
                                     steps=("steps", "max"), seeds=("lowest", "size"))
    out = pd.DataFrame({"lowest spatial loss": t["lowest"].map("{:.3f}".format),
                        "last spatial loss": t["last"].map("{:.3f}".format),
                        "best spatial accuracy (%)": t["best"].map("{:.1f}".format),
                        "last step (both stages)": t["steps"], "seeds": t["seeds"]})
    return _markdown(out.rename_axis("lever"))


def _fmt(value, digits: int = 1, scale: float = 1.0) -> str:
    return "–" if value is None else f"{scale * float(value):,.{digits}f}"


def _benchmarks_dir(results: Path) -> Path:
    """``benchmarks/`` of the repository that holds ``results`` (its ``docs/results``)."""
    return Path(results).parent.parent / "benchmarks"


def _bench_json(results: Path, name: str) -> dict:
    """``benchmarks/<name>`` of the repository that holds ``results``, parsed."""
    import json

    return json.loads((_benchmarks_dir(results) / name).read_text())


@generator("benchmarks")
def benchmarks(results: Path = RESULTS) -> str:
    """The commands' wall times (``benchmarks/end-to-end.json``) and each ``benchmarks/results-*.json`` that
    ``benchmarks/run_all.py`` wrote, one column per file; ``benchmarks/`` of the repository that holds ``results``."""
    import json

    bench = _benchmarks_dir(results)
    parts = []
    e2e = bench / "end-to-end.json"
    if e2e.is_file():
        rows = []
        for r in json.loads(e2e.read_text())["runs"]:
            lo, hi = r["minutes_min"], r["minutes_max"]
            rows.append({"command": f"`{r['command']}`", "from": r["start"], "backbones": r["backbones"],
                         "CPU": r["cpu"], "minutes": _fmt(lo) if lo == hi else f"{_fmt(lo)}-{_fmt(hi)}",
                         "timings": "–" if r.get("runs") is None else str(r["runs"]), "where the time goes": r["parts"]})
        parts.append("Wall time of the commands (`benchmarks/end-to-end.json`):\n\n"
                     + _markdown(pd.DataFrame(rows).set_index("command")))
    files = sorted(bench.glob("results-*.json"))
    if files:
        cols = {}
        for f in files:
            d = json.loads(f.read_text())
            m, mm, lm = d["machine"], d["matmul_peak_gflops"], d["lm_pretrain"]
            col = {"budget": d["budget"], "device, threads": f"{m['device']}, {m['threads']}", "torch": m["torch"],
                   "world generation, samples/s": _fmt(d["world_samples_per_s"], 0),
                   "matmul peak fp32, GFLOP/s": _fmt(mm["fp32"]), "matmul peak bf16, GFLOP/s": _fmt(mm["bf16"])}
            for prec, r in d["llava_train"].items():
                col[f"LLaVA training {prec}, samples/s"] = _fmt(r["samples_per_s"], 0)
                col[f"LLaVA training {prec}, s/step"] = _fmt(r["step_s"], 3)
                col[f"LLaVA training {prec}, % of the {prec} peak"] = _fmt(r["fraction_of_peak"], 1, 100)
            how = f"{lm['precision']}, {'compiled' if lm['compiled'] else 'eager'}"
            col.update({f"LM pretraining step ({how}), s": _fmt(lm["step_s"], 3),
                        "LM pretraining: text batch, s": _fmt(lm["data_s_per_batch"], 3),
                        "LM pretraining: first step, s": _fmt(lm["first_step_s"]),
                        f"LM pretraining: % of the {lm['precision']} peak": _fmt(lm["fraction_of_peak"], 1, 100),
                        "LM pretraining: real tokens, %": _fmt(lm["real_token_share"], 1, 100),
                        "LM pretraining projected, min": _fmt(lm["projected_pretrain_min"])})
            cols[f"`{f.name}`"] = col
        parts.append("Throughput (`benchmarks/run_all.py`), one column per results file:\n\n"
                     + _markdown(pd.DataFrame(cols).rename_axis("measure")))
    ab = bench / "ab-llava.json"
    if ab.is_file():
        d = json.loads(ab.read_text())
        rows = [{"round": i, "first": "A" if i % 2 == 0 else "B", "A total, s": _fmt(r["A"]["total_s"], 0),
                 "B total, s": _fmt(r["B"]["total_s"], 0), "B/A total": _fmt(r["ratio_total"], 2),
                 "B/A training": _fmt(r["ratio_train"], 2)} for i, r in enumerate(d["rounds"])]
        parts.append(f"A LLaVA run at the default budget, shortened to {d['steps']} steps and "
                     f"{d['eval_per_category']} questions per category, timed against revision `{d['ref']}` (A) and "
                     f"this checkout (B), alternated in one benchmark run (`benchmarks/ab_llava.py`, "
                     f"`benchmarks/ab-llava.json`); "
                     f"median B/A wall time {_fmt(d['median_ratio_total'], 2)}:\n\n"
                     + _markdown(pd.DataFrame(rows).set_index("round")))
    if (bench / "compile-ab.json").is_file():
        parts.append(compile_ab(results))
    if (bench / "run-overhead.json").is_file():
        parts.append(run_overhead(results))
    if (bench / "step-profile.json").is_file():
        parts.append(step_profile(results))
    if any(bench.glob("study-wall*.json")):
        parts.append(study_wall(results))
    return "\n".join(parts) if parts else "No benchmark results in `benchmarks/`.\n"


@generator("compile-ab")
def compile_ab(results: Path = RESULTS) -> str:
    """Eager against compiled training steps per design and stage (``benchmarks/compile-ab.json``, written by
    ``benchmarks/compile_ab.py``)."""
    d = _bench_json(results, "compile-ab.json")
    rows = [{"design": arch, "stage": name, "steps in a run": r["steps_in_run"],
             "eager, ms": _fmt(r["eager_step_s"], 1, 1000), "compiled, ms": _fmt(r["compiled_step_s"], 1, 1000),
             "eager / compiled": _fmt(r["ratio"], 2), "first compiled step, s": _fmt(r["first_compiled_step_s"], 0),
             "loss difference, first step": f"{r['first_loss_diff']:.1e}",
             "loss difference, largest": f"{r['max_loss_diff']:.1e}"}
            for arch, x in d["designs"].items() for name, r in x["stages"].items()]
    runs = ", ".join(f"{arch} {_fmt(x['run_ratio'], 2)}" for arch, x in d["designs"].items())
    return (f"Eager against compiled training steps at the {d['budget']} budget (`benchmarks/compile_ab.py`, "
            f"`benchmarks/compile-ab.json`; {d['rounds']} alternated rounds of {d['steps']} steps per side, "
            f"{d['machine']['threads']} thread). A run's steps, eager / compiled, weighted by each stage's steps: "
            f"{runs}.\n\n" + _markdown(pd.DataFrame(rows).set_index("design")))


@generator("run-overhead")
def run_overhead(results: Path = RESULTS) -> str:
    """Where a run's time goes, through papermill and in a warm process (``benchmarks/run-overhead.json``,
    written by ``benchmarks/run_overhead.py``)."""
    d = _bench_json(results, "run-overhead.json")
    rows = [{"round": i, "executor": side.replace("_", "-"), "wall, s": _fmt(r["wall_s"], 0),
             "training, s": _fmt(r["train_s"], 0), "evaluation, s": _fmt(r["evaluate_s"], 0),
             "setup, s": _fmt(r["setup_s"], 1), "floor and oracle look-ups, s": _fmt(r["references_s"], 1),
             "overhead, s": _fmt(r["overhead_s"], 0), "overhead, % of the run": _fmt(r["overhead_share"], 1, 100)}
            for i, rnd in enumerate(d["rounds"]) for side, r in rnd.items()]
    return (f"{d['arch']} at the {d['budget']} budget, seed 0 (`benchmarks/run_overhead.py`, "
            f"`benchmarks/run-overhead.json`); overhead = wall time - training - evaluation:\n\n"
            + _markdown(pd.DataFrame(rows).set_index("round")))


@generator("step-profile")
def step_profile(results: Path = RESULTS) -> str:
    """The matrix multiplies' share of a training step, eager and compiled (``benchmarks/step-profile.json``,
    written by ``benchmarks/step_profile.py``)."""
    d = _bench_json(results, "step-profile.json")
    rows = [{"stage": name, "steps in a run": r["steps_in_run"], "eager, ms": _fmt(r["eager"]["step_ms"], 1),
             "eager: matmul, ms": _fmt(r["eager"]["matmul_ms"], 1),
             "eager: matmul share, %": _fmt(r["eager"]["matmul_share"], 0, 100),
             "compiled, ms": _fmt(r["compiled"]["step_ms"], 1),
             "compiled: matmul share, %": _fmt(r["compiled"]["matmul_share"], 0, 100),
             "bound on eager / compiled": _fmt(1 / r["eager"]["matmul_share"], 2)}
            for name, r in d["stages"].items()]
    return (f"Where {d['arch']}'s training step goes at the {d['budget']} budget, {d['machine']['threads']} thread "
            f"(`benchmarks/step_profile.py`, `benchmarks/step-profile.json`; torch.profiler over {d['steps']} steps "
            f"per side after as many warm-up steps). A compiler that left only the matrix multiplies would reach the "
            f"last column:\n\n" + _markdown(pd.DataFrame(rows).set_index("stage")))


@generator("study-wall")
def study_wall(results: Path = RESULTS) -> str:
    """A whole study's wall time before and after the faster-runs levers: a row per side timed in each
    ``benchmarks/study-wall*.json`` (written by ``benchmarks/study_wall.py``; a file of one side was timed alone)."""
    from .budgets import get_budget

    rows = []
    for f in sorted(_benchmarks_dir(results).glob("study-wall*.json"), key=lambda f: (len(f.stem), f.stem)):
        d = _bench_json(results, f.name)
        compiles = get_budget(d["budget"]).vlm_compile  # what "as the budget sets" meant for the after side
        for i, rnd in enumerate(d["rounds"]):
            for side in (x for x in ("before", "after") if x in rnd):
                r = rnd[side]
                rows.append({"file": f"`{f.name}`", "budget": d["budget"], "round": i, "side": side,
                             "executor": r["executor"],
                             "steps": "compiled" if r["compile"] == "1" or (r["compile"] == "budget" and compiles)
                             else "eager",
                             "workers x threads": f"{r['workers']} x {r['threads']}",
                             "runs": f"{r['runs']} ({len(d['archs'])} designs x {d['seeds']} seeds)",
                             "wall, min": _fmt(r["wall_s"] / 60, 1),
                             "before / after": _fmt(rnd.get("before_over_after"), 2)})
    return ("The comparison study, each side from an empty store (`benchmarks/study_wall.py`; a file's sides were "
            "timed back to back):\n\n" + _markdown(pd.DataFrame(rows).set_index("file")))


@generator("reading-path")
def reading_path(results: Path = RESULTS) -> str:
    """The reading path through the notebooks, from ``docs/reading-path.csv`` (the course's index shows it too)."""
    t = pd.read_csv(Path(results).parent / "reading-path.csv", dtype=str, keep_default_na=False)
    t["notebook"] = "`" + t["notebook"] + "`"
    return _markdown(t.set_index("notebook").rename(columns={"you learn": "what you learn",
                                                             "minutes at default": "minutes (default budget)"}))


@generator("mim-levers")
def mim_levers(results: Path = RESULTS) -> str:
    """Each MIM pretraining recipe tried: its final loss against the mean-image reference, and the best block's
    held-out texture (and colour, shape) probe accuracy; the CL encoder and the raw pixels for comparison."""
    t = pd.read_csv(results / "mim-levers.csv")
    bounds = results / "mim-bounds.csv"
    b = pd.read_csv(bounds) if bounds.is_file() else pd.DataFrame(columns=["target", "predictor", "loss"])
    ref = b[(b["target"] == "clean, per-patch norm") & (b["predictor"] == "the average training image")]["loss"]
    norm_ref = f"{ref.iloc[0]:.3f}" if len(ref) else "–"
    rows = {}
    for v, g in t[t["encoder"] != "pixels"].groupby("variant", sort=False):
        r = g.iloc[0]
        best = g.loc[g.groupby("attribute")["accuracy"].idxmax()].set_index("attribute")
        recipe = "CL (captions)" if pd.isna(r["mask_ratio"]) else (
            f"mask {r['mask_ratio']:.2f}, {r['target']} target{', per-patch norm' if r['norm_pix'] else ''}, "
            f"{int(r['steps'])} steps")
        if pd.isna(r["mask_ratio"]):
            loss = f"{r['loss_last50']:.3f} (contrastive)"
        elif (r["norm_pix"] is True or str(r["norm_pix"]) == "True") and r["target"] == "clean":  # per-patch
            # clean targets: the reference of mim-bounds (the early runs logged the plain target's beside them)
            loss = f"{r['loss_last50']:.3f} / {norm_ref}"
        else:
            loss = f"{r['loss_last50']:.3f} / {r['mean_image_loss']:.3f}"
        rows[recipe] = {"loss / mean-image loss": loss,
                        **{f"{a} (block)": f"{best.loc[a, 'accuracy']:.1f} ({int(best.loc[a, 'block'])})"
                           for a in ("texture", "color", "shape") if a in best.index}}
    px = t[t["encoder"] == "pixels"].drop_duplicates("attribute").set_index("attribute")["accuracy"]
    if len(px):
        rows["raw pixels of the cell"] = {"loss / mean-image loss": "",
                                          **{f"{a} (block)": f"{px[a]:.1f}" for a in ("texture", "color", "shape")
                                             if a in px.index}}
    return _markdown(pd.DataFrame(rows).T.rename_axis("recipe"))


@generator("mim-bounds")
def mim_bounds(results: Path = RESULTS) -> str:
    """The masked-patch loss of simple predictors that need no training beyond averages, on the MIM targets."""
    t = pd.read_csv(results / "mim-bounds.csv")
    t["loss"] = t["loss"].map("{:.3f}".format)
    return _markdown(t.pivot(index="predictor", columns="target", values="loss").fillna("")
                     .reindex(list(dict.fromkeys(t["predictor"]))))


@generator("mim-fed")
def mim_fed(results: Path = RESULTS) -> str:
    """The MIM-fed designs on texture: accuracy, the blind floor, and the paired difference (95 % interval)."""
    from .stats import paired, per_seed
    from .study import summary_table

    frame = tidy_frame(results / "mim-fed.csv", by="design")
    t = summary_table(frame, split="test", categories=("texture", "overall"))
    lift = {str(d): str(paired(per_seed(frame, "config", d, "texture"),
                               per_seed(frame, "config", d, "texture", source="floor")))
            for d in frame["config"].cat.categories}
    t.insert(1, "texture minus floor", pd.Series(lift))
    return _markdown(t.loc[[r for r in t.index if r != "ceiling (text oracle)"]].fillna("").rename_axis("design"))


def _headline(frame: pd.DataFrame) -> pd.DataFrame:
    """summary_table with each category as its mean over seeds and only the overall with its sd."""
    from .study import summary_table

    t = summary_table(frame, split="test")
    for c in t.columns:
        if c not in ("overall", "seeds"):
            t[c] = t[c].astype(str).str.split(" ±").str[0]
    return t.rename_axis("design")


@generator("comparison")
def comparison(results: Path = RESULTS) -> str:
    """Every design at its adopted recipe, per category, test split, mean ± sd over the paired seeds."""
    from .study import summary_table

    return _markdown(summary_table(tidy_frame(results / "comparison.csv"), split="test").rename_axis("design"))


@generator("comparison-headline")
def comparison_headline(results: Path = RESULTS) -> str:
    """The README's comparison: each category's mean over seeds, the overall with its sd."""
    return _markdown(_headline(tidy_frame(results / "comparison.csv")))


@generator("comparison-vs-llava")
def comparison_vs_llava(results: Path = RESULTS) -> str:
    """Each design minus LLaVA overall, paired over seeds (95 % interval, Holm across the designs), and its
    distance above the blind floor."""
    from .stats import paired, per_seed
    from .study import paired_vs

    frame = tidy_frame(results / "comparison.csv")
    t = paired_vs(frame, "config", "llava")
    rows = {}
    for d, r in t.iterrows():
        floor = paired(per_seed(frame, "config", d, "overall"), per_seed(frame, "config", d, "overall",
                                                                          source="floor"))
        rows[d] = {"minus LLaVA": f"{r['difference']:+.1f} [{r['95% lo']:+.1f}, {r['95% hi']:+.1f}]",
                   "p (Holm)": f"{r['p (Holm)']:.3f}", "reads": r["reads"], "minus floor": str(floor),
                   "seeds": int(r["seeds"])}
    return _markdown(pd.DataFrame(rows).T.rename_axis("design"))


def _norm(v) -> str:
    """A knob value as text that a CSV cell and a Python value share (0 and 0.0, False and "False")."""
    if isinstance(v, bool) or str(v) in ("True", "False"):
        return str(v)
    try:
        return repr(float(v))
    except (TypeError, ValueError):
        return str(v)


def case_frame(raw: pd.DataFrame, cases) -> pd.DataFrame:
    """The accuracy frame of the runs of ``cases`` (:class:`vlmlab.study.Case`) among tidy rows ``raw``: each run
    of a case's design with the case's knobs off their defaults (and no other) under ``config`` = its name."""
    knobs = _recipe_knobs(raw).map(lambda k: {n: _norm(v) for n, v in k.items()})
    parts = []
    for case in cases:
        want = {n: _norm(v) for n, v in case.knobs.items()}
        part = raw[(raw["arch"] == case.arch) & (knobs == want)].copy()
        part["case"] = case.name
        parts.append(part)
    return tidy_frame_from(pd.concat(parts), by="case")


def _study_rows(results: Path) -> pd.DataFrame:
    """Every run the docs' studies made: the comparison's, the claims' controls' and the ablations'."""
    files = [results / f for f in ("comparison.csv", "claims.csv", "ablations.csv")]
    return pd.concat([pd.read_csv(f) for f in files if f.is_file()], ignore_index=True)


@generator("claims")
def claims(results: Path = RESULTS) -> str:
    """Each paper's claim with its verdict and every contrast's paired 95 % interval, from the comparison's and
    the claim controls' runs; a claim whose design or a control has no run yet is listed as not measured."""
    from .study import CLAIMS, claim_verdict, verdicts

    raw = _study_rows(results)
    rows = []
    for key, c in CLAIMS.items():
        frame = case_frame(raw, c.cases)
        names = set(frame["config"])
        if any(case.name not in names for case in c.cases):
            rows.append({"claim": c.text, "contrast": "", "difference": "", "seeds": "", "p (Holm)": "",
                         "verdict": "not measured yet"})
            continue
        t = verdicts(frame, key)
        for i, r in enumerate(t.itertuples()):
            rows.append({"claim": c.text if i == 0 else "", "contrast": f"minus {r.control} ({r.category})",
                         "difference": f"{r.difference:+.1f} [{r.lo:+.1f}, {r.hi:+.1f}]", "seeds": r.seeds,
                         "p (Holm)": f"{r.p_holm:.3f}", "verdict": r.verdict})
        if len(t) > 1:
            rows.append({"claim": "", "contrast": "the claim", "difference": "", "seeds": "", "p (Holm)": "",
                         "verdict": claim_verdict(t)})
    return _markdown(pd.DataFrame(rows).set_index("claim"))


@generator("ablation-headlines")
def ablation_headlines(results: Path = RESULTS) -> str:
    """Each ablation's headline contrast (:data:`vlmlab.study.HEADLINES`), paired over seeds: the difference in
    points, its 95 % interval, seeds, p and what it reads as ("too few seeds" below 5)."""
    from .stats import paired, per_seed, reading
    from .study import HEADLINES, MIN_SEEDS

    raw = _study_rows(results)
    rows = {}
    for h in HEADLINES.values():
        frame = case_frame(raw, [h.a, h.b])
        a, b = (per_seed(frame, "config", c.name, h.category) for c in (h.a, h.b))
        row = {"contrast": f"{h.a.name} minus {h.b.name} ({h.category})", "difference": "", "seeds": 0, "p": "",
               "reads": "not measured yet", "notebook": h.notebook}
        if len(a.index.intersection(b.index)):
            r = paired(a, b)
            row.update({"difference": str(r), "seeds": r.n, "p": f"{r.p:.3f}" if r.p == r.p else "",
                        "reads": reading(r, r.p, MIN_SEEDS)})
        rows[h.text] = row
    return _markdown(pd.DataFrame(rows).T.rename_axis("ablation"))


def designs_figure(results: Path = RESULTS):
    """Every design at its default recipe per category (test split): bars over seeds beside floor, ceiling and
    chance."""
    from .study import ablation_plot

    frame = tidy_frame(results / "comparison.csv")
    return ablation_plot(frame, x="config", xlabel="design", title="default recipes, default budget: accuracy "
                         "per category (test split; bars: mean, error bars: sd over seeds)")


FIGURES: dict[str, Callable] = {"comparison.png": designs_figure}  # docs/figures/<name>, from the CSVs


def render_figures(out: Path = REPO / "docs" / "figures", results: Path = RESULTS) -> list[Path]:
    """Draw every figure the docs show from the committed CSVs. Not part of ``--check``: a PNG's bytes depend on
    the matplotlib build, so only the tables are compared."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in FIGURES.items():
        fig = draw(results)
        fig.savefig(out / name, dpi=80)
        plt.close(fig)
        written.append(out / name)
    return written


def render_text(text: str, results: Path = RESULTS) -> str:
    def fill(m):
        name = m.group("name")
        if name not in GENERATORS:
            raise ValueError(f"unknown generated table {name!r}; known: {sorted(GENERATORS)}")
        return m.group(1) + GENERATORS[name](results) + m.group(4)
    return BLOCK.sub(fill, text)


def doc_files(root: Path = REPO) -> list[Path]:
    return [root / "README.md", *sorted((root / "data").rglob("*.md")), *sorted((root / "docs").rglob("*.md"))]


def render(path: Path, results: Path = RESULTS, check: bool = False) -> bool:
    """Regenerate a file's tables; returns whether it changed (with ``check``, only reports it)."""
    old = path.read_text()
    new = render_text(old, results)
    if new != old and not check:
        path.write_text(new)
    return new != old
