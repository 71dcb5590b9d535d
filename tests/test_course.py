"""The course: notebook discovery, execution with reuse and failure reporting, rendering (sidebar, links between
notebooks, formulas, the reading path), and the built site as headless Chromium shows it with the network cut off
(figures loaded, formulas typeset, the sidebar there, no progress bar stopped short)."""
from __future__ import annotations

import base64
import dataclasses
import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from vlmlab.course import build_course, discover, link_notebooks, prepare_for_html, summary

ROOT = Path(__file__).resolve().parents[1]


# ---- helpers ---------------------------------------------------------------------------------------------------
def write_notebook(path: Path, title: str, body: str, *, intro: str = "What this notebook shows. More text.",
                   params: str = 'budget: str = "default"  # size knob\nseed: int = 0  # seed') -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\n\n{intro}"),
        nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


FIGURE = """import matplotlib.pyplot as plt
from IPython.display import display
fig, ax = plt.subplots(figsize=(3, 2))
ax.plot([0, 1, 2], [seed, 2, 1], color="tab:red")
ax.set_title(f"budget {budget}")
display(fig)
plt.close(fig)"""


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.imgs = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        if tag == "img" and a.get("src"):
            self.imgs.append(a["src"])


def parse(path: Path) -> Links:
    p = Links()
    p.feed(path.read_text())
    return p


def png_size(data_uri: str) -> tuple[int, int]:
    """Width and height from a data:image/png URI (checks it is a real PNG)."""
    raw = base64.b64decode(data_uri.split(",", 1)[1])
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")


# ---- discovery and summaries -----------------------------------------------------------------------------------
def test_discover_finds_numbered_notebooks_in_order_and_selects(tmp_path):
    for name in ("10_b.ipynb", "00_a.ipynb", "02_c.ipynb", "run.ipynb", "3_x.ipynb", "scratch.ipynb"):
        write_notebook(tmp_path / name, name, "pass")
    (tmp_path / "sweeps").mkdir()
    assert [p.name for p in discover(tmp_path)] == ["00_a.ipynb", "02_c.ipynb", "10_b.ipynb"]
    assert [p.name for p in discover(tmp_path, ["0?_*"])] == ["00_a.ipynb", "02_c.ipynb"]
    assert [p.name for p in discover(tmp_path, ["10_b", "00_a.ipynb"])] == ["00_a.ipynb", "10_b.ipynb"]
    assert [p.name for p in discover(tmp_path, ["02"])] == ["02_c.ipynb"]
    with pytest.raises(ValueError, match="matches no course notebook.*00_a"):
        discover(tmp_path, ["run"])
    real = [p.name for p in discover(ROOT / "notebooks")]
    assert real[:3] == ["00_quickstart.ipynb", "01_world.ipynb", "02_backbones.ipynb"] and "run.ipynb" not in real


def test_summary_reads_title_and_first_sentence():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_markdown_cell("# 07 · A **bold** title\n\nThe [world](01_world.ipynb) is `small`. "
                                              "Second sentence.\n\nNext paragraph.")]
    assert summary(nb) == ("07 · A bold title", "The world is small.")
    nb.cells[1].source = ("# 10 · Paper\n\n**The paper.** Lee et al. (arXiv 1234) connect `<img>` tokens. More.\n\n"
                          "Then: this. This notebook walks through it (on real tensors) step by step. Last.")
    assert summary(nb) == ("10 · Paper", "This notebook walks through it step by step.")
    nb.cells[1].source = "# 10 · Paper\n\n**The paper.** Lee et al. (arXiv 1234) connect `<img>` tokens. More."
    assert summary(nb)[1] == "Lee et al. connect <img> tokens."
    title, desc = summary(nbformat.read(ROOT / "notebooks" / "00_quickstart.ipynb", as_version=4))
    assert title.startswith("00 ") and "Quickstart" in title and desc and "**" not in desc


