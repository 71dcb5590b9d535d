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
  pool, resume, failures recorded); ``executor="inprocess"`` trains the runs without a notebook or kernel per run:
  one after another in the calling process (one worker), or in ``workers`` warm processes that each train run
  after run. It writes the same ``params.json`` and ``record.json`` into the same directories, so either
  executor reuses the other's runs.

Then :func:`accuracy_frame` turns the records into one tidy frame (a row per run, split, category and source:
model / floor / ceiling / chance), :func:`ablation_plot` draws accuracy per category against the ablated value
(bars = mean over seeds, error bars = sd over seeds, points = the seeds, floor and ceiling as lines),
:func:`summary_table` prints mean ± std per configuration, and :func:`compare`, :func:`ranking`,
:func:`category_wins`, :func:`gap_closed` build the notebooks' conclusions as sentences computed from the frame:
differences are paired over seeds with a 95 % interval, per-category ones Holm-corrected (:mod:`vlmlab.stats`).
:data:`CLAIMS` holds the papers' claims the notebooks test, each a study (:func:`claim_study`) with a verdict
(:func:`verdicts`: reproduced, not reproduced or inconclusive).
:data:`PAPER` holds what each paper reported (quoted from docs/papers.md) for the notebooks to
print beside the measured numbers.

One module per concern: :mod:`.store` (configurations, the run store, staleness), :mod:`.catalog` (the
workbook's studies), :mod:`.execute` (launching or reusing runs), :mod:`.frames` (records to tidy frames),
:mod:`.tables` (statistics and tables), :mod:`.conclusions` (sentences), :mod:`.claims` (the papers' claims and
their verdicts), :mod:`.plots` and :mod:`.papers`.
Everything is importable from ``vlmlab.study``.
"""
from __future__ import annotations

from ..jsonio import params_hash
from .catalog import (ATTENTION_KNOB, COMPARISON_ARCHS, FEATURE_KNOBS, HEADLINES, Headline, attention_study,
                      comparison_study, features_study, indexings_study, seeds_from, table_size_study)
from .claims import (CLAIMS, MARGIN, VERDICTS, Claim, claim_study, claim_verdict, get_claim, test_claim,
                     verdict_markdown, verdicts)
from .conclusions import MIN_SEEDS, category_wins, compare, conclusions, diagnostic_summary, gap_closed, ranking
from .execute import EXECUTORS, describe_result, run_study
from .frames import (GROUPINGS, SOURCES, accuracy_frame, accuracy_rows, cost_frame, diagnostics_frame, label_columns,
                     mixed_backbones, records)
from .papers import PAPER, PAPER_NOTES, paper_markdown
from .plots import CEILING_STYLE, CHANCE_STYLE, FLOOR_STYLE, ablation_plot, diagnostic_plot, explorer
from .store import RUN_NOTEBOOK, Case, Study, canonical_knobs, grid_study, store_dir
from .tables import cost_table, markdown_table, paired_vs, reference, stats, summary_table, wording_summary

__all__ = ["Case", "Study", "canonical_knobs", "grid_study", "store_dir", "RUN_NOTEBOOK", "seeds_from",
           "table_size_study", "indexings_study", "attention_study", "features_study", "comparison_study",
           "COMPARISON_ARCHS", "ATTENTION_KNOB", "FEATURE_KNOBS", "HEADLINES", "Headline", "run_study",
           "describe_result", "EXECUTORS",
           "records", "label_columns", "GROUPINGS", "SOURCES", "accuracy_rows", "accuracy_frame", "cost_frame",
           "cost_table", "paired_vs", "diagnostics_frame", "mixed_backbones", "stats", "reference", "summary_table",
           "wording_summary", "markdown_table", "compare", "ranking", "gap_closed", "category_wins",
           "diagnostic_summary", "conclusions", "MIN_SEEDS", "Claim", "CLAIMS", "MARGIN", "VERDICTS", "get_claim",
           "claim_study", "verdicts", "claim_verdict", "verdict_markdown", "test_claim", "ablation_plot",
           "diagnostic_plot", "explorer", "FLOOR_STYLE",
           "CEILING_STYLE", "CHANCE_STYLE", "PAPER", "PAPER_NOTES", "paper_markdown", "params_hash"]
