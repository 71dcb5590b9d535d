"""The course: the numbered notebooks executed with papermill at one budget and rendered into a static HTML site.

``vlmlab course --budget smoke`` (or ``make course BUDGET=smoke``) builds ``papermill_runs/course-<budget>/``::

    index.html              the reading path, then every notebook: title, description, first figure, wall time
    00_quickstart.html      one page per notebook: code, outputs and figures (PNG data URIs: one file each)
    course.json             budget, seed, per-notebook status and wall time, total execution time
    _static/mathjax/        MathJax, copied from the installed jupyter-server-mathjax package: formulas offline
    notebooks/00_quickstart.ipynb   the executed notebook
    notebooks/00_quickstart.json    its record: source hash, parameters, budget sizes, status, error, wall time

The course notebooks are ``notebooks/[0-9][0-9]_*.ipynb``, discovered and listed in name order and executed
with the parameters ``budget`` and ``seed`` (those it declares); the study notebooks execute first
(:func:`execution_order`) so the teaching notebooks reuse the models their sweeps trained. A notebook that fails does not stop the course:
its page shows the notebook up to the failing cell and the error, and the build reports every failure at the
end (``vlmlab course`` then exits with status 1). A notebook whose source and parameters are unchanged since
its last successful execution into the same directory is not executed again (``--force`` re-executes), so a
re-run after one failure only redoes that notebook. ``--skip-execute`` only re-renders the pages.

Every page has a sidebar listing the course's pages by part, with the current page's sections; a mention of
another course notebook in a markdown cell (``01_world.ipynb`` in inline code, "notebook 01", a Markdown link to
``01_world.ipynb``) links to its page. The reading path comes from ``docs/reading-path.csv`` beside the notebooks' folder.

Widgets need a live kernel, so a page replaces each widget with a note naming its controls; the notebooks show
every widget's information in a static figure as well.
"""
from __future__ import annotations

import base64
import datetime as _dt
import fnmatch
import hashlib
import html
import io
import json
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from unittest import mock

from .jsonio import write_json_atomic

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
DEFAULT_OUT = REPO / "papermill_runs"
COURSE_GLOB = "[0-9][0-9]_*.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def default_out(budget: str) -> Path:
    return DEFAULT_OUT / f"course-{budget}"


def checkout(start: str | Path | None = None) -> Path:
    """The checkout a command runs in: the nearest directory at or above ``start`` (default: the working
    directory) that holds ``notebooks/`` and ``lib/vlmlab/``; the checkout vlmlab is installed from if none does."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "notebooks").is_dir() and (d / "lib" / "vlmlab").is_dir():
            return d
    return REPO


# --------------------------------------------------------------------------------------------------------------
# Discovery

def discover(notebooks_dir: str | Path = NOTEBOOKS, only: list[str] | None = None) -> list[Path]:
    """The course notebooks (``NN_*.ipynb``) in name order; ``only`` keeps those matching any of its patterns:
    a glob (``0[12]_*``), a name with or without ``.ipynb`` or a number prefix (``01``). A pattern that matches
    nothing is an error naming the notebooks there are."""
    notebooks_dir = Path(notebooks_dir)
    found = sorted(p for p in notebooks_dir.glob(COURSE_GLOB) if p.is_file())
    if not only:
        return found
    keep = set()
    for pat in only:
        hits = [p for p in found if _matches(p, pat)]
        if not hits:
            raise ValueError(f"--only {pat!r} matches no course notebook; the notebooks in {notebooks_dir} are: "
                             f"{[p.stem for p in found]}")
        keep.update(hits)
    return [p for p in found if p in keep]


def _matches(path: Path, pattern: str) -> bool:
    pattern = pattern.strip()
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatch(path.name, pattern) or fnmatch.fnmatch(path.stem, pattern)
    name = pattern[:-6] if pattern.endswith(".ipynb") else pattern
    return path.stem == name or (name.isdigit() and path.stem.startswith(name + "_"))


_MD_INLINE = [
    (re.compile(r"!\[[^\]]*\]\([^)]*\)"), ""),          # images
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),      # links -> their text
    (re.compile(r"(\*\*|__)(.+?)\1"), r"\2"),           # bold
    (re.compile(r"(?<![\w*])[*_](?!\s)(.+?)(?<!\s)[*_](?![\w*])"), r"\1"),  # italics
    (re.compile(r"(?<!`)<[^>`]+>(?!`)"), ""),            # html tags (not `<img>` in inline code)
    (re.compile(r"`([^`]*)`"), r"\1"),                   # inline code
]


def plain_text(markdown: str) -> str:
    """Markdown inline markup removed (links keep their text); whitespace collapsed."""
    for rx, rep in _MD_INLINE:
        markdown = rx.sub(rep, markdown)
    return " ".join(markdown.split())


def summary(nb) -> tuple[str | None, str]:
    """(title, description) of a notebook from its first markdown cell: the first heading, and the sentence that
    says what the notebook does ("This notebook ...") or else the first sentence after the heading, with leading
    bold labels ("**The paper.**") and parentheses (citations, asides) removed, shortened to ~220 characters."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"^#{1,6}\s+(.*\S)", line)
            if not m:
                continue
            title = plain_text(m.group(1))
            paragraphs, para = [], []
            for rest in lines[i + 1:] + [""]:
                if rest.strip().startswith("#"):
                    break
                if rest.strip():
                    para.append(rest.strip())
                elif para:
                    paragraphs.append(_clean_paragraph(" ".join(para)))
                    para = []
            sentences = [s for p in paragraphs for s in _sentences(p)]
            this = [s for s in sentences if s.startswith("This notebook")]
            first = this[0] if this else (sentences[0] if sentences else "")
            return title, _shorten(first)
    return None, ""


def _clean_paragraph(markdown: str) -> str:
    text = re.sub(r"^\s*(?:[-*+]|\d+\.)\s+", "", markdown)  # a list item's marker
    text = re.sub(r"^(\*\*|__)[^*_]{1,40}?[.:]\1\s*", "", text)  # a leading bold label: **The paper.**
    text = plain_text(text)
    for _ in range(2):  # parentheses, nested once
        text = re.sub(r"\s*\([^()]*\)", "", text)
    return " ".join(text.split())


