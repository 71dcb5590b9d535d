"""Defects found in a real browser and a terminal (issue 28, part 7), one test each: a stale progress bar on a
course page, `vlmlab course` building another checkout's notebooks, a widget note naming the wrong view and
place, attention-grid labels that overlap and cut words, papermill's `-p knobs '{...}'` failing late with a type error,
and no training progress in the terminal."""
from __future__ import annotations

import html
import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


# ---- a. course pages: no stale progress bar ---------------------------------------------------------------------
def _saved_widget_state(ids: dict) -> dict:
    """The widget state nbclient saves for these widgets (model id -> widget): their final serialised states,
    closed widgets included (nbclient keeps every state a comm sent)."""
    return {"state": {i: {"model_name": w._model_name, "state": w.get_state()} for i, w in ids.items()},
            "version_major": 2, "version_minor": 0}


def test_a_course_page_shows_no_stale_training_bar(monkeypatch):
    """optimize's tqdm bar (leave=False, text throttled) as a notebook saves it: the page must not show a bar
    whose text reports another count than the bar (it showed "75% 6/8" beside a full bar)."""
    import tqdm.notebook

    from vlmlab import train
    from vlmlab.course import prepare_for_html

    bars = []

    class Recorded(tqdm.notebook.tqdm):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            box = self.container  # ids now: a closed widget has no comm left to name it
            bars.append((box.model_id, {w.model_id: w for w in (box, box.layout, *box.children)}))

    monkeypatch.setattr(train, "tqdm", Recorded)
    w = torch.nn.Parameter(torch.ones(3))
    train.optimize([w], lambda step: step, lambda _b: (w ** 2).sum(), steps=8, lr=1e-2, desc="llava:instruct")
    ((box_id, ids),) = bars
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": _saved_widget_state(ids)}
    nb.cells = [nbformat.v4.new_code_cell("train()", outputs=[nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": box_id, "version_major": 2,
                                                     "version_minor": 0}, "text/plain": "HBox(...)"})])]
    page = "".join(o["data"].get("text/html", "") for o in prepare_for_html(nb).cells[0].outputs)
    for value, top, text in re.findall(r"<progress value='([\d.]+)' max='([\d.]+)'></progress> <code>(.*?)</code>",
                                       page):
        counts = re.findall(r"(\d+)/(\d+)", html.unescape(text))
        assert counts and all((float(n), float(t)) == (float(value), float(top)) for n, t in counts), page
    assert "Interactive widget" not in page


# ---- b. `vlmlab course` builds the notebooks of the checkout it runs in -----------------------------------------
def test_b_course_defaults_to_the_checkout_it_runs_in(tmp_path, monkeypatch):
    import vlmlab.course as course
    from vlmlab.cli import main

    clone = tmp_path / "clone"
    (clone / "lib" / "vlmlab").mkdir(parents=True)
    (clone / "notebooks").mkdir()
    (clone / "pyproject.toml").write_text("[project]\nname = 'vlmlab'\n")
    seen = {}

    def fake_build(budget, **kw):
        seen.update(kw)
        raise KeyboardInterrupt  # stop here: only the defaults are under test

    monkeypatch.setattr(course, "build_course", fake_build)
    monkeypatch.chdir(clone / "notebooks")  # anywhere inside the clone
    assert main(["course", "--budget", "smoke"]) == 130
    assert Path(seen["notebooks_dir"]).resolve() == (clone / "notebooks").resolve()
    assert Path(seen["out"]).resolve() == (clone / "papermill_runs" / "course-smoke").resolve()
    seen.clear()
    monkeypatch.chdir(tmp_path)  # outside any checkout: the one vlmlab is installed from
    main(["course", "--budget", "smoke"])
    assert Path(seen["notebooks_dir"]).resolve() == (ROOT / "notebooks").resolve()


# ---- c. the widget placeholder names the view the cell calls, and where its figure is ---------------------------
def test_c_batch_note_names_the_called_view_and_the_figure_below(monkeypatch):
    from vlmlab.study import explorer
    from vlmlab.widgets import probe_browser, scene_browser

    monkeypatch.setenv("VLMLAB_BATCH", "1")
    note = scene_browser(None).data
    assert "`scene_browser`" in note and "sample_picker" not in note
    assert "below" in note and "next to" not in note
    assert "`probe_browser`" in probe_browser(None, {}, {}, 0).data
    assert "above" in explorer(None, "K").data  # the ablation notebooks draw its static figures before it


