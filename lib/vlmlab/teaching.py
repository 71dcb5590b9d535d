"""Student copies and autograders of the numbered notebooks, built with otter-grader (docs/teaching.md).

The exercises live in the notebooks themselves, authored in Otter Assign's notebook format: raw cells
``# BEGIN QUESTION`` / ``# BEGIN SOLUTION`` / ``# BEGIN TESTS`` and their ``END`` twins around a Markdown prompt, a
solution cell (lines ending ``# SOLUTION``, or ``# BEGIN SOLUTION`` blocks, become ``...`` for the student) and
assert-only test cells. Executed as they are, the notebooks are the reference solutions and every test cell runs
as an ordinary assert. This module adds the one assignment configuration they share and runs Otter Assign on
each, so ``make student`` gives, per notebook::

    <out>/<stem>/student/<stem>.ipynb      solutions removed, a ``grader.check("q..")`` cell after each exercise
    <out>/<stem>/student/tests/q*.py       the checks a student can run
    <out>/<stem>/autograder/<stem>.ipynb   the reference solution
    <out>/<stem>/autograder/*.zip          the autograder (``otter run -a <zip> <submission>``)

A ``grader.check`` of an unanswered exercise displays the failed check and the notebook runs on: nothing later in a
notebook reads an answer variable.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import re
import shutil
import sys
from pathlib import Path

import nbformat
import yaml

NUMBERED = re.compile(r"^\d\d_.+\.ipynb$")
# the three kinds of exercise every numbered notebook has, as its prompts name them
KINDS = {"predict": "predict, then run", "knob": "change a knob", "implement": "implement"}
PROMPT = re.compile(r"\*\*Exercise (\d\d)\.(\d+) · (" + "|".join(KINDS.values()) + r")\.\*\*")
# Otter Assign's configuration, shared by every notebook: no execution while building (CI executes the copies at the
# smoke budget instead), tests as files beside each copy, no export cell (its PDF step needs LaTeX)
ASSIGNMENT = {"run_tests": False, "export_cell": False, "init_cell": True, "check_all_cell": False,
              "tests": {"files": True, "ok_format": True}, "generate": True}


def numbered(notebooks: Path) -> list[Path]:
    """The numbered notebooks (``00_quickstart.ipynb`` ...) of a folder, in order."""
    return sorted(p for p in Path(notebooks).glob("*.ipynb") if NUMBERED.match(p.name))


def _raw_header(cell, word: str) -> bool:
    return cell.cell_type == "raw" and bool(re.match(rf"#\s+{word}\b", cell.source, flags=re.IGNORECASE))


def questions(nb) -> list[dict]:
    """The exercises of a notebook: name, kind (a key of KINDS, from the prompt), number of test cells."""
    out, current, in_tests = [], None, False
    for cell in nb.cells:
        if _raw_header(cell, "BEGIN QUESTION"):
            conf = yaml.safe_load(cell.source.split("\n", 1)[1]) or {}
            current = {"name": conf.get("name"), "kind": None, "tests": 0}
            out.append(current)
        elif _raw_header(cell, "END QUESTION"):
            current = None
        elif _raw_header(cell, "BEGIN TESTS"):
            in_tests = True
        elif _raw_header(cell, "END TESTS"):
            in_tests = False
        elif current is not None and cell.cell_type == "markdown" and current["kind"] is None:
            m = PROMPT.search(cell.source)
            current["kind"] = next((k for k, v in KINDS.items() if m and m.group(3) == v), None)
        elif current is not None and in_tests and cell.cell_type == "code":
            current["tests"] += 1
    return out


def master(nb, name: str):
    """The notebook as Otter Assign's master: the shared configuration prepended as its config cell."""
    nb = copy.deepcopy(nb)
    conf = nbformat.v4.new_raw_cell("# ASSIGNMENT CONFIG\n" + yaml.safe_dump({"name": name, **ASSIGNMENT},
                                                                            sort_keys=False))
    nb.cells.insert(0, conf)
    return nb


def build(notebooks: Path, out: Path, names: list[str] | None = None, quiet: bool = True) -> dict[str, Path]:
    """Otter Assign on each numbered notebook (or those of ``names``, stems or file names): {stem: its folder}."""
    from otter.assign import main as assign

    out = Path(out).resolve()
    paths = numbered(notebooks)
    if names:
        want = {Path(n).stem for n in names}
        unknown = want - {p.stem for p in paths}
        if unknown:
            raise ValueError(f"not numbered notebooks of {notebooks}: {sorted(unknown)}")
        paths = [p for p in paths if p.stem in want]
    done = {}
    for path in paths:
        stem = path.stem
        nb = nbformat.read(path, as_version=4)
        if not questions(nb):
            if names:
                raise ValueError(f"{path.name} has no exercise (no '# BEGIN QUESTION' raw cell)")
            print(f"{path.name}: no exercise yet, no student copy", file=sys.stderr)  # a new notebook: skipped
            continue
        dest = out / stem
        shutil.rmtree(dest, ignore_errors=True)
        masters = out / "_masters"
        masters.mkdir(parents=True, exist_ok=True)
        src = masters / path.name
        nbformat.write(master(nb, stem), src)
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
            assign(str(src), str(dest), no_pdfs=True, no_run_tests=True)
        done[stem] = dest
    shutil.rmtree(out / "_masters", ignore_errors=True)
    return done


def autograder_zip(folder: Path) -> Path:
    """The autograder zip Otter Generate wrote into ``<stem>/autograder``."""
    zips = sorted((Path(folder) / "autograder").glob("*.zip"))
    if len(zips) != 1:
        raise FileNotFoundError(f"expected one autograder zip in {folder}/autograder, found {len(zips)}")
    return zips[0]


def grade(folder: Path, submission: Path, parameters: dict | None = None, workdir: Path | None = None):
    """Grade a submission with the folder's autograder (``otter run``, no container), after papermill has set its
    parameters (e.g. ``{"budget": "smoke"}``) without executing it. Returns otter's GradingResults."""
    import papermill as pm
    from otter.run import main as otter_run

    folder, submission = Path(folder), Path(submission)
    workdir = Path(workdir or submission.parent)
    workdir.mkdir(parents=True, exist_ok=True)
    prepared = workdir / submission.name
    pm.execute_notebook(str(submission), str(prepared), parameters=parameters or {}, prepare_only=True,
                        kernel_name="python3", progress_bar=False)
    return otter_run(str(prepared), autograder=str(autograder_zip(folder)), output_dir=str(workdir), no_logo=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vlmlab.teaching",
                                 description="student copies (solutions removed) and autograders of the numbered "
                                             "notebooks, with otter-grader")
    ap.add_argument("names", nargs="*", help="notebooks to build (stems, e.g. 10_llava); default: every numbered one")
    ap.add_argument("--notebooks", default="notebooks", help="folder of the notebooks (default: ./notebooks)")
    ap.add_argument("--out", default="dist", help="output folder (default: ./dist)")
    args = ap.parse_args(argv)
    built = build(Path(args.notebooks), Path(args.out), args.names or None)
    for stem, folder in built.items():
        n = len(questions(nbformat.read(Path(args.notebooks) / f"{stem}.ipynb", as_version=4)))
        print(f"{stem}: {n} exercises -> {folder / 'student'} (autograder: {autograder_zip(folder).name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