_ABBREV = re.compile(r"(?:\bal|\be\.g|\bi\.e|\bcf|\bvs|\bEq|\bFig|\betc)\.$")


def _sentences(text: str) -> list[str]:
    out, start = [], 0
    for m in re.finditer(r"[.!?](?=\s+[A-Z0-9*\"'])", text):
        if _ABBREV.search(text[:m.end()]):
            continue
        out.append(text[start:m.end()].strip())
        start = m.end()
    if text[start:].strip():
        out.append(text[start:].strip())
    return out


def _shorten(text: str, limit: int = 220) -> str:
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " …"
    return text.rstrip(":").rstrip()


# --------------------------------------------------------------------------------------------------------------
# Execution

@dataclass
class NotebookResult:
    """What the course knows about one notebook; written to ``notebooks/<stem>.json`` and ``course.json``."""

    name: str                   # file name, e.g. 00_quickstart.ipynb
    title: str
    description: str
    status: str                 # ok | failed | missing (never executed; --skip-execute)
    seconds: float | None       # wall time of its (last) execution
    params: dict
    source_sha256: str
    budget_config: dict | None = None  # the budget's resolved sizes: a changed definition of it re-executes
    error: str | None = None
    reused: bool = False        # not executed by this build: source, parameters and budget unchanged since
    stale: bool = False         # --skip-execute rendered an execution of an older source, parameters or budget
    finished: str | None = None
    page: str | None = None     # html page, relative to the course directory
    figures: int = 0            # <img> figures on its page

    @property
    def stem(self) -> str:
        return Path(self.name).stem


def source_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def notebook_params(path: Path, budget: str, seed: int) -> dict:
    """The course parameters a notebook declares in its ``parameters`` cell."""
    from .sweep import notebook_parameters

    declared = notebook_parameters(path)
    return {k: v for k, v in (("budget", budget), ("seed", seed)) if k in declared}


def execution_order(paths: list[Path]) -> list[Path]:
    """The study notebooks (those that launch sweeps: they declare an ``executor`` parameter) first, then the
    rest, each group in name order. Every trained model is cached (:func:`vlmlab.runs.run`), so the teaching
    notebooks, which ask for ``run(..., reuse=True)``, load the models the studies trained instead of training
    the same configurations again."""
    from .sweep import notebook_parameters

    def is_study(p: Path) -> bool:
        try:
            return "executor" in notebook_parameters(p)
        except Exception:  # an unreadable notebook fails later, where its page can show the error
            return False
    return sorted(paths, key=lambda p: (not is_study(p), p.name))


def execute(src: Path, executed: Path, params: dict, *, progress: bool = False) -> tuple[str | None, float]:
    """Execute ``src`` into ``executed`` with papermill (working directory: ``executed``'s folder). Returns
    (error or None, wall seconds); a failing notebook is kept up to its failing cell."""
    import papermill as pm

    executed.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    error = None
    from .widgets import BATCH_ENV

    # the kernel inherits the environment: no interactive widgets (vlmlab.widgets.batch_mode)
    with mock.patch.dict(os.environ, {BATCH_ENV: "1"}):
        try:
            pm.execute_notebook(str(src), str(executed), parameters=params, kernel_name="python3",
                                cwd=str(executed.parent), progress_bar=progress, log_output=False)
        except pm.PapermillExecutionError as e:
            error = f"{e.ename}: {e.evalue} (cell [{e.exec_count}])"
        except KeyboardInterrupt:
            raise
        except Exception as e:  # a dead kernel, a timeout, an unreadable notebook: the course goes on
            error = f"{type(e).__name__}: {e}"
    return error, time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------------------
# Rendering

SIDEBAR_CSS = """
body, body.jp-Notebook { padding-left: 264px; }  /* the lab stylesheet pads .jp-Notebook */
.course-sidebar { position: fixed; top: 0; left: 0; bottom: 0; width: 264px; box-sizing: border-box;
                  overflow-y: auto; padding: 18px 14px 32px; background: #f1f5f9; border-right: 1px solid #e2e8f0;
                  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1a202c; }
.course-sidebar .home { display: block; font-size: 17px; font-weight: 650; color: #1a202c; text-decoration: none;
                        margin-bottom: 2px; }
.course-sidebar .budget { font-size: 12px; color: #64748b; margin-bottom: 10px; }
.course-sidebar .part { font-size: 12px; text-transform: uppercase; letter-spacing: .05em; color: #64748b;
                        margin: 14px 0 4px; }
.course-sidebar ol { list-style: none; margin: 0; padding: 0; }
.course-sidebar li a { display: block; padding: 3px 8px; border-radius: 4px; color: #1e3a5f;
                       text-decoration: none; }
.course-sidebar li a:hover { background: #e2e8f0; }
.course-sidebar li.current > a { background: #dbeafe; font-weight: 600; }
.course-sidebar li.failed > a::after { content: " ✗"; color: #c53030; }
.course-sidebar ol.toc { margin: 2px 0 6px 12px; border-left: 2px solid #cbd5e1; }
.course-sidebar ol.toc a { font-size: 13px; padding: 2px 8px; color: #334155; }
@media (max-width: 1000px) {
  body, body.jp-Notebook { padding-left: 0; }
  .course-sidebar { position: static; width: auto; border-right: 0; border-bottom: 1px solid #e2e8f0; }
}
"""

