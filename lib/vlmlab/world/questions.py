"""Questions with one-word answers, each generated together with a scene that makes its answer true.

The answer is drawn first, uniformly from the question's answer set, independently of the question's wording,
and the scene is then built to satisfy it. A blind model (question only) therefore cannot beat chance: the
question text carries no information about the answer. ``vlmlab.world.dataset`` measures this (data/README.md).

Categories mirror GQA's semantic/structural split that X-Former reports:

- semantic: ``attribute`` (color of a shape), ``object`` (shape of a color), ``existence`` (is there a X Y),
  ``texture`` (the fine detail captions omit)
- structural: ``spatial`` (left of / above), ``counting`` (0-3), ``comparison`` (bigger / same color),
  ``logical`` (and / or)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..checks import article
from .scenes import Obj, ObjectSampler, WorldConfig, place

SEMANTIC = ("attribute", "object", "existence", "texture")
STRUCTURAL = ("spatial", "counting", "comparison", "logical")
CATEGORIES = SEMANTIC + STRUCTURAL
NUMBERS = ("zero", "one", "two", "three")
TEMPLATE_WORDS = ["what", "color", "shape", "texture", "is", "the", "object", "there", "a", "?", "yes", "no",
                  "left", "of", "above", "how", "many", "objects", "are", "bigger", "than", "same", "as", "or", "and",
                  "size", "row", "column", "in", *NUMBERS]
# single-object look-ups: never evaluated, asked in LM pretraining and (``Budget.vlm_grounding``) in the VLMs'
# instruction data, so that a comparison of two objects rests on look-ups that were supervised on their own
LOOKUPS = ("size", "row", "column")


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    category: str
    answers: tuple[str, ...]  # the answer set this question's answer was drawn from (chance = 1/len)

    @property
    def family(self) -> str:
        return "semantic" if self.category in SEMANTIC else "structural"


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _n_objects(rng, w: WorldConfig, at_least: int) -> int:
    lo = max(w.min_objects, at_least)
    return int(rng.integers(lo, w.max_objects + 1))


def _fill(rng, smp: ObjectSampler, w, objs, n, **exclude):
    while len(objs) < n:
        objs.append(smp.draw(rng, **exclude))
    return objs


def q_attribute(rng, w, smp):
    target = smp.draw(rng)  # its color is uniform over colors (up to the held-out pairs)
    objs = _fill(rng, smp, w, [target], _n_objects(rng, w, 1), not_shapes=(target.shape,))
    answers = tuple(c for c in w.colors if smp.allowed(target.shape, c))  # held-out pairs never answer
    return objs, None, QA(f"what color is the {target.shape} ?", target.color, "attribute", answers)


def q_object(rng, w, smp):
    target = smp.draw(rng)
    objs = _fill(rng, smp, w, [target], _n_objects(rng, w, 1), not_colors=(target.color,))
    answers = tuple(s for s in w.shapes if smp.allowed(s, target.color))
    return objs, None, QA(f"what shape is the {target.color} object ?", target.shape, "object", answers)


def q_texture(rng, w, smp):
    target = smp.draw(rng)
    objs = _fill(rng, smp, w, [target], _n_objects(rng, w, 1), not_colors=(target.color,))
    return objs, None, QA(f"what texture is the {target.color} object ?", target.texture, "texture", w.textures)


def q_existence(rng, w, smp):
    probe = smp.draw(rng)
    yes = bool(rng.integers(2))
    pair = ((probe.shape, probe.color),)
    objs = [probe] if yes else []
    objs = _fill(rng, smp, w, objs, _n_objects(rng, w, 1), not_pairs=pair)
    rng.shuffle(objs)
    return objs, None, QA(f"is there {article(probe.color)} {probe.shape} ?", "yes" if yes else "no", "existence",
                          ("yes", "no"))


# the spatial relations asked: two ordered ones, and a symmetric control (``World(relations=...)``) that needs the
# same two look-ups but an equality, not an order
RELATIONS = ("left", "above")
CONTROL_RELATIONS = ("same column",)
RELATION_TEXT = {"left": "left of", "above": "above", "same column": "in the same column as"}


def q_spatial(rng, w, smp, relations=RELATIONS):
    a = smp.draw(rng)
    b = smp.draw(rng, not_shapes=(a.shape,))
    rel = _pick(rng, relations)
    yes = bool(rng.integers(2))
    g = w.grid
    while True:  # two distinct cells whose order along the axis matches the answer (strict for yes)
        ra, ca, rb, cb = (int(v) for v in rng.integers(0, g, size=4))
        if (ra, ca) == (rb, cb):
            continue
        along = (ca < cb) if rel == "left" else (ra < rb) if rel == "above" else (ca == cb)
        if along == yes:
            break
    objs = _fill(rng, smp, w, [a, b], _n_objects(rng, w, 2), not_shapes=(a.shape, b.shape))
    taken = {(ra, ca), (rb, cb)}
    free = [(r, c) for r in range(g) for c in range(g) if (r, c) not in taken]
    extra = [free[i] for i in rng.choice(len(free), size=len(objs) - 2, replace=False)]
    q = f"is the {a.shape} {RELATION_TEXT[rel]} the {b.shape} ?"
    return objs, [(ra, ca), (rb, cb), *extra], QA(q, "yes" if yes else "no", "spatial", ("yes", "no"))


def q_counting(rng, w, smp):
    k = int(rng.integers(0, min(len(NUMBERS), w.max_objects + 1)))
    if rng.integers(2):
        color = _pick(rng, w.colors)
        objs = [smp.draw(rng, color=color) for _ in range(k)]
        objs = _fill(rng, smp, w, objs, _n_objects(rng, w, max(k, 1)), not_colors=(color,))
        q = f"how many {color} objects are there ?"
    else:
        shape = _pick(rng, w.shapes)
        objs = [smp.draw(rng, shape=shape) for _ in range(k)]
        objs = _fill(rng, smp, w, objs, _n_objects(rng, w, max(k, 1)), not_shapes=(shape,))
        q = f"how many {shape} objects are there ?"
    return objs, None, QA(q, NUMBERS[k], "counting", NUMBERS[: w.max_objects + 1])


def q_comparison(rng, w, smp):
    a = smp.draw(rng)
    yes = bool(rng.integers(2))
    if rng.integers(2):
        # bigger: yes iff a large and b small
        if yes:
            a = smp.draw(rng, shape=a.shape, size="large")
            b = smp.draw(rng, not_shapes=(a.shape,), size="small")
        else:
            a = smp.draw(rng, shape=a.shape)
            b = smp.draw(rng, not_shapes=(a.shape,), size="large" if a.size == "large" else None)
        q = f"is the {a.shape} bigger than the {b.shape} ?"
    else:
        if yes:
            b = smp.draw(rng, not_shapes=(a.shape,), color=a.color)
        else:
            b = smp.draw(rng, not_shapes=(a.shape,), not_colors=(a.color,))
        q = f"is the {a.shape} the same color as the {b.shape} ?"
    objs = _fill(rng, smp, w, [a, b], _n_objects(rng, w, 2), not_shapes=(a.shape, b.shape))
    return objs, None, QA(q, "yes" if yes else "no", "comparison", ("yes", "no"))


def q_logical(rng, w, smp):
    a = smp.draw(rng)
    b = smp.draw(rng, not_pairs=((a.shape, a.color),))
    op = _pick(rng, ("and", "or"))
    yes = bool(rng.integers(2))
    if op == "and":
        present = [(True, True)] if yes else [(True, False), (False, True), (False, False)]
    else:
        present = [(True, False), (False, True), (True, True)] if yes else [(False, False)]
    has_a, has_b = present[int(rng.integers(len(present)))]
    objs = ([a] if has_a else []) + ([b] if has_b else [])
    pairs = ((a.shape, a.color), (b.shape, b.color))
    objs = _fill(rng, smp, w, objs, _n_objects(rng, w, max(len(objs), 1)), not_pairs=pairs)
    rng.shuffle(objs)
    q = f"is there {article(a.color)} {a.shape} {op} {article(b.color)} {b.shape} ?"
    return objs, None, QA(q, "yes" if yes else "no", "logical", ("yes", "no"))


GENERATORS = {
    "attribute": q_attribute, "object": q_object, "existence": q_existence, "texture": q_texture,
    "spatial": q_spatial, "counting": q_counting, "comparison": q_comparison, "logical": q_logical,
}


def make_question(rng: np.random.Generator, w: WorldConfig, smp: ObjectSampler, category: str,
                  relations=RELATIONS):
    """Draw (scene, QA) for one category. In the compositional split, resample until a held-out pair appears."""
    holdout = set(w.holdout)
    opts = {"relations": relations} if category == "spatial" else {}
    for _ in range(200):
        objs, cells, qa = GENERATORS[category](rng, w, smp, **opts)
        if smp.compositional and not any((o.shape, o.color) in holdout for o in objs):
            continue
        return place(rng, w, objs, cells), qa
    raise RuntimeError(f"could not draw a compositional {category} question")


def _words(question: str) -> list[str]:
    """A templated question's words, "an" read as "a" (the article follows the colour; the tokenizer folds it too)."""
    return ["a" if t == "an" else t for t in question.split()]


