"""The documents: sizes a reader can take in, lab notes in their place, and nothing that points outside the
repository (issue 28, parts 2 and 3)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "docs" / "lab-notes"
# documents a reader of this repository does not have; spelled in pieces so that this file does not match itself
OUTSIDE = ("ARCHITECTURES" + ".md", "DESIGN" + ".md", "shared" + "/specs")
TEXT_SUFFIXES = {".py", ".md", ".ipynb", ".txt", ".toml", ".cfg", ".yml", ".yaml", ".json", ".html", ".sh", ""}


def words(path: Path) -> int:
    """Words as a reader counts them: whitespace-separated tokens with a letter or digit (Markdown table pipes
    and rules are not words)."""
    return sum(1 for tok in path.read_text().split() if re.search(r"[A-Za-z0-9]", tok))


def repository_files() -> list[Path]:
    """Tracked files and new ones git does not ignore: what a clone (or the next commit) holds."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    files = [ROOT / p for p in out.split("\0") if p]
    return [p for p in files if p.is_file() and p.suffix in TEXT_SUFFIXES and p.stat().st_size < 5_000_000]


def test_readme_is_at_most_1200_words():
    assert words(ROOT / "README.md") <= 1200
    assert len((ROOT / "README.md").read_text().split()) <= 1200  # also as `wc -w` counts, table cells included


def test_dataset_card_is_at_most_1500_words():
    assert words(ROOT / "data" / "README.md") <= 1500


def test_readme_has_no_note_n_reference():
    assert not re.findall(r"\bnotes? \d+", (ROOT / "README.md").read_text())


def test_nothing_refers_to_documents_outside_the_repository():
    found = []
    for p in repository_files():
        text = p.read_text(errors="replace")
        found += [f"{p.relative_to(ROOT)}: {name}" for name in OUTSIDE if name in text]
    assert not found, found


def test_no_reference_to_the_numbered_notes_that_moved_to_lab_notes():
    rx = re.compile(r"data/README(\.md)?,?\s+notes?\s+\d+")
    found = [str(p.relative_to(ROOT)) for p in repository_files() if rx.search(p.read_text(errors="replace"))]
    assert not found, found


def test_every_lab_note_opens_with_question_answer_numbers_and_is_indexed():
    index = (NOTES / "README.md").read_text()
    notes = sorted(p for p in NOTES.glob("*.md") if p.name != "README.md")
    assert notes
    for p in notes:
        lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
        assert lines[0].startswith("# "), p.name
        heads = [re.match(r"\*\*(\w+)\.\*\*", ln) for ln in lines[1:4]]
        assert [h.group(1) if h else None for h in heads] == ["Question", "Answer", "Numbers"], p.name
        assert f"({p.name})" in index, f"{p.name} is not in docs/lab-notes/README.md"


def test_links_to_lab_notes_and_between_docs_resolve():
    missing = []
    for p in repository_files():  # "docs/lab-notes/<name>.md" named anywhere (code, notebooks, docs)
        for name in re.findall(r"docs/lab-notes/([\w.-]+\.md)", p.read_text(errors="replace")):
            if not (NOTES / name).is_file():
                missing.append(f"{p.relative_to(ROOT)} -> docs/lab-notes/{name}")
    docs = [ROOT / "README.md", ROOT / "data" / "README.md", *(ROOT / "docs").glob("*.md"), *NOTES.glob("*.md"),
            ROOT / "data" / "backbones" / "README.md"]
    for p in docs:  # relative Markdown links
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", p.read_text()):
            if "://" not in target and not (p.parent / target).exists():
                missing.append(f"{p.relative_to(ROOT)} -> {target}")
    assert not missing, missing


def test_dataset_card_tables_are_generated():
    card = (ROOT / "data" / "README.md").read_text()
    assert "<!-- floor-ceiling:begin -->" in card and "<!-- floor-ceiling:end -->" in card
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "card_table.py"), "--check"], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_readme_is_a_front_door():
    """The two commands, a reading path over every numbered notebook, the generated headline table, and the way
    on to the docs (issue 28, part 1)."""
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert "<!-- comparison-headline:begin -->" in readme and "<!-- comparison-headline:end -->" in readme
    results = (ROOT / "docs" / "results.md").read_text()  # the same table with every cell's spread
    assert "](docs/results.md)" in readme and "<!-- comparison:begin -->" in results
    path = readme.split("<!-- reading-path:begin -->", 1)[1].split("<!-- reading-path:end -->", 1)[0]
    numbered = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [n for n in numbered if f"`{n}`" not in path] == []
    for page in ("docs/benchmarks.md", "docs/guide.md", "docs/sweeps.md", "docs/course.md", "docs/lab-notes/README.md"):
        assert f"]({page})" in readme, page


def test_benchmarks_page_is_generated_from_the_json_files(tmp_path):
    """docs/benchmarks.md's numbers come from benchmarks/*.json: a changed file changes the page."""
    import json

    from vlmlab.doctables import render_text

    results, bench = tmp_path / "docs" / "results", tmp_path / "benchmarks"
    results.mkdir(parents=True)
    bench.mkdir()
    real = json.loads((ROOT / "benchmarks" / "results-default.json").read_text())
    real["world_samples_per_s"] = 1234.4
    real["llava_train"]["fp32"]["fraction_of_peak"] = 0.5123
    (bench / "results-default-test.json").write_text(json.dumps(real))
    (bench / "end-to-end.json").write_text(json.dumps({"runs": [
        {"command": "make run", "start": "fresh clone", "backbones": "shipped", "cpu": "avx2", "parts": "all of it",
         "minutes_min": 3.25, "minutes_max": 4.0, "runs": 2}]}))
    doc = "x\n<!-- benchmarks:begin -->\nold\n<!-- benchmarks:end -->\n"
    out = render_text(doc, results)
    assert "old" not in out and "`results-default-test.json`" in out
    assert "| world generation, samples/s | 1,234 |" in out
    assert "| LLaVA training fp32, % of the fp32 peak | 51.2 |" in out
    assert "| `make run` | fresh clone | shipped | avx2 | 3.2-4.0 | 2 | all of it |" in out
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    assert "<!-- benchmarks:begin -->" in page
    assert render_text(page) == page  # the committed page is what its files give
