"""The workbook's studies: the ablations of notebooks 20-23 and the comparison of notebook 30 (and
``tools/arch_table.py``), built here so they agree."""
from __future__ import annotations

from dataclasses import dataclass

from .store import Case, Study


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


@dataclass(frozen=True)
class Headline:
    """An ablation's headline contrast: ``a`` minus ``b`` in ``category``, paired over seeds (the docs report it
    from 5 seeds; the notebook shows every contrast of its study)."""

    key: str
    text: str
    a: Case
    b: Case
    category: str = "overall"
    notebook: str = ""


def named_case(arch: str, knobs: dict, name: str) -> Case:
    """A case labelled by its design and its own name (column ``variant``): a claim's or a headline's side."""
    return Case(arch, knobs, {"arch": arch, "variant": name}, name)


HEADLINES = {h.key: h for h in [
    Headline("table_size", "Ovis: a visual table of 4,096 entries against 256",
             named_case("ovis", {"table_size": 4096}, "Ovis, K = 4096"), named_case("ovis", {}, "Ovis, K = 256"),
             notebook="20_ablation_table_size"),
    Headline("indexings", "Ovis: each patch a dense mix of the table's rows against one hard index",
             named_case("ovis", {}, "Ovis, dense"), named_case("ovis", {"indexings": 1}, "Ovis, one index"),
             notebook="21_ablation_indexings"),
    Headline("attention", "LLaViT: bidirectional attention among an image's tokens against causal",
             named_case("llavit", {}, "LLaViT, bidirectional"),
             named_case("llavit", {"attention": "causal"}, "LLaViT, causal"),
             notebook="22_ablation_attention"),
    Headline("features", "X-Former: CL and MIM features against CL alone, on structural questions",
             named_case("xformer", {}, "X-Former, CL+MIM"), named_case("xformer", FEATURE_KNOBS["xformer"]["cl"][1],
                                                              "X-Former, CL"),
             category="structural", notebook="23_ablation_features"),
]}