def wording(question: str, w: WorldConfig) -> str:
    """The question's template: its shape and colour words replaced by ``<shape>`` / ``<color>``, so that questions
    asked the same way group together ("is the circle left of the square ?" -> "is the <shape> left of the
    <shape> ?"). Several categories are asked in two wordings (spatial: left of / above; comparison: bigger than /
    same color as; counting: by colour / by shape; logical: and / or), and a category's mean can hide a gap
    between them (docs/lab-notes/oracle-wordings.md)."""
    slots = {**dict.fromkeys(w.shapes, "<shape>"), **dict.fromkeys(w.colors, "<color>")}
    return " ".join(slots.get(t, t) for t in _words(question))


# ---- answering any templated question about any scene (used to ask a scene several questions) ----------------
def solve(question: str, scene) -> str | None:
    """The answer of a templated question on a scene, or None when the question is ill-posed there (a referent
    that is missing or not unique, a count beyond the answer set)."""
    q = _words(question)

    def unique(pred):
        hits = [o for o in scene if pred(o)]
        return hits[0] if len(hits) == 1 else None

    yn = lambda b: "yes" if b else "no"  # noqa: E731
    if q[:4] == ["what", "color", "is", "the"]:
        o = unique(lambda o: o.shape == q[4])
        return o.color if o else None
    if q[:2] == ["what", "shape"] or q[:2] == ["what", "texture"]:
        o = unique(lambda o: o.color == q[4])
        return None if o is None else (o.shape if q[1] == "shape" else o.texture)
    if q[:2] == ["how", "many"]:
        n = sum(1 for o in scene if q[2] in (o.color, o.shape))
        return NUMBERS[n] if n < len(NUMBERS) else None
    if q[:3] == ["is", "there", "a"]:
        has = lambda c, s: any(o.color == c and o.shape == s for o in scene)  # noqa: E731
        if len(q) == 6:
            return yn(has(q[3], q[4]))
        a, b = has(q[3], q[4]), has(q[7], q[8])
        return yn(a and b) if q[5] == "and" else yn(a or b)
    if q[:2] == ["is", "the"]:
        a, b = unique(lambda o: o.shape == q[2]), unique(lambda o: o.shape == q[-2])
        if a is None or b is None or a is b:
            return None
        if q[3] == "left":
            return yn(a.col < b.col)
        if q[3:7] == ["in", "the", "same", "column"]:
            return yn(a.col == b.col)
        if q[3] == "above":
            return yn(a.row < b.row)
        if q[3] == "bigger":
            return yn(a.size == "large" and b.size == "small")
        if q[3] == "the" and q[4] == "same":
            return yn(a.color == b.color)
    if q[:2] == ["what", "size"] or (q[:2] in (["what", "row"], ["what", "column"]) and q[-2] == "in"):
        o = unique(lambda o: o.shape == q[4])
        if o is None:
            return None
        return o.size if q[1] == "size" else (f"r{o.row}" if q[1] == "row" else f"c{o.col}")
    raise ValueError(f"not a template question: {question!r}")