PAGE_CSS = """
:root { --course-width: 1120px; --course-accent: #2b6cb0; }
body.jp-Notebook { background: #fafafa; }
main { max-width: var(--course-width); margin: 0 auto; padding: 0 24px 48px; background: white;
       box-shadow: 0 0 12px rgba(0,0,0,.06); }
.jp-RenderedHTMLCommon { font-size: 15px; line-height: 1.6; }
.jp-RenderedHTMLCommon h1 { font-size: 1.9em; margin-top: 0.6em; }
.jp-RenderedHTMLCommon h2 { font-size: 1.45em; margin-top: 1.4em; border-bottom: 1px solid #e2e8f0;
                            padding-bottom: 0.2em; }
.jp-RenderedHTMLCommon p, .jp-RenderedHTMLCommon li { max-width: 80ch; }
.jp-InputArea-editor { border-radius: 4px; }
.jp-InputArea-editor .highlight pre { white-space: pre-wrap; overflow-wrap: anywhere; }  /* no hidden code */
.jp-OutputArea-output pre { white-space: pre-wrap; overflow-wrap: anywhere; }
.jp-OutputArea-output img { max-width: 100%; height: auto; }
.jp-RenderedHTMLCommon table { font-size: 13px; }
.course-nav { display: grid; grid-template-columns: 1fr auto 1fr; align-items: center; gap: 16px;
              padding: 10px 0; margin-bottom: 8px; border-bottom: 1px solid #e2e8f0; font: 14px/1.4 system-ui,
              -apple-system, "Segoe UI", Roboto, sans-serif; }
.course-nav.bottom { border-bottom: 0; border-top: 1px solid #e2e8f0; margin-top: 32px; }
.course-nav .next { text-align: right; }
.course-nav a { color: var(--course-accent); text-decoration: none; }
.course-nav a:hover { text-decoration: underline; }
.course-nav .meta { color: #4a5568; }
.course-banner { font: 14px/1.5 system-ui, sans-serif; border-radius: 6px; padding: 10px 14px; margin: 12px 0; }
.course-banner.failed { background: #fff5f5; border: 1px solid #feb2b2; color: #742a2a; }
.course-banner.info { background: #ebf8ff; border: 1px solid #bee3f8; color: #2a4365; }
.course-banner code { font-size: 13px; }
.course-banner a { color: inherit; text-decoration: underline; }
.course-widget { font: 14px/1.5 system-ui, sans-serif; background: #f7fafc; border: 1px dashed #a0aec0;
                 border-radius: 6px; padding: 8px 12px; color: #2d3748; }
.course-widget .controls { font-family: var(--jp-code-font-family, monospace); font-size: 13px; }
.course-progress { font-size: 13px; display: flex; align-items: center; gap: 8px; }
.course-progress progress { width: 200px; }
""" + SIDEBAR_CSS

INDEX_CSS = """
body { margin: 0; background: #fafafa; color: #1a202c; font: 16px/1.55 system-ui, -apple-system, "Segoe UI",
       Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 32px 48px; background: white;
       box-shadow: 0 0 12px rgba(0,0,0,.06); min-height: 100vh; box-sizing: border-box; }
h1 { font-size: 2em; margin: 0 0 4px; }
.lead { color: #4a5568; margin: 0 0 16px; max-width: 80ch; }
.facts { display: flex; flex-wrap: wrap; gap: 8px 24px; padding: 10px 14px; background: #f7fafc;
         border: 1px solid #e2e8f0; border-radius: 6px; font-size: 14px; }
.facts b { font-weight: 600; }
.note { font-size: 14px; color: #744210; background: #fffff0; border: 1px solid #faf089; border-radius: 6px;
        padding: 8px 14px; margin-top: 12px; }
.failed-box a { color: #9b2c2c; }
.failed-box { font-size: 14px; color: #742a2a; background: #fff5f5; border: 1px solid #feb2b2;
              border-radius: 6px; padding: 8px 14px; margin-top: 12px; }
ol.notebooks { list-style: none; padding: 0; margin: 24px 0 0; }
ol.notebooks li { display: grid; grid-template-columns: 240px 1fr 110px; gap: 18px; align-items: center;
                  padding: 14px 0; border-top: 1px solid #e2e8f0; }
ol.notebooks li:last-child { border-bottom: 1px solid #e2e8f0; }
.thumb { width: 240px; height: 150px; display: flex; align-items: center; justify-content: center;
         background: white; border: 1px solid #e2e8f0; border-radius: 4px; overflow: hidden; }
.thumb img { max-width: 100%; max-height: 100%; }
.thumb .none { color: #a0aec0; font-size: 13px; }
.title { font-size: 18px; font-weight: 600; }
.title a { color: #2b6cb0; text-decoration: none; }
.title a:hover { text-decoration: underline; }
.desc { color: #4a5568; font-size: 15px; margin-top: 2px; }
.err { color: #9b2c2c; font-size: 13px; font-family: ui-monospace, Menlo, Consolas, monospace; margin-top: 4px;
       white-space: pre-wrap; word-break: break-word; }
.time { text-align: right; font-size: 14px; color: #2d3748; font-variant-numeric: tabular-nums; }
.status { display: inline-block; font-size: 12px; padding: 1px 8px; border-radius: 10px; margin-top: 4px; }
.status.ok { background: #c6f6d5; color: #22543d; }
.status.failed, .status.missing { background: #fed7d7; color: #742a2a; }
footer { margin-top: 28px; font-size: 14px; color: #4a5568; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.9em; background: #edf2f7;
       padding: 1px 4px; border-radius: 3px; }
h2 { font-size: 1.35em; margin: 28px 0 8px; }
table.path { border-collapse: collapse; width: 100%; font-size: 15px; }
table.path th, table.path td { text-align: left; vertical-align: top; padding: 6px 10px;
                               border-bottom: 1px solid #e2e8f0; }
table.path th { font-size: 13px; color: #4a5568; font-weight: 600; }
table.path td.min { white-space: nowrap; font-variant-numeric: tabular-nums; }
table.path a { color: #2b6cb0; text-decoration: none; }
.path-note { font-size: 13px; color: #4a5568; margin: 6px 0 0; max-width: 90ch; }
""" + SIDEBAR_CSS