def test_widget_views_become_static_notes_naming_their_controls(tmp_path):
    nb = nbformat.read(write_notebook(tmp_path / "00_w.ipynb", "00 · W", "display(browser)"), as_version=4)
    view = {"model_id": "box", "version_major": 2, "version_minor": 0}
    state = {"state": {
        "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_dd", "IPY_MODEL_sl"]}},
        "dd": {"model_name": "DropdownModel", "state": {"description": "split", "index": 2,
                                                        "_options_labels": ["train", "val", "test"]}},
        "sl": {"model_name": "IntSliderModel", "state": {"description": "index", "value": 7, "min": 0, "max": 9}}}}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {**state, "version_major": 2}}
    nb.cells[-1].outputs = [nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": view, "text/plain": "VBox(...)"})]
    out = prepare_for_html(nb)
    assert "widgets" not in out.metadata and "widgets" in nb.metadata  # a copy
    note = out.cells[-1].outputs[0]["data"]["text/html"]
    assert "split = test" in note and "index = 7 (range 0–9)" in note and "make lab" in note


def test_progress_bars_show_as_they_ended_not_as_an_interactive_widget(tmp_path):
    nb = nbformat.read(write_notebook(tmp_path / "00_p.ipynb", "00 · P", "run_study(study)"), as_version=4)
    state = {"state": {  # a tqdm.auto bar in a notebook: HTML, FloatProgress, HTML in an HBox
        "box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]}},
        "l": {"model_name": "HTMLModel", "state": {"value": "sweep\u2007study-default:\u2007100%"}},
        "p": {"model_name": "FloatProgressModel", "state": {"value": 15.0, "max": 15.0}},
        "r": {"model_name": "HTMLModel", "state": {"value": "\u200715/15\u2007[27:57&lt;00:00,\u2007160.63s/run]"}}}}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {**state, "version_major": 2}}
    nb.cells[-1].outputs = [nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "box"}, "text/plain": "  0%|  | 0/15"})]
    note = prepare_for_html(nb).cells[-1].outputs[0]["data"]["text/html"]
    assert "Interactive widget" not in note
    assert "<progress value='15.0' max='15.0'>" in note and "sweep study-default: 100%" in note
    assert "15/15 [27:57&lt;00:00, 160.63s/run]" in note  # the final text, escaped once


def test_mentions_of_other_notebooks_become_links_to_their_pages():
    pages = {"00_quickstart": "00_quickstart.html", "01_world": "01_world.html"}
    md = ("See `01_world.ipynb`, `00_quickstart`, notebook 00 and [the world](01_world.ipynb#Splits).\n\n"
          "```python\n# notebook 01, `01_world.ipynb`\n```\n\n"
          '("Notebook 01 again", a quoted title), `run.ipynb`, notebooks 00-01 and notebook 22 (not built).')
    out = link_notebooks(md, pages)
    assert "[`01_world.ipynb`](01_world.html)" in out and "[`00_quickstart`](00_quickstart.html)" in out
    assert "[notebook 00](00_quickstart.html)" in out and "[the world](01_world.html#Splits)" in out
    assert "```python\n# notebook 01, `01_world.ipynb`\n```" in out  # code blocks stay code
    assert '"Notebook 01 again"' in out and "`run.ipynb`," in out and "notebooks 00-01" in out
    assert "notebook 22 (not built)" in out
    assert link_notebooks(out, pages) == out


FORMULAS = r"""# 03 · Formulas: a page with equations

This notebook checks that the course typesets formulas; it reads like `01_world.ipynb` and notebook 00.

## Inline and display

A patch's distribution is $p_i = \mathrm{softmax}(W x_i / \tau)$, and its visual token is

$$v_i = \sum_{k=1}^{K} p_{ik}\, e_k .$$

## An environment

\begin{align}
\mathcal{L} &= -\sum_t \log p(y_t \mid y_{<t}, v) \\
\mathbb{E}[x] &= \frac{1}{n} \sum_i x_i
\end{align}
"""

BARS = """from tqdm.auto import tqdm
for _ in tqdm(range(8), desc="kept"):
    pass
for _ in tqdm(range(8), desc="hidden", leave=False):
    pass
print("done")"""