def lookup_question(what: str, shape: str) -> str:
    """The look-up of one attribute (``LOOKUPS``) of the object of a given shape: "what column is the circle in ?"."""
    if what not in LOOKUPS:
        raise ValueError(f"what={what!r}; allowed: {LOOKUPS}")
    return f"what size is the {shape} ?" if what == "size" else f"what {what} is the {shape} in ?"


def ask_lookup(rng: np.random.Generator, scene) -> tuple[str, str] | None:
    """A look-up question about one uniquely-shaped object of the scene (None when no shape occurs once)."""
    shapes = [o.shape for o in scene]
    single = [o for o in scene if shapes.count(o.shape) == 1]
    if not single:
        return None
    q = lookup_question(_pick(rng, LOOKUPS), single[int(rng.integers(len(single)))].shape)
    return q, solve(q, scene)


def _askable(scene) -> dict[str, bool]:
    """Which categories can have a well-posed question on this scene at all (see ``solve``): a question names its
    referents by a shape or colour that must occur exactly once; a two-object question needs two such shapes.
    Categories not listed (existence, counting, logical) can always be asked."""
    once = lambda values: sum(1 for v in set(values) if values.count(v) == 1)  # noqa: E731
    shapes, colors = once([o.shape for o in scene]), once([o.color for o in scene])
    return {"attribute": shapes >= 1, "object": colors >= 1, "texture": colors >= 1, "spatial": shapes >= 2,
            "comparison": shapes >= 2}


