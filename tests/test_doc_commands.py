"""The commands the README's "going further" block and docs/beyond.md show, run as written, at the smoke budget
and on data made here (the docs' placeholder paths point at it)."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from vlmlab.cli import build_parser
from vlmlab.data.llava import read_llava
from vlmlab.export import export_world

ROOT = Path(__file__).resolve().parents[1]
PAGES = (ROOT / "README.md", ROOT / "docs" / "beyond.md")
SMOKE = ("run", "export", "score")  # the subcommands that take --budget: the test runs them at the smoke budget


def doc_commands(pages=PAGES) -> list[list[str]]:
    """Every ``.venv/bin/vlmlab ...`` line in the pages' bash blocks, without its comment, once each, in order."""
    seen, out = set(), []
    for page in pages:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.splitlines():
                argv = shlex.split(line, comments=True)
                if argv[:1] == [".venv/bin/vlmlab"] and tuple(argv) not in seen:
                    seen.add(tuple(argv))
                    out.append(argv[1:])
    return out


def test_the_pages_show_each_way_beyond_the_world():
    shown = {a for argv in doc_commands() for a in argv if a.startswith("--")} | {argv[0] for argv in
                                                                                 doc_commands()}
    for want in ("--data", "--eval-data", "--max-new-tokens", "--checkpoint-every", "--resume", "--nproc",
                 "export", "score"):
        assert want in shown, want
    assert doc_commands(PAGES[:1]), "the README's going-further block shows no command"


def test_every_command_parses():
    parser = build_parser()
    for argv in doc_commands():
        parser.parse_args(argv)  # an unknown flag exits 2 here


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """The docs' placeholder paths, made real: a LLaVA file and a datasets folder from the world, and answers."""
    root = tmp_path_factory.mktemp("beyond")
    my = root / "my"
    export_world(my, "train", "llava", per_category=3)
    export_world(my, "test", "llava", per_category=2)
    export_world(my, "train", "hf", per_category=3)
    (my / "test.json").rename(my / "val.json")
    (my / "train").rename(my / "hf-dataset")
    return root


def _answers(root: Path) -> None:
    """Answers to the exported test split, as another model would write them: every question answered 'yes'."""
    rows = read_llava(root / "world-test" / "test.json")
    (root / "answers.jsonl").write_text("".join(json.dumps({"id": e.id, "answer": "yes"}) + "\n" for e in rows))


@pytest.mark.slow
def test_every_command_runs_as_shown(places):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for argv in doc_commands():
        if argv[0] == "score" and not (places / "answers.jsonl").exists():
            _answers(places)
        extra = ["--budget", "smoke"] if argv[0] in SMOKE and "--budget" not in argv else []
        proc = subprocess.run([sys.executable, "-m", "vlmlab.cli", *argv, *extra], cwd=places, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{shlex.join(argv)}:\n{proc.stderr[-2000:]}"
        if argv[0] == "score":
            assert "floor" in proc.stdout and "ceiling" in proc.stdout, proc.stdout
    assert json.loads((places / "runs" / "ddp" / "record.json").read_text())["environment"]["world_size"] == 2
    assert "checkpoints" in json.loads((places / "runs" / "a" / "record.json").read_text())