def formulas_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(FORMULAS),
                nbformat.v4.new_code_cell('budget: str = "default"  # size knob\nseed: int = 0  # seed',
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(BARS)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_pages_have_a_sidebar_links_local_mathjax_and_the_index_the_reading_path(tmp_path):
    nbs = tmp_path / "repo" / "notebooks"
    nbs.mkdir(parents=True)
    write_notebook(nbs / "00_intro.ipynb", "00 · Intro: first", "print(seed)",
                   intro="It starts here. Next, `03_formulas.ipynb`.\n\n## Part one\n\nText.\n\n## Part two\n\nMore.")
    formulas_notebook(nbs / "03_formulas.ipynb")
    (tmp_path / "repo" / "docs").mkdir()
    (tmp_path / "repo" / "docs" / "reading-path.csv").write_text(
        "notebook,you learn,minutes at default\n00_intro,How it starts,2\n03_formulas,\"Equations, typeset\",< 1\n")
    out = tmp_path / "course"
    res = build_course("smoke", out=out, notebooks_dir=nbs, progress=False)
    assert res.ok, [(e.name, e.error) for e in res.failed]

    intro, formulas = (out / "00_intro.html").read_text(), (out / "03_formulas.html").read_text()
    for page in (intro, formulas, (out / "index.html").read_text()):
        side = re.search(r'<nav class="course-sidebar".*?</nav>', page, re.S).group(0)
        assert 'href="00_intro.html"' in side and 'href="03_formulas.html"' in side and 'href="index.html"' in side
        assert not re.findall(r'<(?:script|link|img)[^>]*(?:src|href)="(?:https?:)?//', page)  # nothing remote
    side = re.search(r'<nav class="course-sidebar".*?</nav>', intro, re.S).group(0)
    assert re.search(r'<li class="current"><a href="00_intro.html" aria-current="page"', side)
    assert '<a href="#Part-one">Part one</a>' in side and '<a href="#Part-two">Part two</a>' in side
    assert '<a href="03_formulas.html"><code>03_formulas.ipynb</code></a>' in intro  # a cross-reference
    assert '<a href="00_intro.html">notebook 00</a>' in formulas

    assert "_static/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full" in formulas
    assert "MathJax.js" not in intro  # only pages with formulas load it
    assert (out / "_static" / "mathjax" / "MathJax.js").is_file()
    assert (out / "_static" / "mathjax" / "config" / "TeX-AMS-MML_HTMLorMML-full.js").is_file()

    index = (out / "index.html").read_text()
    path = re.search(r"<section class='reading-path'>.*?</section>", index, re.S).group(0)
    assert "<a href='00_intro.html'>00_intro</a>" in path and "Equations, typeset" in path and "&lt; 1" in path


# ---- build: execution, reuse, failures (tiny notebooks, no training) -------------------------------------------
def test_build_reuses_unchanged_notebooks_and_reports_failures(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    good = write_notebook(nbs / "00_good.ipynb", "00 · Good", FIGURE, intro="It draws one figure. Then stops.")
    write_notebook(nbs / "01_bad.ipynb", "01 · Bad", 'raise ValueError("deliberate failure for the test")')
    out = tmp_path / "course"

    res = build_course("smoke", out=out, notebooks_dir=nbs, progress=False)
    assert not res.ok and [e.name for e in res.failed] == ["01_bad.ipynb"]
    g, b = res.notebooks
    assert g.status == "ok" and not g.reused and g.seconds > 0 and g.figures == 1
    assert g.description == "It draws one figure."
    assert b.status == "failed" and "deliberate failure for the test" in b.error
    course = json.loads((out / "course.json").read_text())
    assert course["failed"] == ["01_bad.ipynb"] and course["budget"] == "smoke"
    assert course["execute_seconds"] == pytest.approx(sum(n["seconds"] for n in course["notebooks"]))
    executed = nbformat.read(out / "notebooks" / "00_good.ipynb", as_version=4)
    assert any('budget = "smoke"' in c.source for c in executed.cells)  # papermill injected the budget
    bad_page = (out / "01_bad.html").read_text()
    assert "This notebook failed" in bad_page and "deliberate failure for the test" in bad_page
    assert "ValueError" in bad_page  # the traceback of the failing cell is on the page
    index = (out / "index.html").read_text()
    assert "01_bad.html" in index and "did not complete" in index and "deliberate failure" in index

    # a second build executes only what failed; the unchanged notebook is reused as it was
    mtime = (out / "notebooks" / "00_good.ipynb").stat().st_mtime_ns
    res2 = build_course("smoke", out=out, notebooks_dir=nbs, progress=False)
    g2, b2 = res2.notebooks
    assert g2.reused and g2.status == "ok" and g2.seconds == pytest.approx(g.seconds)
    assert (out / "notebooks" / "00_good.ipynb").stat().st_mtime_ns == mtime
    assert not b2.reused and b2.status == "failed" and b2.seconds != b.seconds  # executed again

    # a changed source, or other parameters, execute again; --skip-execute only renders
    write_notebook(good, "00 · Good, edited", FIGURE)
    res3 = build_course("smoke", out=out, notebooks_dir=nbs, only=["00_good"], progress=False)
    assert not res3.notebooks[0].reused and res3.notebooks[0].title == "00 · Good, edited"
    assert [e.name for e in res3.notebooks] == ["00_good.ipynb", "01_bad.ipynb"]  # the index keeps 01
    assert res3.notebooks[1].reused and res3.notebooks[1].status == "failed"
    res4 = build_course("smoke", seed=3, out=out, notebooks_dir=nbs, only=["00"], progress=False)
    assert not res4.notebooks[0].reused and res4.notebooks[0].params == {"budget": "smoke", "seed": 3}
    res5 = build_course("smoke", seed=4, out=out, notebooks_dir=nbs, only=["00"], skip_execute=True, progress=False)
    assert res5.notebooks[0].reused and res5.notebooks[0].stale
    assert res5.notebooks[0].params == {"budget": "smoke", "seed": 3}  # what the page was executed with
    assert "earlier execution" in (out / "00_good.html").read_text()


def test_a_changed_budget_definition_executes_the_notebooks_that_take_a_budget_again(tmp_path, monkeypatch):
    from vlmlab import budgets

    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    write_notebook(nbs / "00_sized.ipynb", "00 · Sized", "print(budget)")
    write_notebook(nbs / "01_unsized.ipynb", "01 · Unsized", "print(seed)", params="seed: int = 0  # seed")
    out = tmp_path / "course"
    first = build_course("smoke", out=out, notebooks_dir=nbs, progress=False).notebooks
    assert [e.reused for e in first] == [False, False]
    assert first[0].budget_config == budgets.get_budget("smoke").as_dict() and first[1].budget_config is None

    # the same name, other sizes (e.g. a longer VLM schedule after an update): its old pages are stale
    longer = dataclasses.replace(budgets.BUDGETS["smoke"], vlm_steps=budgets.BUDGETS["smoke"].vlm_steps + 1)
    monkeypatch.setitem(budgets.BUDGETS, "smoke", longer)
    second = build_course("smoke", out=out, notebooks_dir=nbs, progress=False).notebooks
    assert [e.reused for e in second] == [False, True]  # the notebook without a budget parameter is kept
    assert second[0].budget_config["vlm_steps"] == longer.vlm_steps
    assert [e.reused for e in build_course("smoke", out=out, notebooks_dir=nbs, progress=False).notebooks] == [
        True, True]


def test_cli_exits_nonzero_on_a_failing_notebook(tmp_path, capsys):
    from vlmlab.cli import main

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(nbs / "00_bad.ipynb", "00 · Bad", "1 / 0")
    with pytest.raises(SystemExit) as e:
        main(["course", "--budget", "smoke", "--notebooks", str(nbs), "--out", str(tmp_path / "c"), "--quiet"])
    assert e.value.code == 1
    out, err = capsys.readouterr()
    assert "ZeroDivisionError" in out and "00_bad" in err and "index:" in out
    assert main(["course", "--budget", "nope", "--notebooks", str(nbs), "--out", str(tmp_path / "c")]) == 2
    assert "budget='nope' is unknown" in capsys.readouterr().err


# ---- the real course at the smoke budget, in headless Chromium -------------------------------------------------
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def chromium(args: list[str], profile: Path) -> str:
    binary = chromium_binary()
    proc = subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def loaded_images(page: Path, profile: Path) -> tuple[int, int]:
    """(images, images the browser decoded) on ``page``, counted by a probe page that loads it in an iframe."""
    probe = page.parent / f".probe-{page.stem}.html"
    probe.write_text(f"""<!DOCTYPE html><html><body><iframe id="f" src="{page.name}" width="1200" height="900"></iframe>
<script>
document.getElementById("f").addEventListener("load", () => {{
  // the frame's load event comes after every image in it loaded (or failed to)
  const imgs = Array.from(document.getElementById("f").contentDocument.images);
  const loaded = imgs.filter(img => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0);
  const out = document.createElement("pre");
  out.id = "result";
  out.textContent = "images=" + imgs.length + " loaded=" + loaded.length;
  document.body.appendChild(out);
}});
</script></body></html>""")
    try:
        dom = chromium(["--allow-file-access-from-files", "--virtual-time-budget=10000", "--dump-dom",
                        probe.as_uri()], profile)
    finally:
        probe.unlink()
    m = re.search(r"images=(\d+) loaded=(\d+)", dom)
    assert m, f"the probe page did not report: {dom[-1500:]}"
    return int(m.group(1)), int(m.group(2))


def screenshot_is_not_blank(png: Path) -> None:
    import numpy as np
    from PIL import Image

    px = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3).astype(np.int64)
    assert len(px) >= 1000 * 1000
    packed = px[:, 0] << 16 | px[:, 1] << 8 | px[:, 2]
    colours, counts = np.unique(packed, return_counts=True)
    share = (packed != colours[counts.argmax()]).mean()  # pixels that are not the page background
    colourful = (px.max(axis=1) - px.min(axis=1) > 60).mean()  # saturated: figures, links
    assert share > 0.05 and len(colours) > 200 and colourful > 0.002, (share, len(colours), colourful)


OFFLINE = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]  # any network fetch fails