# extends nbconvert's "lab" template: no scripts fetched from a CDN (the pages work offline; the course's own copy
# of MathJax only on pages that have math), figures with alternative text, the sidebar, navigation and stylesheet
PAGE_TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
{%- if resources.course.math -%}{{ resources.course.mathjax }}{%- endif -%}
{%- endblock html_head_js_mathjax -%}
{% block data_png scoped %}
<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}"
alt="{{ output.metadata.get('course_alt', 'figure') | escape_html }}"
{%- set width=output | get_metadata('width', 'image/png') -%}
{%- if width is not none %} width={{ width | escape_html }}{%- endif %}
{%- set height=output | get_metadata('height', 'image/png') -%}
{%- if height is not none %} height={{ height | escape_html }}{%- endif %}>
</div>
{% endblock data_png %}
{% block extra_css %}<style type="text/css">{{ resources.course.css }}</style>{% endblock extra_css %}
{%- block body_header -%}
<body class="jp-Notebook" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
{{ resources.course.sidebar }}
<main>
{{ resources.course.nav_top }}
{{ resources.course.banner }}
{%- endblock body_header -%}
{% block body_footer %}
{{ resources.course.nav_bottom }}
{{ super() }}
{% endblock body_footer %}
"""


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _widget_models(state) -> dict:
    """model id -> model, from a notebook's saved widget state."""
    return state.get("state", {}) if isinstance(state, dict) else {}


def _child_ids(model: dict) -> list[str]:
    """The model ids of a container widget's children (saved as "IPY_MODEL_<id>" references)."""
    return [c[len("IPY_MODEL_"):] for c in model.get("state", {}).get("children", []) or []
            if isinstance(c, str) and c.startswith("IPY_MODEL_")]


def _progress_note(view: dict, state: dict) -> str | None:
    """A tqdm progress bar (an HBox of HTML, FloatProgress, HTML) as it ended: a static bar and its text; ""
    for a bar its loop hid when done (tqdm ``leave=False``), whose saved text is throttled and stale. None when
    the view is not a progress bar."""
    models = _widget_models(state)
    box = models.get(view.get("model_id", ""), {})
    kids = [models.get(i, {}) for i in _child_ids(box)]
    bars = [k for k in kids if k.get("model_name") in ("FloatProgressModel", "IntProgressModel")]
    if len(bars) != 1:
        return None
    layout = models.get(str(box.get("state", {}).get("layout", ""))[len("IPY_MODEL_"):], {}).get("state", {})
    if layout.get("visibility") == "hidden" or layout.get("display") == "none":
        return ""
    bar = bars[0]["state"]
    text = " ".join(html.unescape(str(k["state"].get("value", ""))).replace("\u2007", " ").strip()
                    for k in kids if k.get("model_name") == "HTMLModel")
    value, top = bar.get("value", 0) or 0, bar.get("max", 0) or 0
    return (f"<div class='course-progress'><progress value='{value}' max='{top}'></progress> "
            f"<code>{html.escape(text)}</code></div>")


def _widget_note(view: dict, state: dict) -> str:
    """A static stand-in for a widget view: what it is and the values its controls had when executed."""
    models = _widget_models(state)
    controls = []

    def walk(model_id: str, depth: int = 0):
        m = models.get(model_id)
        if not m or depth > 20:
            return
        s = m.get("state", {})
        desc = s.get("description")
        if desc and "value" in s and not isinstance(s["value"], (dict, list)):
            rng = f" (range {s['min']}–{s['max']})" if "min" in s and "max" in s else ""
            controls.append(f"{desc} = {s['value']}{rng}")
        elif desc and "index" in s and isinstance(s.get("_options_labels"), list):
            labels = s["_options_labels"]
            idx = s["index"]
            value = labels[idx] if isinstance(idx, int) and 0 <= idx < len(labels) else idx
            controls.append(f"{desc} = {value} (one of {', '.join(map(str, labels))})")
        for child in _child_ids(m):
            walk(child, depth + 1)

    walk(view.get("model_id", ""))
    ctl = ("<div class='controls'>controls as executed: " + html.escape("; ".join(controls)) + "</div>"
           if controls else "")
    return ("<div class='course-widget'><b>Interactive widget</b> — it needs a live kernel: open this notebook in "
            "JupyterLab (<code>make lab</code>) to use it. A static figure on this page shows the same "
            f"information.{ctl}</div>")


def prepare_for_html(nb, pages: dict[str, str] | None = None):
    """A copy of an executed notebook ready for a static page: progress bars shown as they ended, other widget
    views replaced by a note naming their controls (:func:`_widget_note`), the widget state dropped (it would load
    a renderer from a CDN), and mentions of the notebooks in ``pages`` (stem -> page) linked to their pages."""
    import copy

    import nbformat

    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if pages and cell.cell_type == "markdown":
            cell.source = link_notebooks(cell.source, pages)
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {})
    # papermill marks a failure with two markdown cells of inline HTML that markdown renders badly: the page's
    # banner says it at the top; a plain marker stays right above the failing cell
    cells = []
    for cell in nb.cells:
        if "papermill-error-cell-tag" in cell.metadata.get("tags", []):
            if "papermill-error-cell" in cell.source and "stopped" in cell.source:
                cells.append(nbformat.v4.new_markdown_cell(
                    "<div class='course-banner failed' id='papermill-error-cell'>Execution stopped with an "
                    "exception in the next cell; the cells after it did not run.</div>"))
            continue
        cells.append(cell)
    nb.cells = cells
    n_fig = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if "image/png" in out.get("data", {}):
                n_fig += 1
                out.setdefault("metadata", {})["course_alt"] = \
                    f"figure {n_fig}: output of cell [{cell.get('execution_count')}]"
        if "injected-parameters" in cell.metadata.get("tags", []) and cell.source.startswith("# Parameters"):
            cell.source = ("# Parameters of this execution (papermill injected them; they override the defaults "
                           "above)" + cell.source[len("# Parameters"):])
        outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW in data:
                note = _progress_note(data[WIDGET_VIEW], state)
                if note == "":
                    continue  # a bar hidden when its loop ended
                out = nbformat.v4.new_output("display_data", data={
                    "text/html": note or _widget_note(data[WIDGET_VIEW], state),
                    "text/plain": data.get("text/plain", "widget")})
            outputs.append(out)
        if "outputs" in cell:
            cell.outputs = outputs
    return nb


