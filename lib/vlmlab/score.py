"""Any model's answers to the exported world, scored as vlmlab scores its own (``vlmlab score``).

``PREDICTIONS.jsonl`` holds one ``{"id": ..., "answer": ...}`` per line, with the ids of ``vlmlab export``; each
id names its world seed, split and index, from which the question, its category and its answer set are drawn
again. An answer is right when, normalized, it is the question's one-word answer.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from .export import parse_world_id

# digits as the world's number words, so that "2" and "two" read alike (the world's counts go to three)
_NUMBER_WORDS = {"0": "zero", "1": "one", "2": "two", "3": "three"}
_ARTICLES = {"a", "an", "the"}


def normalize(answer: str) -> str:
    """Lower case, punctuation dropped, leading articles dropped, digits as number words: "The Red." -> "red"."""
    words = re.sub(r"[^\w\s]", " ", answer.lower()).split()
    while words and words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(_NUMBER_WORDS.get(w, w) for w in words)


def read_predictions(path: str | Path) -> list[tuple[tuple[int, str, int], str]]:
    """[((seed, split, index), answer)] of a predictions file, checked line by line: a line that is not a JSON
    object with a world ``id`` and a string ``answer``, a repeated id or a second world seed raises ValueError
    naming the file and the line (numbered from 1)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file; expected a JSONL file of {{\"id\", \"answer\"}} lines") from None
    out, seen = [], {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}, line {n}"
        try:
            row = json.loads(line)
        except ValueError:
            raise ValueError(f"{where}: not JSON; expected an object {{\"id\": ..., \"answer\": ...}}") from None
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(row.get("answer"), str):
            raise ValueError(f"{where}: expected an object with a string 'id' and a string 'answer', got {line[:80]!r}")
        key = parse_world_id(row["id"])
        if key is None:
            raise ValueError(f"{where}: id {row['id']!r} is not an exported world id (world-s<seed>-<split>-<index>, "
                             f"as vlmlab export writes them)")
        if key in seen:
            raise ValueError(f"{where}: id {row['id']!r} repeats line {seen[key]}")
        if out and key[0] != out[0][0][0]:
            raise ValueError(f"{where}: world seed {key[0]}, but line {seen[out[0][0]]} has seed {out[0][0][0]}; "
                             f"score one world seed at a time")
        seen[key] = n
        out.append((key, row["answer"]))
    if not out:
        raise ValueError(f"{path}: no predictions; expected one {{\"id\", \"answer\"}} object per line")
    return out


def score(predictions: list[tuple[tuple[int, str, int], str]]) -> dict:
    """{"seed", "n": {split: questions}, "metrics": {split: accuracies}, "chance": accuracies, "valid": {split:
    shares}}, with accuracies as the evaluator's {category | semantic | structural | overall: value}. Questions
    are taken in index order, the evaluator's, so that the means are summed alike."""
    from .evaluate import summarize
    from .world import World

    seed = predictions[0][0][0]
    world = World(seed=seed)
    hits, valid, chance = (defaultdict(lambda: defaultdict(list)) for _ in range(3))
    for (_, split, index), answer in sorted(predictions, key=lambda p: (p[0][1], p[0][2])):
        qa = world.sample(split, index, image=False).qa
        said = normalize(answer)
        hits[split][qa.category].append(said == qa.answer)
        valid[split][qa.category].append(said in qa.answers)
        chance[split][qa.category].append(1.0 / len(qa.answers))
    means = lambda d: summarize({k: sum(v) / len(v) for k, v in d.items()})  # noqa: E731
    # chance as the evaluator reports it, from the test split's answer sets; from the split scored when no test
    # question is (the compositional split's answer sets admit the held-out pairs)
    return {"seed": seed, "n": {s: sum(map(len, h.values())) for s, h in hits.items()},
            "metrics": {s: means(h) for s, h in hits.items()}, "chance": means(chance.get("test") or
                                                                            next(iter(chance.values()))),
            "valid": {s: means(v) for s, v in valid.items()}}


def references_from_record(path: str | Path, seed: int) -> tuple[dict, str]:
    """The floor and ceiling a run record holds, and the line that says where they came from."""
    from .jsonio import load_record

    rec = load_record(path)
    cfg = rec["config"]
    if cfg["seed"] != seed:
        raise ValueError(f"{path}: the record's world seed is {cfg['seed']}, the predictions' is {seed}; "
                         f"its floor and ceiling were measured on another world")
    if not rec.get("floor") or not rec.get("ceiling"):
        raise ValueError(f"{path}: the record has no floor and ceiling (it was run with references=False)")
    n = rec.get("budget", {}).get("eval_per_category")
    return ({"floor": rec["floor"], "ceiling": rec["ceiling"]},
            f"floor and ceiling: from the record {path} (world seed {seed}, budget {cfg['budget']!r}, "
            f"{n} questions per category and split)")


def references_from_cache(seed: int, budget: str = "default", device: str = "auto", precision: str = "fp32",
                          progress: bool = True) -> tuple[dict, str]:
    """The floor and ceiling of a world seed and budget from the reference cache (``vlmlab.runs._references``),
    computed and cached there first when absent, and the line that says which."""
    from .backbones import load_backbones
    from .budgets import get_budget
    from .device import pick_device
    from .runs import _references, _references_path
    from .world import World, WorldConfig

    b, dev = get_budget(budget), pick_device(device)
    bb = load_backbones(WorldConfig(), b, device=dev, progress=progress, kinds=("lm",))
    world = World(WorldConfig(), seed=seed)
    path = _references_path(bb, world, b, precision)
    how = "from the reference cache" if path.is_file() else "computed now and cached at"
    refs = _references(bb, world, b, dev, precision, progress)
    return ({"floor": refs["floor"], "ceiling": refs["ceiling"]},
            f"floor and ceiling: {how} {path} (world seed {seed}, budget {budget!r}, {b.eval_per_category} "
            f"questions per category and split)")


def print_score(result: dict, refs: dict | None, note: str) -> None:
    from .results import accuracy_table

    order = ["test", "compositional", "val", "train"]
    for split in sorted(result["metrics"], key=order.index):
        rec = {"metrics": result["metrics"], "chance": result["chance"]}
        rec.update({k: v for k, v in (refs or {}).items() if split in v})
        print(f"\naccuracy (%) on the {split} split, {result['n'][split]} predictions, world seed {result['seed']}:")
        print(accuracy_table(rec, split).to_string())
        print(f"answers inside the question's answer set: {100 * result['valid'][split]['overall']:.1f} %")
    print(f"\n{note}")


def cmd_score(a) -> None:
    result = score(read_predictions(a.predictions))
    if a.no_references:
        refs, note = None, "floor and ceiling: not shown (--no-references)"
    elif a.record:
        refs, note = references_from_record(a.record, result["seed"])
    else:
        refs, note = references_from_cache(result["seed"], a.budget, a.device)
    print_score(result, refs, note)
    if a.out:
        from .jsonio import write_json_atomic

        write_json_atomic(a.out, {**result, "floor": (refs or {}).get("floor"), "ceiling": (refs or {}).get("ceiling"),
                                  "references": note})
        print(f"scores: {a.out}")


def add_cli(sub) -> None:
    s = sub.add_parser("score", help="score a model's answers to an exported world (PREDICTIONS.jsonl: id, answer) "
                                     "beside chance, the blind floor and the text-oracle ceiling")
    s.add_argument("predictions", help="JSONL, one {\"id\": ..., \"answer\": ...} per line (ids from vlmlab export)")
    refs = s.add_mutually_exclusive_group()
    refs.add_argument("--record", help="take the floor and ceiling from this run record (same world seed)")
    refs.add_argument("--no-references", action="store_true", help="show chance only")
    s.add_argument("--budget", default="default",
                   help="otherwise take them from the reference cache of this budget (computed there when absent)")
    s.add_argument("--device", default="auto")
    s.add_argument("--out", help="also write the scores as JSON here")
    s.set_defaults(fn=cmd_score)