REAL = ("00_quickstart", "01_world")


@pytest.fixture(scope="module")
def smoke_course(tmp_path_factory):
    """The real 00 and 01 at the smoke budget, beside a small page of formulas and progress bars, in a checkout
    of their own (with the repository's reading path)."""
    repo = tmp_path_factory.mktemp("checkout")
    (repo / "notebooks").mkdir()
    (repo / "docs").mkdir()
    for stem in REAL:
        shutil.copy(ROOT / "notebooks" / f"{stem}.ipynb", repo / "notebooks")
    formulas_notebook(repo / "notebooks" / "03_formulas.ipynb")
    shutil.copy(ROOT / "docs" / "reading-path.csv", repo / "docs")
    res = build_course("smoke", out=repo / "course", notebooks_dir=repo / "notebooks", progress=False)
    assert res.ok, [(e.name, e.error) for e in res.failed]
    return res


def _entry(course, stem):
    return next(e for e in course.notebooks if e.stem == stem)


@pytest.mark.slow
def test_smoke_course_pages_and_index(smoke_course):
    out = smoke_course.out
    index = parse(out / "index.html")
    for e in smoke_course.notebooks:
        assert e.page in index.hrefs, f"index does not link {e.page}"
        page = parse(out / e.page)
        assert "index.html" in page.hrefs  # every page leads back
        assert all(n.page in page.hrefs for n in smoke_course.notebooks if n is not e)  # the sidebar
        figures = [s for s in page.imgs if s.startswith("data:image/png;base64,")]
        assert len(figures) == e.figures and all(png_size(s)[0] >= 100 for s in figures)
        if e.stem in REAL:
            assert e.figures >= 2
        remote = re.findall(r'<(?:script|link)[^>]*(?:src|href)="((?:https?:)?//[^"]*)"', (out / e.page).read_text())
        assert not remote, remote  # works offline, formulas included
    quick, world = _entry(smoke_course, "00_quickstart"), _entry(smoke_course, "01_world")
    assert world.page in parse(out / quick.page).hrefs  # next page, and the notebook's own mention of 01
    assert len([s for s in index.imgs if s.startswith("data:image/png")]) == len(REAL)
    page01 = (out / "01_world.html").read_text()
    assert "Interactive view" in page01 and "widget-view+json" not in page01  # batch runs leave a note, no widget
    assert re.search(r"In\s\[\d+\]:", page01) and "scene_browser" in page01  # code is shown
    assert "<h2 id='reading-path'>Reading path</h2>" in (out / "index.html").read_text()