def _has_math(nb) -> bool:
    rx = re.compile(r"\$[^$\n]+\$|\$\$|\\\(|\\\[|\\begin\{")
    for cell in nb.cells:
        if cell.cell_type == "markdown" and rx.search(cell.source):
            return True
        for out in cell.get("outputs", []):
            md = out.get("data", {}).get("text/markdown", "")
            if isinstance(md, str) and rx.search(md):
                return True
    return False


# --------------------------------------------------------------------------------------------------------------
# Formulas offline, the sidebar, cross-references, the reading path

MATHJAX_DIR = "_static/mathjax"  # relative to the course directory


def mathjax_source() -> Path:
    """MathJax 2.7 as the PyPI package jupyter-server-mathjax ships it (a dependency: pip installs it with vlmlab)."""
    import jupyter_server_mathjax

    return Path(jupyter_server_mathjax.__file__).parent / "static"


def bundle_mathjax(out: Path) -> Path:
    """Copy MathJax into ``out/_static/mathjax`` once per package version, so pages typeset formulas offline."""
    from importlib.metadata import version

    src, dest = mathjax_source(), Path(out) / MATHJAX_DIR
    stamp = dest / ".from"
    key = f"jupyter-server-mathjax {version('jupyter-server-mathjax')}"
    if stamp.is_file() and stamp.read_text() == key:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    # the package ships SVG fonts without the SVG output code, so they are dead weight here (2.5 MB)
    shutil.copytree(src, dest, ignore=lambda d, names: [n for n in names if n == "__pycache__"
                                                        or (n == "SVG" and Path(d).name == "output")])
    stamp.write_text(key)
    return dest


def mathjax_head(prefix: str = MATHJAX_DIR) -> str:
    """The <head> scripts that load the course's MathJax; it sets ``data-mathjax="typeset"`` on <html> when done."""
    return f"""<script type="text/x-mathjax-config">
MathJax.Hub.Config({{
  TeX: {{ equationNumbers: {{ autoNumber: "AMS", useLabelIds: true }} }},
  tex2jax: {{ inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
             processEscapes: true, processEnvironments: true }},
  "HTML-CSS": {{ availableFonts: ["STIX-Web"], preferredFont: "STIX-Web", webFont: "STIX-Web", imageFont: null,
                linebreaks: {{ automatic: true }} }},
  displayAlign: "center", messageStyle: "none"
}});
MathJax.Hub.Queue(function () {{ document.documentElement.setAttribute("data-mathjax", "typeset"); }});
</script>
<script src="{html.escape(prefix)}/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"></script>
"""


PARTS = {"0": "Start here", "1": "One design each", "2": "Ablations", "3": "All designs side by side"}


def _short_title(title: str) -> str:
    return title.split(":")[0]  # "01 · The built-in world: scenes, ..." -> "01 · The built-in world"


def sidebar(entries: list[NotebookResult], current: int | None, toc: list[tuple[str, str]], budget: str) -> str:
    """The course's pages grouped by part (the first digit of their number), the current page marked and followed
    by its sections (``toc``: (anchor, text) pairs); ``current`` None is the index."""
    parts: dict[str, list[str]] = {}
    for k, e in enumerate(entries):
        if not e.page:
            continue
        classes = [c for c, on in (("current", k == current), ("failed", e.status == "failed")) if on]
        attr = f' class="{" ".join(classes)}"' if classes else ""
        here = ' aria-current="page"' if k == current else ""
        item = (f'<li{attr}><a href="{html.escape(e.page)}"{here} title="{html.escape(e.title)}">'
                f"{html.escape(_short_title(e.title))}</a>")
        if k == current and toc:
            item += '<ol class="toc">' + "".join(f'<li><a href="#{html.escape(a)}">{html.escape(t)}</a></li>'
                                                 for a, t in toc) + "</ol>"
        parts.setdefault(PARTS.get(e.stem[:1], "More"), []).append(item + "</li>")
    body = "".join(f'<div class="part">{html.escape(name)}</div><ol>{"".join(items)}</ol>'
                   for name, items in parts.items())
    home = ' aria-current="page"' if current is None else ""
    return (f'<nav class="course-sidebar" aria-label="course contents"><a class="home" href="index.html"{home}>'
            f'vlmlab course</a><div class="budget">{html.escape(budget)} budget</div>{body}</nav>')


_H2 = re.compile(r"<h2 id=\"([^\"]+)\"[^>]*>(.*?)</h2>", re.S)


def page_sections(body: str) -> list[tuple[str, str]]:
    """(anchor, text) of every second-level heading of a rendered page, for its table of contents."""
    return [(html.unescape(a), " ".join(html.unescape(re.sub(r"<[^>]+>", "", t)).replace("¶", "").split()))
            for a, t in _H2.findall(body)]


_LINK = re.compile(r"!?\[[^\]]*\]\([^)]*\)")
_FENCE = re.compile(r"(^```.*?^```[^\n]*$|^~~~.*?^~~~[^\n]*$)", re.S | re.M)


def link_notebooks(markdown: str, pages: dict[str, str]) -> str:
    """Markdown with its mentions of other course notebooks as links to their pages (``pages``: stem -> page):
    ``01_world.ipynb`` (or the stem alone) in inline code, "notebook 01", and Markdown links to ``01_world.ipynb``.
    Code blocks, existing link texts and quoted titles ("Notebook 20 again") are left as they are."""
    by_number = {stem[:2]: page for stem, page in pages.items() if stem[:2].isdigit()}

    def ipynb_target(m):
        link = m.group(0)
        return re.sub(r"\]\((?:\./)?(\d\d_\w+)\.ipynb(#[^)]*)?\)",
                      lambda t: f"]({pages[t.group(1)]}{t.group(2) or ''})" if t.group(1) in pages else t.group(0),
                      link)

    def prose(text: str) -> str:
        out, last = [], 0
        for m in re.finditer(r"`[^`\n]+`", text):  # inline code spans
            out.append(mentions(text[last:m.start()]))
            code = m.group(0)
            name = re.fullmatch(r"`(\d\d_\w+?)(\.ipynb)?`", code)
            before = text[:m.start()]
            if name and name.group(1) in pages and not before.endswith("["):
                code = f"[{code}]({pages[name.group(1)]})"
            out.append(code)
            last = m.end()
        out.append(mentions(text[last:]))
        return "".join(out)

    def mentions(text: str) -> str:
        return re.sub(r'(?<!["\w\[])([Nn]otebook (\d\d))\b(?!\]|")',
                      lambda m: f"[{m.group(1)}]({by_number[m.group(2)]})" if m.group(2) in by_number
                      else m.group(0), text)

    def outside_links(text: str) -> str:
        out, last = [], 0
        for m in _LINK.finditer(text):
            out += [prose(text[last:m.start()]), ipynb_target(m)]
            last = m.end()
        out.append(prose(text[last:]))
        return "".join(out)

    parts = _FENCE.split(markdown)
    return "".join(part if i % 2 else outside_links(part) for i, part in enumerate(parts))


