"""The papers' claims the workbook tests, each as a study (the design against controls that each drop one of
its ideas) and a verdict: "reproduced", "not reproduced" or "inconclusive", with the paired 95 % interval.

A contrast is the design minus one control, per seed (a seed fixes the world, the initialisation and the test
questions), in the claim's category. A claim with several contrasts (LLaViT's three components) Holm-corrects
their p-values together. Per contrast:

- **reproduced**: at least ``min_seeds`` seeds, and the design is ahead (Holm-adjusted p < 0.05);
- **not reproduced**: at least ``min_seeds`` seeds, and the interval's upper end is below ``margin`` points (the
  data rule out a gain of that size);
- **inconclusive**: otherwise (too few seeds, or an interval that reaches both 0 and ``margin``).

A claim is reproduced when every contrast is, not reproduced when any is not, and inconclusive otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..stats import paired_holm, per_seed
from .catalog import FEATURE_KNOBS, named_case
from .conclusions import MIN_SEEDS
from .papers import OVIS_TABLE3
from .store import Case, Study

MARGIN = 1.0  # points: a gain whose interval stays below this is read as absent ("not reproduced")
VERDICTS = ("reproduced", "not reproduced", "inconclusive")


@dataclass(frozen=True)
class Claim:
    """A paper's claim: ``design`` beats each of ``controls`` in ``category`` (its source quoted from
    docs/papers.md, and the notebook that tests it)."""

    key: str
    text: str
    source: tuple[str, str]
    design: Case
    controls: tuple
    category: str = "overall"
    notebook: str = ""

    @property
    def cases(self) -> list[Case]:
        return [self.design, *self.controls]


_CL = FEATURE_KNOBS["xformer"]["cl"][1]
CLAIMS = {c.key: c for c in [
    Claim("ovis_table", "Ovis's visual embedding table beats an MLP connector", OVIS_TABLE3,
          named_case("ovis", {}, "Ovis (visual table)"), (named_case("llava", {}, "LLaVA (MLP connector)"),),
          notebook="11_ovis"),
    Claim("vwlmm_lambda", "VW-LMM's visual-word loss (lambda > 0) beats none (lambda = 0)",
          ("VW-LMM, arXiv 2403.07720, Abstract", "we propose the concept of visual words, which maps the visual "
                                                  "features to probability distributions over LLM's vocabulary, "
                                                  "providing supervision information for visual modelling"),
          named_case("vwlmm", {}, "VW-LMM (lambda 1)"), (named_case("vwlmm", {"lambda_vm": 0.0}, "VW-LMM (lambda 0)"),),
          notebook="12_vwlmm"),
    Claim("hovle_distill", "HoVLE's distillation stage beats no distillation",
          ("HoVLE, arXiv 2412.16158, Abstract", "It is first trained to distill visual features from a pre-trained "
                                                "vision encoder and text embeddings from the LLM, enabling "
                                                "large-scale training with unpaired random images and text "
                                                "tokens."),
          named_case("hovle", {}, "HoVLE (distilled)"),
          (named_case("hovle", {"distill": "none"}, "HoVLE (no distillation)"),),
          notebook="13_hovle"),
    Claim("xformer_mim", "X-Former's CL+MIM features beat CL alone on structural questions",
          ("X-Former, arXiv 2407.13851, Abstract", "X-Former excels in visual reasoning tasks involving both "
                                                   "structural and semantic categories in the GQA dataset."),
          named_case("xformer", {}, "X-Former (CL+MIM)"), (named_case("xformer", _CL, "X-Former (CL only: BLIP-2)"),),
          category="structural", notebook="23_ablation_features"),
    Claim("llavit_components", "each of LLaViT's three components helps",
          ("LLaViT, arXiv 2511.10301, Abstract", "three key modifications: (1) learning separate QKV projections "
                                                 "for vision modality, (2) enabling bidirectional attention on "
                                                 "visual tokens, and (3) incorporating both global and local "
                                                 "visual representations"),
          named_case("llavit", {}, "LLaViT"),
          (named_case("llavit", {"visual_qkv": "shared"}, "LLaViT without separate visual QKV"),
           named_case("llavit", {"attention": "causal"}, "LLaViT without bidirectional attention"),
           named_case("llavit", {"layers": "global"}, "LLaViT without local features")),
          notebook="15_llavit"),
]}


def get_claim(key: str) -> Claim:
    if key not in CLAIMS:
        raise ValueError(f"claim={key!r} is unknown; allowed values: {sorted(CLAIMS)}")
    return CLAIMS[key]


def claim_study(key: str, seeds, budget: str, store=None) -> Study:
    """The claim's design and controls crossed with ``seeds`` (column ``variant``), in the shared run store."""
    return Study(f"claim-{key}", get_claim(key).cases, list(seeds), budget, store)


