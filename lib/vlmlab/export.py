"""The built-in world written out for other models: PNG images with LLaVA-format JSON, or a Hugging Face
``datasets`` directory (``vlmlab export``).

Every row's id names its world seed, split and index (``world-s0-test-000012``), so that ``vlmlab score`` can
rebuild the question, its answer set and its category from the id alone.
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

FORMATS = ("llava", "hf")
EXPORT_SPLITS = ("train", "val", "test", "compositional")
_ID = re.compile(r"world-s(\d+)-([a-z]+)-(\d+)")


def world_id(seed: int, split: str, index: int) -> str:
    return f"world-s{seed}-{split}-{index:06d}"


def parse_world_id(text: str) -> tuple[int, str, int] | None:
    """(seed, split, index) of an exported row's id, or None when it is not one."""
    m = _ID.fullmatch(text)
    if m is None or m.group(2) not in EXPORT_SPLITS:
        return None
    return int(m.group(1)), m.group(2), int(m.group(3))


def _png(image) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")  # lossless: a model reads the pixels vlmlab's models read
    return buf.getvalue()


def world_rows(seed: int, split: str, n: int):
    """The first ``n`` samples of a split as plain rows (the evaluator reads the same ones, in the same order)."""
    from .world import World, wording

    world = World(seed=seed)
    for i in range(n):
        s = world.sample(split, i)
        yield {"id": world_id(seed, split, i), "image": s.image, "question": s.qa.question, "answer": s.qa.answer,
               "category": s.qa.category, "answers": list(s.qa.answers), "wording": wording(s.qa.question, world.config)}


def _write_llava(out: Path, split: str, rows) -> Path:
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    entries = []
    for r in rows:
        name = f"images/{r['id']}.png"
        (out / name).write_bytes(_png(r["image"]))
        # the human turn is the bare question after the image: a model's own instruction template is its to add
        entries.append({"id": r["id"], "image": name,
                        "conversations": [{"from": "human", "value": f"<image>\n{r['question']}"},
                                          {"from": "gpt", "value": r["answer"]}],
                        "category": r["category"], "answers": r["answers"], "wording": r["wording"]})
    path = out / f"{split}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(entries, indent=1))
    tmp.replace(path)
    return path


def _write_hf(out: Path, split: str, rows) -> Path:
    from datasets import Dataset, Features, Image, Sequence, Value

    cols = {k: [] for k in ("id", "image", "question", "answer", "category", "answers", "wording")}
    for r in rows:
        for k in cols:
            cols[k].append({"bytes": _png(r["image"]), "path": f"{r['id']}.png"} if k == "image" else r[k])
    features = Features({"id": Value("string"), "image": Image(), "question": Value("string"),
                         "answer": Value("string"), "category": Value("string"),
                         "answers": Sequence(Value("string")), "wording": Value("string")})
    path = out / split
    Dataset.from_dict(cols, features=features).save_to_disk(str(path))
    return path


def export_world(out: str | Path, split: str = "test", fmt: str = "llava", seed: int = 0,
                 per_category: int | None = None, budget: str = "default") -> Path:
    """Write the first ``per_category`` questions per category of a world split (default: as many as the
    budget's evaluation asks) under ``out``: ``<split>.json`` and ``images/`` (llava), or the ``datasets``
    directory ``<split>/`` (hf). Returns the JSON file or the dataset directory."""
    from .budgets import get_budget
    from .checks import check_seed
    from .world import CATEGORIES

    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}; allowed values: {list(FORMATS)}")
    if split not in EXPORT_SPLITS:
        raise ValueError(f"split={split!r}; allowed values: {list(EXPORT_SPLITS)}")
    check_seed("seed", seed)
    if per_category is None:
        per_category = get_budget(budget).eval_per_category
    if not isinstance(per_category, int) or isinstance(per_category, bool) or per_category < 1:
        raise ValueError(f"per_category={per_category!r}; expected a positive int")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = world_rows(seed, split, per_category * len(CATEGORIES))
    return (_write_llava if fmt == "llava" else _write_hf)(out, split, rows)


def cmd_export(a) -> None:
    path = export_world(a.out, a.split, a.format, a.seed, a.per_category, a.budget)
    print(f"wrote the world's {a.split} split (seed {a.seed}, format {a.format}): {path}")


def add_cli(sub) -> None:
    s = sub.add_parser("export", help="write a world split for other models: PNG + LLaVA JSON, or an HF dataset")
    s.add_argument("out", help="folder: <split>.json and images/ (llava), or the dataset directory <split>/ (hf)")
    s.add_argument("--split", default="test", help=f"one of {', '.join(EXPORT_SPLITS)}")
    s.add_argument("--format", default="llava", help=f"one of {', '.join(FORMATS)}")
    s.add_argument("--seed", type=int, default=0, help="world seed (a run of seed s is evaluated on world s)")
    s.add_argument("--budget", default="default", help="questions per category: as this budget's evaluation asks")
    s.add_argument("--per-category", type=int, help="questions per category (overrides --budget)")
    s.set_defaults(fn=cmd_export)