def reading_path(notebooks_dir: str | Path = NOTEBOOKS) -> list[dict]:
    """The rows of ``docs/reading-path.csv`` of the checkout that holds ``notebooks_dir`` (notebook, what you
    learn, minutes at the default budget); none when it has no such file."""
    import csv

    path = Path(notebooks_dir).resolve().parent / "docs" / "reading-path.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if row.get("notebook")]


def _reading_path_html(rows: list[dict], entries: list[NotebookResult]) -> str:
    if not rows:
        return ""
    pages = {e.stem: e.page for e in entries if e.page}
    trs = []
    for r in rows:
        stem = r["notebook"].removesuffix(".ipynb")
        name = html.escape(stem)
        cell = f"<a href='{html.escape(pages[stem])}'>{name}</a>" if stem in pages else name
        trs.append(f"<tr><td>{cell}</td><td>{html.escape(r.get('you learn', ''))}</td>"
                   f"<td class='min'>{html.escape(r.get('minutes at default', ''))}</td></tr>")
    return ("<section class='reading-path'><h2 id='reading-path'>Reading path</h2><table class='path'><thead><tr>"
            "<th>notebook</th><th>what you learn</th><th>minutes at the default budget</th></tr></thead><tbody>"
            + "".join(trs) + "</tbody></table><p class='path-note'>Minutes are rough, from earlier builds on the faster of two "
            "2-core CPUs (about 2.4 times as long on a laptop-class one; <code>docs/reading-path.csv</code>). The "
            "study notebooks 20-30 train the models the teaching notebooks then load, so a teaching notebook run on "
            "its own trains its design first.</p></section>")


def _first_png(nb) -> str | None:
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if png:
                return "".join(png) if isinstance(png, list) else png
    return None