# ---- d. attention grid: no label over the next row, no word cut -------------------------------------------------
def test_d_attention_grid_wraps_questions_at_words_and_rows_do_not_overlap(world):
    from vlmlab.explain import attention as xa

    samples = world.samples("test", 0, 8)
    g = 4
    layout = xa.TokenLayout("grid", g * g + 2, g, list(range(1, g * g + 1)), [0, g * g + 1],
                            ["begin"] + [f"r{k // g}c{k % g}" for k in range(g * g)] + ["end"], "ovis-like")
    w = torch.rand(len(samples), 2, 2, layout.n)
    att = xa.AnswerAttention(w / w.sum(-1, keepdim=True) * 0.5, torch.full((len(samples), 2, 2), 0.5), layout,
                             "ovis")
    fig = xa.attention_grid(samples, att, predictions=["yes"] * len(samples))
    try:
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        axes = [ax for ax in fig.axes if ax.get_visible() and ax.has_data()]
        for ax, s in zip(axes, samples):  # the whole question, wrapped between words only
            head = ax.get_title().split("→")[0]
            assert " ".join(head.split()) == f"#{s.index} {s.qa.question}", ax.get_title()
        for left, right in zip(axes, axes[1:]):  # titles side by side do not run into each other
            if round(left.get_position().y0, 3) == round(right.get_position().y0, 3):
                assert left.title.get_window_extent(r).x1 < right.title.get_window_extent(r).x0
        # each axes' own texts (title, tick labels, x label) stay clear of every axes of the next row
        by_row = {}
        for ax in axes:
            by_row.setdefault(round(ax.get_position().y0, 3), []).append(ax)
        rows = [by_row[k] for k in sorted(by_row, reverse=True)]  # top row first
        for upper, lower in zip(rows, rows[1:]):
            lowest = min(ax.get_tightbbox(r).y0 for ax in upper)  # the x label and tick labels included
            highest = max(ax.get_tightbbox(r).y1 for ax in lower)  # the title included
            assert lowest > highest, (lowest, highest)
    finally:
        plt.close(fig)


# ---- e. papermill -p knobs '{"table_size": 64}' -------------------------------------------------------------------
def test_e_knobs_as_a_json_string_read_as_the_dict():
    from vlmlab.runs import RunConfig

    as_text = RunConfig.from_params(arch="ovis", budget="smoke", knobs='{"table_size": 64}')
    assert as_text == RunConfig.from_params(arch="ovis", budget="smoke", knobs={"table_size": 64})
    assert RunConfig.from_params(budget="smoke", knobs="").knobs == {}
    with pytest.raises(ValueError, match=r"parameter 'knobs' must be a dict or a JSON object string.*table_size"):
        RunConfig.from_params(arch="ovis", budget="smoke", knobs="{table_size: 64}")
    with pytest.raises(TypeError, match=r"parameter 'knobs'.*JSON list"):
        RunConfig.from_params(arch="ovis", budget="smoke", knobs="[64]")