INSPECT = r"""
const frame = document.getElementById("f");
frame.addEventListener("load", () => {
  const doc = frame.contentDocument, root = doc.documentElement;
  const mathjax = !!doc.querySelector('script[src*="MathJax.js"]');
  let waited = 0;
  const report = () => {
    if (mathjax && root.getAttribute("data-mathjax") !== "typeset" && waited++ < 400) { setTimeout(report, 50); return; }
    const side = doc.querySelector("nav.course-sidebar");
    const text = doc.body.innerText;
    const stale = [];  // tqdm's text: "75% 6/8", "75%|###   | 6/8": a bar that stopped short
    for (const m of text.matchAll(/(\d+)%\s*(?:\|[^|\n]*\|\s*)?(\d+)\/(\d+)/g)) if (m[2] !== m[3]) stale.push(m[0]);
    const current = side && side.querySelector('[aria-current="page"]');
    const result = {
      mathjax, typeset: root.getAttribute("data-mathjax"),
      formulas: doc.querySelectorAll(".MathJax, .MathJax_Display").length,
      errors: doc.querySelectorAll(".MathJax_Error, merror").length,
      raw_tex: /\$\$|\\frac|\\begin\{|\\sum/.test(text),
      fonts: Array.from(doc.fonts).filter(f => f.status === "loaded").map(f => f.family),
      sidebar: side ? {links: side.querySelectorAll("a").length, width: side.getBoundingClientRect().width,
                       current: current ? current.textContent : null,
                       toc: side.querySelectorAll("ol.toc a").length} : null,
      bars: Array.from(doc.querySelectorAll("progress")).map(p => [p.value, p.max]), stale,
      remote: frame.contentWindow.performance.getEntriesByType("resource").map(r => r.name)
                .filter(n => !n.startsWith("file:") && !n.startsWith("data:")),
    };
    const out = document.createElement("pre");
    out.id = "result";
    out.textContent = "RESULT" + JSON.stringify(result) + "END";
    document.body.appendChild(out);
  };
  report();
});
"""


