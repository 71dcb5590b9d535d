"""Data sources behind the one ``data`` parameter: LLaVA-format JSON files and datasets save_to_disk
directories, made here from the exported world, train and evaluate at the smoke budget from the CLI, the run
notebook and a sweep; a bad file fails before training, naming the file and the row."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmlab.cli import main
from vlmlab.data.sources import held_out, examples, resolve
from vlmlab.export import export_world
from vlmlab.runs import RunConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    export_world(out, "train", "llava", per_category=3)
    export_world(out, "train", "hf", per_category=3)
    export_world(out, "test", "llava", per_category=2)
    return out


def _bad_llava(tmp_path, sources, edit) -> Path:
    rows = json.loads((sources / "train.json").read_text())
    for r in rows:
        r["image"] = str(sources / r["image"])
    edit(rows)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows))
    return path


def _turn(rows, i, t, key, value):
    rows[i]["conversations"][t][key] = value


@pytest.mark.parametrize("edit, pattern", [
    (lambda rows: rows[5].update(image="nowhere.png"), r"bad\.json, row 5: image '.*nowhere\.png' does not exist"),
    (lambda rows: _turn(rows, 3, 1, "from", "assistant"), r"row 3: turn 1: 'from' is 'assistant', expected 'gpt'"),
    (lambda rows: _turn(rows, 7, 0, "value", "what color ?"), r"row 7: no <image> placeholder in turn 0"),
    (lambda rows: rows[2].pop("conversations"), r"row 2: missing \['conversations'\]"),
    (lambda rows: (rows[1].update(id=None), rows[4].update(id=None)), r"row 1: 'id' must be .*\(1 more bad rows\)"),
    (lambda rows: rows.clear(), r"bad\.json: no rows"),
])
def test_a_bad_llava_file_fails_before_training_naming_the_file_and_row(tmp_path, sources, edit, pattern, capsys):
    path = _bad_llava(tmp_path, sources, edit)
    with pytest.raises(ValueError, match=pattern):
        RunConfig.from_params(budget="smoke", data=str(path))
    assert main(["run", "--budget", "smoke", "--data", str(path), "--in-process", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and not (tmp_path / "r").exists()


def test_a_bad_hf_directory_fails_naming_the_directory_and_row(tmp_path, sources):
    from datasets import load_from_disk

    ds = load_from_disk(str(sources / "train"))
    ds.remove_columns(["question"]).save_to_disk(str(tmp_path / "nocol"))
    with pytest.raises(ValueError, match=r"nocol: columns .*expected an image column .*'question' \+ 'answer'"):
        RunConfig.from_params(budget="smoke", data=str(tmp_path / "nocol"))
    ds.map(lambda r, i: {"answer": "" if i == 4 else r["answer"]}, with_indices=True).save_to_disk(
        str(tmp_path / "empty_answer"))
    with pytest.raises(ValueError, match=r"empty_answer, row 4: pair 0: an empty answer"):
        RunConfig.from_params(budget="smoke", data=str(tmp_path / "empty_answer"))
    ds.select([]).save_to_disk(str(tmp_path / "none"))
    with pytest.raises(ValueError, match=r"none: no rows"):
        RunConfig.from_params(budget="smoke", data=str(tmp_path / "none"))


def test_data_parameters_are_checked(tmp_path, sources):
    with pytest.raises(ValueError, match=r"parameter 'data': '.*missing\.json' does not exist"):
        RunConfig.from_params(budget="smoke", data=str(tmp_path / "missing.json"))
    with pytest.raises(TypeError, match=r"parameter 'data' must be a str"):
        RunConfig.from_params(budget="smoke", data=3)
    with pytest.raises(ValueError, match=r"'eval_data' and 'image_root' apply to data other than 'world'"):
        RunConfig.from_params(budget="smoke", eval_data=str(sources / "test.json"))
    with pytest.raises(ValueError, match=r"parameter 'eval_data': .*neither a \.json file nor"):
        RunConfig.from_params(budget="smoke", data=str(sources / "train.json"), eval_data=str(sources / "images"))


def test_the_held_out_share_is_seeded_and_whole_rows():
    from vlmlab.data import Example

    exs = [Example(f"{i}{s}", None, "q", "a") for i in range(30) for s in ("", "#1")]
    train, ev = held_out(exs, seed=0)
    assert len(ev) == 6 and held_out(exs, seed=0) == (train, ev) and held_out(exs, seed=1)[1] != ev
    assert not {e.id.split("#")[0] for e in ev} & {e.id.split("#")[0] for e in train}


def test_both_formats_read_the_same_examples(sources):
    a, b = examples(resolve("data", str(sources / "train.json"))), examples(resolve("data", str(sources / "train")))
    assert [(e.id, e.question, e.answer, e.category, e.answers) for e in a] == [
        (e.id, e.question, e.answer, e.category, e.answers) for e in b]


@pytest.mark.slow
def test_llava_json_trains_and_evaluates_from_the_cli(tmp_path, sources, capsys):
    out = tmp_path / "run"
    assert main(["run", "--budget", "smoke", "--data", str(sources / "train.json"), "--in-process", "--out",
                 str(out)]) == 0
    assert "held-out 10% of the training data" in capsys.readouterr().out
    rec = json.loads((out / "record.json").read_text())
    assert rec["data"]["train"]["format"] == "llava" and rec["data"]["train"]["examples"] == 22
    assert rec["data"]["eval"]["examples"] == 2 and rec["floor"] is None
    assert set(rec["metrics"]) == {"eval"} and 0 <= rec["metrics"]["eval"]["overall"] <= 1


@pytest.mark.slow
def test_hf_directory_trains_from_the_run_notebook_and_a_sweep_checks_it(tmp_path, sources):
    from vlmlab.sweep import SweepSpec, SweepSpecError, execute_notebook

    params = {"budget": "smoke", "data": str(sources / "train"), "eval_data": str(sources / "test.json")}
    rec = execute_notebook(ROOT / "notebooks" / "run.ipynb", tmp_path / "nb", params, progress=False)
    assert rec["data"]["train"]["format"] == "hf" and rec["data"]["eval"]["source"] == str(sources / "test.json")
    assert rec["data"]["eval"]["examples"] == 16 and set(rec["metrics"]["eval"]) >= {"spatial", "overall"}
    spec = {"name": "data", "notebook": "notebooks/run.ipynb", "out": str(tmp_path / "sweep"),
            "fixed": {"budget": "smoke"}, "grid": {"data": [str(sources / "train"), str(sources / "train.json")]}}
    SweepSpec.from_dict(spec).check_values()
    spec["grid"]["data"].append(str(tmp_path / "none.json"))
    with pytest.raises(SweepSpecError, match=r"parameter 'data': .*none\.json' does not exist"):
        SweepSpec.from_dict(spec).check_values()
