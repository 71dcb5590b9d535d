"""Exercises, student copies and the autograder (issue 28, parts 4 and 5).

Every numbered notebook has at least three exercises, one of each kind, authored in Otter Assign's format; the
teaching notebooks 10-15 state their equations and check their by-hand mechanism against the library.
``vlmlab.teaching.build`` (``make student``) strips the solutions; a student copy executes at the smoke budget with
every exercise unanswered, each check reporting its failure instead of stopping the notebook; the autograder gives
the reference solutions full marks. Executing notebooks is slow, so the notebooks of EXECUTE stand for the others
here; every notebook's reference solutions and checks also run, as plain asserts, in the notebook smoke tests
(test_teaching_notebooks, test_explain_a/b, test_ablation_notebooks).
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from vlmlab import teaching

ROOT = Path(__file__).resolve().parents[1]
# notebooks added after the exercises were written and still without any: they get no student copy
PENDING: set[str] = set()
NOTEBOOKS = [p for p in teaching.numbered(ROOT / "notebooks") if p.stem not in PENDING]
# one notebook without training and one that trains, then takes its mechanism apart
EXECUTE = ["01_world", "10_llava"]
MECHANISM = [p for p in NOTEBOOKS if p.name[:2] in {"10", "11", "12", "13", "14", "15"}]


def test_the_numbered_notebooks_are_all_there():
    assert [p.name[:2] for p in NOTEBOOKS] == ["00", "01", "02", "10", "11", "12", "13", "14", "15", "20", "21",
                                             "22", "23", "30", "40"]
    # a numbered notebook is either exercised or listed as pending, so that a new one cannot slip through
    assert {p.stem for p in teaching.numbered(ROOT / "notebooks")} == {p.stem for p in NOTEBOOKS} | PENDING
    for stem in PENDING & {p.stem for p in teaching.numbered(ROOT / "notebooks")}:
        assert not teaching.questions(nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)), \
            f"{stem} has exercises now: take it off PENDING"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_numbered_notebook_has_three_kinds_of_exercise_each_with_a_check(path):
    nb = nbformat.read(path, as_version=4)
    qs = teaching.questions(nb)
    assert len(qs) >= 3, [q["name"] for q in qs]
    assert {q["kind"] for q in qs} == set(teaching.KINDS), qs  # predict, knob and implement, each prompt named
    assert all(q["tests"] >= 1 for q in qs), qs
    names = [q["name"] for q in qs]
    assert len(set(names)) == len(names) and all(n.startswith(f"q{path.name[:2]}_") for n in names)


@pytest.mark.parametrize("path", MECHANISM, ids=lambda p: p.stem)
def test_teaching_notebooks_state_equations_and_check_their_mechanism_by_hand(path):
    nb = nbformat.read(path, as_version=4)
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert re.search(r"\$\$.+?\$\$", md, flags=re.S), "no displayed equation"
    by_hand = [c for c in nb.cells if c.cell_type == "code" and "by hand" in c.source
               and ("torch.testing.assert_close" in c.source or "assert torch.equal" in c.source)]
    assert by_hand, "no by-hand mechanism cell with an equality check"
    lines = [ln for c in by_hand for ln in c.source.splitlines() if ln.strip()]
    assert len(lines) <= 30, f"{len(lines)} lines of mechanism and checks"  # the bound, checks included


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    return teaching.build(ROOT / "notebooks", out)


def test_build_writes_a_student_copy_without_solutions_and_an_autograder_per_notebook(built):
    assert sorted(built) == [p.stem for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        master = nbformat.read(path, as_version=4)
        folder = built[path.stem]
        student = nbformat.read(folder / "student" / path.name, as_version=4)
        text = "\n".join(c.source for c in student.cells)
        assert "SOLUTION" not in text and "# BEGIN QUESTION" not in text
        names = [q["name"] for q in teaching.questions(master)]
        for n in names:
            assert f'grader.check("{n}")' in text
            assert (folder / "student" / "tests" / f"{n}.py").is_file()
        # what a solution line assigns is gone from the student copy: `x = ...  # SOLUTION` became `x = ...`
        solved = [ln.split("#")[0].strip() for c in master.cells if c.cell_type == "code"
                  for ln in c.source.splitlines() if ln.rstrip().endswith("# SOLUTION") and "=" in ln]
        assert solved and not [ln for ln in solved if ln in text.splitlines()]
        params = [c for c in student.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and "budget" in params[0].source  # papermill can still set the budget
        assert not any(c.get("outputs") for c in student.cells)
        assert teaching.autograder_zip(folder).is_file()
        reference = "\n".join(c.source for c in nbformat.read(folder / "autograder" / path.name, as_version=4).cells)
        assert all(ln in reference for ln in solved[:3])


def test_build_rejects_an_unknown_notebook(tmp_path):
    with pytest.raises(ValueError, match="not numbered notebooks"):
        teaching.build(ROOT / "notebooks", tmp_path, ["99_nothing"])


@pytest.mark.parametrize("stem", EXECUTE)
def test_student_copy_runs_at_smoke_and_reports_every_unanswered_exercise(stem, built, tmp_path):
    import papermill as pm

    folder = built[stem] / "student"
    out = tmp_path / f"{stem}.ipynb"
    pm.execute_notebook(str(folder / f"{stem}.ipynb"), str(out), parameters={"budget": "smoke"},
                        kernel_name="python3", cwd=str(folder), progress_bar=False, log_output=False,
                        execution_timeout=300)
    cells = nbformat.read(out, as_version=4).cells
    assert not [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    checks = [c for c in cells if c.cell_type == "code" and c.source.startswith("grader.check(")]
    assert len(checks) >= 3
    for c in checks:  # each unanswered exercise: its check ran and says that it failed
        shown = "".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in c.outputs)
        assert "failed" in shown, (c.source, shown[:300])


@pytest.mark.parametrize("stem", EXECUTE)
def test_autograder_gives_the_reference_solutions_full_marks(stem, built, tmp_path):
    folder = built[stem]
    results = teaching.grade(folder, folder / "autograder" / f"{stem}.ipynb", {"budget": "smoke"}, tmp_path)
    n = len(teaching.questions(nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)))
    assert results.possible == n and results.total == results.possible, results.to_dict()
