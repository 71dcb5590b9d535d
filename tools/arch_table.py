"""Train every architecture at a budget over several seeds and print the comparison tables (Markdown) for the docs.

    python tools/arch_table.py --budget default --seeds 0 1 2 [--archs llava ovis ...] [--output table.md]

The runs are those of the comparison notebook (``notebooks/30_comparison.ipynb``): the same study
(``vlmlab.study.comparison_study``: each architecture with its default knobs) in the same shared run store,
``papermill_runs/study-<budget>/<params hash>/``. Runs already there (made by this tool, the comparison notebook or
an ablation notebook with default knobs) are reused; missing ones are trained first (``--executor papermill``:
``--workers`` processes of ``notebooks/run.ipynb`` at a time; ``inprocess``: one after another in this process).
``--no-train`` only renders what the store holds and fails if a run is missing.

Output: the accuracy table (mean ± std over seeds per category, with the blind floor, the text-oracle ceiling and
chance) for the test and the compositional splits, the same per wording of the four categories asked two ways
(test split), then the cost table (parameters total / trainable, train seconds, samples/s), to stdout or
``--output``: a quick look at a store. The docs' tables come from the CSVs under docs/results/ (``vlmlab results``)
through ``tools/render_docs.py``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlmlab.study import (COMPARISON_ARCHS, EXECUTORS, accuracy_frame, comparison_study, cost_table,
                          describe_result, markdown_table, mixed_backbones, run_study, summary_table,
                          wording_summary)


def render(study) -> str:
    """The Markdown tables of a comparison study whose runs are all in the store."""
    frame = accuracy_frame(study)
    seeds = ", ".join(str(s) for s in study.seeds)
    parts = []
    for split in ("test", "compositional"):
        t = summary_table(frame, split=split).drop(columns="seeds").T.rename_axis("category")
        parts.append(f"Accuracy (%) per category, {split} split, budget {study.budget!r}, mean ± std over seeds "
                     f"{seeds}:\n\n{markdown_table(t)}")
    t = wording_summary(study).drop(index="seeds", errors="ignore")
    if not t.empty:
        parts.append(f"Accuracy (%) per wording of the categories asked two ways, test split, mean ± std over seeds "
                     f"{seeds}:\n\n{markdown_table(t)}")
    parts.append(f"Cost (mean ± std over seeds {seeds}; times depend on the machine and its load):\n\n"
                 f"{markdown_table(cost_table(study))}")
    parts.append(f"Runs: {study.run_root} (`vlmlab results {study.run_root}` gives the tidy CSV).")
    return "\n\n".join(parts) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", default="default", help="budget of every run (default: default)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per architecture (default 0 1 2)")
    ap.add_argument("--archs", nargs="+", default=COMPARISON_ARCHS,
                    help=f"architectures, default knobs each (default: {' '.join(COMPARISON_ARCHS)})")
    ap.add_argument("--store", default="", help="root of the shared run store (default: papermill_runs/)")
    ap.add_argument("--executor", default="papermill", choices=EXECUTORS, help="how missing runs are trained")
    ap.add_argument("--workers", type=int, default=2, help="runs at a time (papermill executor; default 2)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1)")
    ap.add_argument("--no-train", action="store_true", help="render from the store only; fail if a run is missing")
    ap.add_argument("--output", help="write the Markdown here instead of stdout")
    a = ap.parse_args(argv)

    study = comparison_study(a.archs, a.seeds, a.budget, a.store or None)
    missing = study.missing()
    if missing and a.no_train:
        print(f"{len(missing)} run(s) missing from {study.run_root} (e.g. {missing[0].name}); run without "
              "--no-train to train them", file=sys.stderr)
        return 1
    if missing:
        print(f"training {len(missing)} missing run(s) of {len(study.runs())} into {study.run_root}", file=sys.stderr)
        result = run_study(study, executor=a.executor, workers=a.workers, threads=a.threads)
        print(describe_result(result, study), file=sys.stderr)
        if result.failed or result.busy:
            return 1
    warning = mixed_backbones(study)
    if warning:
        print(warning, file=sys.stderr)
    md = render(study)
    if a.output:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        Path(a.output).write_text(md)
        print(f"written {a.output}", file=sys.stderr)
    else:
        print(md, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