def _verdict(mean: float, hi: float, p_holm: float, n: int, min_seeds: int, margin: float) -> str:
    if n < min_seeds:
        return "inconclusive"
    if p_holm < 0.05 and mean > 0:
        return "reproduced"
    if hi < margin:
        return "not reproduced"
    return "inconclusive"


def verdicts(frame: pd.DataFrame, key: str, *, split: str = "test", min_seeds: int = MIN_SEEDS,
             margin: float = MARGIN) -> pd.DataFrame:
    """One row per contrast (design minus a control) of an accuracy frame of :func:`claim_study`: the paired
    difference in points, its 95 % interval, seeds, p, Holm-adjusted p and the verdict."""
    c = get_claim(key)
    a = per_seed(frame, "config", c.design.name, c.category, split)
    rows, adj = paired_holm({ctl.name: (a, per_seed(frame, "config", ctl.name, c.category, split))
                             for ctl in c.controls})
    return pd.DataFrame([{"claim": key, "category": c.category, "design": c.design.name, "control": k,
                          "difference": r.mean, "lo": r.lo, "hi": r.hi, "seeds": r.n, "p": r.p, "p_holm": adj[k],
                          "verdict": _verdict(r.mean, r.hi, adj[k], r.n, min_seeds, margin)}
                         for k, r in rows.items()])


def claim_verdict(table: pd.DataFrame) -> str:
    """The claim's verdict from its contrasts' (:func:`verdicts`)."""
    v = set(table["verdict"])
    if v == {"reproduced"}:
        return "reproduced"
    return "not reproduced" if "not reproduced" in v else "inconclusive"


def verdict_markdown(frame: pd.DataFrame, key: str, *, split: str = "test", min_seeds: int = MIN_SEEDS,
                     margin: float = MARGIN) -> str:
    """The claim, its source, and the verdict with each contrast's interval, as Markdown."""
    c = get_claim(key)
    t = verdicts(frame, key, split=split, min_seeds=min_seeds, margin=margin)
    where, quote = c.source
    lines = [f"**Claim:** {c.text} (*{where}*: \"{quote}\").", "",
             f"**Verdict: {claim_verdict(t)}** ({c.category}, {split} split; paired over seeds, 95 % intervals"
             + (", Holm-corrected across the contrasts" if len(t) > 1 else "") + "):", ""]
    for _, r in t.iterrows():
        iv = f"{r['difference']:+.1f}" + (f" [{r['lo']:+.1f}, {r['hi']:+.1f}]" if r["seeds"] > 1 else "")
        lines.append(f"- {r['design']} minus {r['control']}: {iv} points over {r['seeds']} seeds: {r['verdict']}")
    lines += ["", f"Reproduced: the design is ahead (p < 0.05); not reproduced: the interval stays below "
                  f"+{margin:g} point; inconclusive otherwise, and always with fewer than {min_seeds} seeds."]
    return "\n".join(lines)


def test_claim(key: str, seeds, budget: str, *, executor: str = "inprocess", workers: int = 1, threads: int = 1,
               store=None, progress: bool = True) -> tuple[pd.DataFrame, str]:
    """Train the claim study's missing runs (:func:`run_study`; the shared store reuses any run another study
    made) and return its contrasts (:func:`verdicts`) and the verdict as Markdown (:func:`verdict_markdown`)."""
    from .execute import describe_result, run_study
    from .frames import accuracy_frame

    study = claim_study(key, seeds, budget, store)
    result = run_study(study, executor=executor, workers=workers, threads=threads, progress=progress)
    if progress:
        print(describe_result(result, study))
    frame = accuracy_frame(study)
    return verdicts(frame, key), verdict_markdown(frame, key)


test_claim.__test__ = False  # a library function, not a pytest test

__all__ = ["Claim", "CLAIMS", "MARGIN", "VERDICTS", "get_claim", "claim_study", "verdicts", "claim_verdict",
           "verdict_markdown", "test_claim"]