def inspect_page(page: Path, profile: Path) -> dict:
    """What a reader's browser shows on ``page`` with the network cut off: formulas, sidebar, progress bars and
    any resource it fetched from outside the course folder."""
    probe = page.parent / f".inspect-{page.stem}.html"
    probe.write_text(f'<!DOCTYPE html><html><body><iframe id="f" src="{page.name}" width="1280" height="900">'
                     f"</iframe><script>{INSPECT}</script></body></html>")
    try:
        dom = chromium([*OFFLINE, "--allow-file-access-from-files", "--virtual-time-budget=30000", "--dump-dom",
                        probe.as_uri()], profile)
    finally:
        probe.unlink()
    m = re.search(r"<pre id=\"result\">RESULT(.*?)END</pre>", dom, re.S)
    assert m, f"the probe page did not report: {dom[-1500:]}"
    return json.loads(html.unescape(m.group(1)))


@pytest.mark.slow
@pytest.mark.skipif(chromium_binary() is None,
                    reason="no Chromium binary (chromium, chromium-browser or google-chrome) on PATH: install "
                           "Debian's `chromium` package (apt-get install chromium) to check the course in a browser")
def test_smoke_course_in_headless_chromium(smoke_course, tmp_path):
    out = smoke_course.out
    profile = tmp_path / "profile"
    n, loaded = loaded_images(out / "index.html", profile)
    assert n == loaded == len(REAL)  # one thumbnail per notebook with a figure, each decoded
    page = out / "01_world.html"
    n, loaded = loaded_images(page, profile)
    assert n == _entry(smoke_course, "01_world").figures and loaded == n >= 4
    for name, target in (("index", out / "index.html"), ("page", page)):
        png = tmp_path / f"{name}.png"
        chromium([*OFFLINE, f"--screenshot={png}", "--window-size=1280,2400", target.as_uri()], profile)
        screenshot_is_not_blank(png)

    seen = {p: inspect_page(out / p, profile) for p in ("index.html", *(e.page for e in smoke_course.notebooks))}
    for p, r in seen.items():
        assert not r["remote"], (p, r["remote"])  # nothing but the course folder was fetched
        assert r["sidebar"] and r["sidebar"]["width"] > 150, (p, r["sidebar"])
        assert r["sidebar"]["links"] == len(smoke_course.notebooks) + 1 + (r["sidebar"]["toc"]), (p, r["sidebar"])
        assert r["sidebar"]["current"] == ("vlmlab course" if p == "index.html" else
                                           next(e.title.split(":")[0] for e in smoke_course.notebooks if e.page == p))
        assert all(v == top for v, top in r["bars"]) and not r["stale"], (p, r["bars"], r["stale"])
    formulas = seen["03_formulas.html"]
    assert formulas["mathjax"] and formulas["typeset"] == "typeset", formulas
    assert formulas["formulas"] >= 3 and formulas["errors"] == 0 and not formulas["raw_tex"], formulas
    assert any("STIX" in f for f in formulas["fonts"]), formulas["fonts"]  # MathJax's own web fonts, from the folder
    assert formulas["bars"] == [[8, 8]]  # the bar kept at its end; the hidden one is gone
    assert seen["03_formulas.html"]["sidebar"]["toc"] == 2  # its two sections
    assert not seen["01_world.html"]["mathjax"]  # pages without formulas load no MathJax