def thumbnail(png_b64: str, width: int = 480, height: int = 300) -> str:
    """A small PNG (base64) of a figure, for the index."""
    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(png_b64))).convert("RGB")
    img.thumbnail((width, height), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def _nav(entries: list[NotebookResult], k: int, budget: str, bottom: bool = False) -> str:
    def link(j, text, cls):
        if 0 <= j < len(entries) and entries[j].page:
            e = entries[j]
            short = e.title.split(":")[0]  # "01 · The built-in world: scenes, ..." -> "01 · The built-in world"
            return (f"<span class='{cls}'><a href='{html.escape(e.page)}' title='{html.escape(e.title)}'>"
                    f"{text(short)}</a></span>")
        return f"<span class='{cls}'></span>"

    e = entries[k]
    meta = f"budget <b>{html.escape(budget)}</b> · executed in {_fmt_seconds(e.seconds)}"
    middle = f"<a href='index.html'>↑ course index</a> <span class='meta'>· {meta}</span>"
    prev = link(k - 1, lambda t: f"← {html.escape(t)}", "prev")
    nxt = link(k + 1, lambda t: f"{html.escape(t)} →", "next")
    return f"<nav class='course-nav{' bottom' if bottom else ''}'>{prev}<span>{middle}</span>{nxt}</nav>"


def _banner(e: NotebookResult, budget: str) -> str:
    parts = []
    if e.status == "failed":
        parts.append(f"<div class='course-banner failed'><b>This notebook failed at budget {html.escape(budget)}."
                     f"</b> {html.escape(e.error or '')}<br>The page shows it up to the "
                     "<a href='#papermill-error-cell'>failing cell</a>; the cells after it did not run.</div>")
    if e.stale:
        parts.append("<div class='course-banner info'>This page comes from an earlier execution: the notebook's "
                     "source or the course's parameters changed since. Build the course again to refresh it.</div>")
    if budget == "smoke":
        parts.append("<div class='course-banner info'>Executed at the <b>smoke</b> budget: tiny models trained for a "
                     "few steps. The figures show the mechanics, not meaningful accuracies; build the course at "
                     "<code>BUDGET=default</code> for those.</div>")
    return "".join(parts)


def render_page(executed: Path, page: Path, entries: list[NotebookResult], k: int, budget: str) -> int:
    """Render one executed notebook to ``page`` (code visible, figures embedded). Returns its <img> count."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    e = entries[k]
    pages = {o.stem: o.page for o in entries if o.page and o is not e}
    nb = prepare_for_html(nbformat.read(executed, as_version=4), pages)
    exporter = HTMLExporter(template_name="lab", template_file="course_page.html.j2",
                            extra_loaders=[DictLoader({"course_page.html.j2": PAGE_TEMPLATE})],
                            embed_images=True)
    nb.metadata["title"] = e.title
    math = _has_math(nb)
    if math:
        bundle_mathjax(page.parent)
    marker = "<!-- course-sidebar -->"  # filled in once the page's sections are known
    resources = {"course": {"math": math, "mathjax": mathjax_head(), "css": PAGE_CSS, "sidebar": marker,
                            "banner": _banner(e, budget), "nav_top": _nav(entries, k, budget),
                            "nav_bottom": _nav(entries, k, budget, True)}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    body = body.replace(marker, sidebar(entries, k, page_sections(body), budget), 1)
    page.write_text(body, encoding="utf-8")
    return len(re.findall(r"<img\s[^>]*src=\"data:image/", body))


def render_index(out: Path, entries: list[NotebookResult], info: dict, thumbs: dict[str, str | None],
                 path_rows: list[dict] | None = None) -> Path:
    """``index.html``: the sidebar, the course's facts (budget, seed, total execution time, failures), the reading
    path (``path_rows``: :func:`reading_path`), then one row per notebook (thumbnail of its first figure, title
    link, description, wall time, status)."""
    budget = info["budget"]
    failed = [e for e in entries if e.status != "ok"]
    rows = []
    for e in entries:
        thumb = thumbs.get(e.name)
        img = (f"<img alt='first figure of {html.escape(e.title)}' src='data:image/png;base64,{thumb}'>"
               if thumb else "<span class='none'>no figure</span>")
        title = html.escape(e.title)
        if e.page:
            img = f"<a href='{html.escape(e.page)}'>{img}</a>"
            title = f"<a href='{html.escape(e.page)}'>{title}</a>"
        status = {"ok": "ok", "failed": "failed", "missing": "not executed"}[e.status]
        badges = f"<span class='status {e.status}'>{status}</span>"
        err = f"<div class='err'>{html.escape(e.error)}</div>" if e.error else ""
        rows.append(f"<li><div class='thumb'>{img}</div><div><div class='title'>{title}</div>"
                    f"<div class='desc'>{html.escape(e.description)}</div>{err}</div>"
                    f"<div class='time'>{_fmt_seconds(e.seconds)}<br>{badges}</div></li>")
    facts = [f"<span>budget <b>{html.escape(budget)}</b></span>",
             f"<span>seed <b>{info['seed']}</b></span>",
             f"<span>{len(entries)} notebooks</span>",
             f"<span>executing them took <b>{_fmt_seconds(info['execute_seconds'])}</b> "
             "(sum of the wall times below)</span>",
             f"<span>built {html.escape(info['built'])}</span>"]
    notes = ""
    if budget == "smoke":
        notes += ("<div class='note'>Built at the <b>smoke</b> budget: tiny models trained for a few steps, so "
                  "the pages show how everything works, not meaningful accuracies.</div>")
    if failed:
        notes += ("<div class='failed-box'><b>" + str(len(failed)) + " notebook(s) did not complete:</b> "
                  + ", ".join(f"<a href='{html.escape(e.page)}'>{html.escape(e.stem)}</a>" if e.page
                              else html.escape(e.stem) for e in failed)
                  + ". Their pages show the error.</div>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>vlmlab course ({html.escape(budget)} budget)</title><style>{INDEX_CSS}</style></head>
<body>{sidebar(entries, None, [], budget)}<main>
<h1>vlmlab: the course</h1>
<p class="lead">How do vision-language models turn an image into something a language model can read? These
notebooks build the designs on a synthetic world with tiny pretrained backbones and measure them. Each page is
the notebook as executed: its code, its figures, and conclusions computed from its own numbers.</p>
<div class="facts">{''.join(facts)}</div>
{notes}
{_reading_path_html(path_rows or [], entries)}
<h2 id="notebooks">The notebooks as executed</h2>
<ol class="notebooks">
{chr(10).join(rows)}
</ol>
<footer>Rebuild with <code>make course BUDGET={html.escape(budget)}</code> (or
<code>vlmlab course --budget {html.escape(budget)}</code>); notebooks whose source and parameters did not change
are not executed again. Open the notebooks themselves with <code>make lab</code>.</footer>
</main></body></html>
"""
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------------------
# The build

@dataclass
class CourseResult:
    out: Path
    budget: str
    seed: int
    notebooks: list[NotebookResult] = field(default_factory=list)
    execute_seconds: float = 0.0   # sum of the notebooks' wall times (what executing the course costs)
    build_seconds: float = 0.0     # this build's wall time (execution of changed notebooks + rendering)

    @property
    def failed(self) -> list[NotebookResult]:
        return [e for e in self.notebooks if e.status != "ok"]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def index(self) -> Path:
        return self.out / "index.html"


def _write_json(path: Path, obj) -> None:
    write_json_atomic(path, obj)
    path.chmod(0o644)  # a static site: readable by the web server, like the pages


def _read_record(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def build_course(budget: str = "default", *, seed: int = 0, only: list[str] | None = None,
                 out: str | Path | None = None, notebooks_dir: str | Path = NOTEBOOKS, skip_execute: bool = False,
                 force: bool = False, progress: bool = True, log=None) -> CourseResult:
    """Execute (or reuse) and render the course notebooks; see the module docstring. ``only`` selects notebooks
    to build; the index also lists the notebooks built earlier into the same directory. ``log``: a function
    taking one line of text (default: nothing)."""
    import nbformat
    from tqdm.auto import tqdm

    from .budgets import get_budget

    sizes = get_budget(budget).as_dict()  # an unknown budget fails here, before anything executes
    t_build = time.perf_counter()
    log = log or (lambda line: None)
    out = Path(out) if out else default_out(budget)
    nb_out = out / "notebooks"
    nb_out.mkdir(parents=True, exist_ok=True)
    everything = discover(notebooks_dir)
    selected = discover(notebooks_dir, only)
    if not selected:
        raise ValueError(f"no course notebooks ({COURSE_GLOB}) in {notebooks_dir}")
    # the index lists the selection plus what earlier builds left here
    listed = [p for p in everything if p in selected or (nb_out / f"{p.stem}.json").is_file()]

    entries: list[NotebookResult] = []
    bar = tqdm(total=len(selected), desc="course", unit="notebook", disable=not progress, file=sys.stderr)
    for src in execution_order(listed):
        title, desc = summary(nbformat.read(src, as_version=4))
        title = title or src.stem
        params = notebook_params(src, budget, seed)
        budget_config = sizes if "budget" in params else None
        sha = source_hash(src)
        executed = nb_out / src.name
        rec_path = nb_out / f"{src.stem}.json"
        rec = _read_record(rec_path)
        entry = NotebookResult(name=src.name, title=title, description=desc, status="missing", seconds=None,
                               params=params, source_sha256=sha, budget_config=budget_config)
        unchanged = bool(rec and rec.get("source_sha256") == sha and rec.get("params") == params
                         and rec.get("budget_config") == budget_config)
        if src not in selected or skip_execute:
            if rec and executed.is_file():
                entry.status, entry.seconds, entry.error = rec.get("status", "failed"), rec.get("seconds"), \
                    rec.get("error")
                entry.finished, entry.reused, entry.stale = rec.get("finished"), True, not unchanged
                entry.params = rec.get("params", params)  # what the page shows was executed with these
            else:
                entry.error = ("not executed yet: build without --skip-execute" if skip_execute
                               else "no executed notebook")
            if src in selected:
                bar.update(1)
        elif not force and unchanged and rec.get("status") == "ok" and executed.is_file():
            entry.status, entry.seconds, entry.finished, entry.reused = "ok", rec.get("seconds"), \
                rec.get("finished"), True
            log(f"{src.stem}: unchanged since its execution of {rec.get('finished')}: reused")
            bar.update(1)
        else:
            bar.set_postfix_str(src.stem)
            rec_path.unlink(missing_ok=True)  # an interrupted execution leaves no record, so it runs again
            error, seconds = execute(src, executed, params, progress=progress)
            entry.status, entry.error, entry.seconds = ("failed" if error else "ok"), error, seconds
            entry.finished = _dt.datetime.now().isoformat(timespec="seconds")
            _write_json(rec_path, {k: v for k, v in asdict(entry).items()
                                         if k not in ("reused", "stale", "page", "figures")})
            log(f"{src.stem}: {'FAILED: ' + error if error else 'ok'} ({_fmt_seconds(seconds)})")
            bar.update(1)
        entries.append(entry)
    bar.close()
    entries.sort(key=lambda e: e.name)  # pages and index in name order, whatever the execution order

    for e in entries:
        e.page = f"{e.stem}.html" if (nb_out / e.name).is_file() else None
    thumbs = {}
    for k, e in enumerate(entries):
        if e.page is None:
            (out / f"{e.stem}.html").unlink(missing_ok=True)
            continue
        executed = nb_out / e.name
        e.figures = render_page(executed, out / e.page, entries, k, budget)
        png = _first_png(nbformat.read(executed, as_version=4))
        thumbs[e.name] = thumbnail(png) if png else None

    result = CourseResult(out=out, budget=budget, seed=seed, notebooks=entries,
                          execute_seconds=sum(e.seconds or 0.0 for e in entries))
    info = {"budget": budget, "seed": seed, "execute_seconds": result.execute_seconds,
            "built": _dt.datetime.now().strftime("%Y-%m-%d %H:%M")}
    render_index(out, entries, info, thumbs, reading_path(notebooks_dir))
    result.build_seconds = time.perf_counter() - t_build
    _write_json(out / "course.json", {
        **info, "build_seconds": result.build_seconds, "index": "index.html",
        "failed": [e.name for e in result.failed],
        "notebooks": [asdict(e) for e in entries]})
    return result


# --------------------------------------------------------------------------------------------------------------
# Command line: `vlmlab course`

def cmd_course(a) -> None:
    root = checkout()  # a fresh clone builds its own notebooks, not those of the checkout vlmlab came from
    res = build_course(a.budget, seed=a.seed, only=a.only,
                       out=a.out or root / "papermill_runs" / f"course-{a.budget}",
                       notebooks_dir=a.notebooks or root / "notebooks",
                       skip_execute=a.skip_execute, force=a.force, progress=not a.quiet,
                       log=lambda line: print(line, file=sys.stderr))
    width = max(len(e.stem) for e in res.notebooks)
    for e in res.notebooks:
        tag = "ok" if e.status == "ok" else e.status.upper()
        print(f"  {e.stem:{width}s}  {tag:7s} {_fmt_seconds(e.seconds):>9s}{'  (reused)' if e.reused else ''}"
              + (f"  {e.error}" if e.error else ""))
    print(f"course at budget {res.budget}: {len(res.notebooks)} notebook(s); executing them took "
          f"{_fmt_seconds(res.execute_seconds)} (this build: {_fmt_seconds(res.build_seconds)})")
    print(f"index: {res.index}")
    if not res.ok:
        print(f"{len(res.failed)} notebook(s) failed: {', '.join(e.stem for e in res.failed)}; their pages show "
              f"the error. Re-run to retry only those.", file=sys.stderr)
        raise SystemExit(1)


def add_cli(sub) -> None:
    s = sub.add_parser("course", help="execute the numbered notebooks at a budget and render them into a static "
                                      "HTML site (papermill_runs/course-<budget>/index.html)",
                       description="Execute notebooks/NN_*.ipynb in order with papermill (parameters budget, seed) "
                                   "and render each to HTML with its figures embedded, plus an index page. "
                                   "Unchanged notebooks are reused; a failing notebook does not stop the course.")
    s.add_argument("--budget", default="default", help="budget every notebook runs at (default: default)")
    s.add_argument("--seed", type=int, default=0, help="seed parameter of every notebook (default: 0)")
    s.add_argument("--only", nargs="+", metavar="NOTEBOOK",
                   help="build only these notebooks: names, number prefixes or globs (e.g. 01_world '2?_*')")
    s.add_argument("--out", help="course directory (default: papermill_runs/course-<budget> of the checkout the "
                                 "command runs in)")
    s.add_argument("--skip-execute", action="store_true", help="execute nothing; re-render the executed notebooks")
    s.add_argument("--force", action="store_true", help="re-execute even notebooks that are unchanged")
    s.add_argument("--notebooks", help="notebooks directory (default: notebooks/ of the checkout the command runs "
                                       f"in: the working directory or one above it; else {NOTEBOOKS})")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(fn=cmd_course)


__all__ = ["discover", "summary", "build_course", "checkout", "CourseResult", "NotebookResult", "render_page",
           "render_index", "prepare_for_html", "link_notebooks", "reading_path", "sidebar", "bundle_mathjax",
           "add_cli"]