def ask_more(rng: np.random.Generator, w: WorldConfig, scene, k: int) -> list[tuple[str, str]]:
    """k further well-posed questions (with answers) about a given scene, any category; referents are drawn
    from the scene's own objects half of the time so that yes-answers and non-zero counts are common."""
    out = []
    kinds = CATEGORIES + ("lookup",)  # one extra question in nine is a single-object look-up
    cats = [_pick(rng, kinds) for _ in range(k)]  # categories first, so ill-posed ones are not rarer
    askable = _askable(scene)
    askable["lookup"] = askable["attribute"]  # a look-up names one object by its shape, as "what color is the X"
    for _ in range(50 * k):
        if len(out) == k:
            break
        cat = cats[len(out)]
        if not askable.get(cat, True):  # no draw could ever be well-posed: the retries would only burn time
            break
        pick_obj = lambda: scene[int(rng.integers(len(scene)))]  # noqa: E731
        rand_s = lambda: pick_obj().shape if rng.random() < 0.5 else _pick(rng, w.shapes)  # noqa: E731
        rand_c = lambda: pick_obj().color if rng.random() < 0.5 else _pick(rng, w.colors)  # noqa: E731
        if cat == "lookup":
            q = lookup_question(_pick(rng, LOOKUPS), rand_s())
        elif cat == "attribute":
            q = f"what color is the {rand_s()} ?"
        elif cat in ("object", "texture"):
            q = f"what {'shape' if cat == 'object' else 'texture'} is the {rand_c()} object ?"
        elif cat == "existence":
            o = pick_obj()
            c = o.color if rng.random() < 0.5 else rand_c()
            q = f"is there {article(c)} {o.shape if rng.random() < 0.5 else rand_s()} ?"
        elif cat == "spatial":
            q = f"is the {rand_s()} {_pick(rng, ('left of', 'above'))} the {rand_s()} ?"
        elif cat == "counting":
            q = f"how many {rand_c() if rng.random() < 0.5 else rand_s()} objects are there ?"
        elif cat == "comparison":
            q = (f"is the {rand_s()} bigger than the {rand_s()} ?" if rng.random() < 0.5
                 else f"is the {rand_s()} the same color as the {rand_s()} ?")
        else:
            c1, s1, op, c2, s2 = rand_c(), rand_s(), _pick(rng, ('and', 'or')), rand_c(), rand_s()
            q = f"is there {article(c1)} {s1} {op} {article(c2)} {s2} ?"
        a = solve(q, scene)
        if a is not None:
            out.append((q, a))
    return out