def test_e_papermill_string_knobs_fail_in_the_parameter_check(tmp_path):
    """papermill's -p passes the knobs as text: a malformed one fails at the config cell, naming the parameter,
    before anything loads or trains (a valid one is read as the dict, above)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "run.ipynb"),
                           str(tmp_path / "out.ipynb"), "-p", "arch", "ovis", "-p", "budget", "smoke",
                           "-p", "knobs", "{table_size: 64}", "-p", "output_dir", str(tmp_path),
                           "--no-progress-bar", "--cwd", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0
    assert "parameter 'knobs' must be a dict or a JSON object string" in proc.stderr, proc.stderr[-2000:]
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    failed = [i for i, c in enumerate(executed.cells) if c.cell_type == "code" and any(
        o.get("output_type") == "error" for o in c.get("outputs", []))]
    first_code = [i for i, c in enumerate(executed.cells) if c.cell_type == "code"]
    assert failed == [first_code[2]]  # parameters, injected parameters, then the config cell: nothing trained


# ---- f. "is there an orange cross ?", not "a orange" -------------------------------------------------------------
def test_f_questions_use_an_before_a_vowel_and_the_lm_reads_the_same_ids():
    from vlmlab.world import World, WorldConfig, build_tokenizer
    from vlmlab.world.questions import solve, wording

    w = World(WorldConfig(), seed=0)
    questions = [w.sample("test", i, image=False).qa.question for i in range(400)]
    questions += [q for i in range(50) for q, _ in w.sample_with_questions("test", i, 6, image=False).extra_qa]
    words = [q.split() for q in questions]
    assert not [q for q in words for a, b in zip(q, q[1:]) if a == "a" and b[0] in "aeiou"]
    assert any("an orange" in q for q in questions)
    tok = build_tokenizer(w.config)
    assert tok("is there an orange cross ?").input_ids == tok("is there a orange cross ?").input_ids
    assert tok.unk_token_id not in tok("is there an orange cross or a red circle ?").input_ids
    scene = w.sample("test", 0, image=False).scene
    assert solve("is there an orange cross ?", scene) == solve("is there a orange cross ?", scene)
    assert wording("is there an orange cross ?", w.config) == "is there a <color> <shape> ?"


# ---- g. training progress reaches the terminal while papermill runs a notebook ----------------------------------
class _KernelStderr(io.StringIO):
    """What sys.stderr is in an ipykernel: the notebook's stream, with the process's own stderr kept apart."""

    def __init__(self, fd: int):
        super().__init__()
        self._original_stdstream_copy = fd


def test_g_optimize_prints_stage_step_loss_and_eta_to_the_terminal_from_a_kernel(tmp_path, monkeypatch):
    from vlmlab import train

    log = tmp_path / "terminal.txt"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT)
    try:
        monkeypatch.setattr(sys, "stderr", _KernelStderr(fd))
        monkeypatch.setenv("VLMLAB_TERMINAL_PROGRESS", "1")  # the terminal is a file here, not a TTY
        w = torch.nn.Parameter(torch.ones(3))
        train.optimize([w], lambda step: step, lambda _b: (w ** 2).sum(), steps=30, lr=1e-2,
                       desc="llava:instruct", progress=False)
        notebook_text = sys.stderr.getvalue()
    finally:
        os.close(fd)
    lines = log.read_text().splitlines()
    assert lines, "nothing reached the terminal"
    assert all("llava:instruct" in ln and "loss" in ln for ln in lines)
    assert re.search(r"step 1/30\b", lines[0]) and re.search(r"step 30/30\b", lines[-1])
    assert "ETA" in lines[0] and "done" in lines[-1]
    assert "llava:instruct" not in notebook_text  # the notebook keeps its own bar, not these lines


def test_g_no_terminal_lines_outside_a_kernel(monkeypatch, capsys):
    from vlmlab import train

    monkeypatch.delenv("VLMLAB_TERMINAL_PROGRESS", raising=False)
    w = torch.nn.Parameter(torch.ones(3))
    train.optimize([w], lambda step: step, lambda _b: (w ** 2).sum(), steps=5, lr=1e-2, progress=False)
    assert capsys.readouterr().err == ""  # a plain process has tqdm's own bar


@pytest.mark.slow
def test_g_papermill_run_shows_training_lines_on_stderr(tmp_path):
    """The real path: papermill executes a notebook that trains; its stderr (the terminal) gets the lines."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent("""\
        import torch
        from vlmlab.train import optimize
        w = torch.nn.Parameter(torch.ones(3))
        losses = optimize([w], lambda s: s, lambda _b: (w ** 2).sum(), steps=20, lr=1e-2, desc="toy:stage")
        """))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "train.ipynb"
    nbformat.write(nb, src)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}  # else ipykernel captures no fd
    env.update({"VLMLAB_TERMINAL_PROGRESS": "1", "OMP_NUM_THREADS": "1"})
    proc = subprocess.run([sys.executable, "-m", "papermill", str(src), str(tmp_path / "out.ipynb"),
                           "--no-progress-bar"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"toy:stage.*step 20/20.*loss", proc.stderr), proc.stderr[-2000:]
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert "step 20/20" not in str(executed.cells[0].outputs)
