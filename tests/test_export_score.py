"""Other models on our world: ``vlmlab export`` writes it, ``vlmlab score`` scores answers to it; vlmlab's own
model, answering the exported files, scores what its record says."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vlmlab.cli import main
from vlmlab.data.llava import read_llava
from vlmlab.predict import predict, write_predictions
from vlmlab.runs import RunConfig, run
from vlmlab.score import normalize, read_predictions

SEED = 1


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return run(RunConfig.from_params(arch="llava", budget="smoke", seed=SEED), progress=False, output_dir=out), out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    for split in ("test", "compositional"):
        assert main(["export", str(out), "--split", split, "--budget", "smoke", "--seed", str(SEED)]) == 0
    assert main(["export", str(out), "--split", "test", "--format", "hf", "--budget", "smoke", "--seed", str(SEED)]) == 0
    return out


@pytest.mark.slow
def test_the_round_trip_scores_what_the_record_says(smoke_run, exported, tmp_path, capsys):
    exp, run_dir = smoke_run
    preds = []
    for split in ("test", "compositional"):
        examples = read_llava(exported / f"{split}.json")
        assert len(examples) == 8 * exp.record["budget"]["eval_per_category"]
        preds += predict(exp.model, examples, exp.world, exp.record["budget"]["eval_batch"])
    # the HF dataset export answers alike: the same pixels and questions
    from vlmlab.data.hf import read_hf

    hf = predict(exp.model, read_hf(exported / "test"), exp.world, exp.record["budget"]["eval_batch"])
    assert hf == preds[:len(hf)]
    path = write_predictions(tmp_path / "predictions.jsonl", preds)
    capsys.readouterr()
    assert main(["score", str(path), "--record", str(run_dir / "record.json"), "--out", str(tmp_path / "s.json")]) == 0
    printed = capsys.readouterr().out
    scored = json.loads((tmp_path / "s.json").read_text())
    rec = exp.record
    assert scored["metrics"] == rec["metrics"] and scored["chance"] == rec["chance"]
    assert scored["valid"] == rec["valid_answer_rate"]["model"]
    assert "ceiling (text oracle)" in printed and f"from the record {run_dir / 'record.json'}" in printed
    # the same floor and ceiling from the reference cache the run filled
    assert main(["score", str(path), "--budget", "smoke", "--out", str(tmp_path / "c.json")]) == 0
    assert "from the reference cache" in capsys.readouterr().out
    cached = json.loads((tmp_path / "c.json").read_text())
    assert cached["floor"] == rec["floor"] and cached["ceiling"] == rec["ceiling"]


def test_the_export_holds_the_worlds_pixels_and_questions(exported):
    from vlmlab.data.images import load_image
    from vlmlab.world import World

    world = World(seed=SEED)
    examples = read_llava(exported / "compositional.json")
    for i in (0, 13):
        s = world.sample("compositional", i)
        assert examples[i].id == f"world-s{SEED}-compositional-{i:06d}"
        assert (examples[i].question, examples[i].answer, examples[i].category) == (
            s.qa.question, s.qa.answer, s.qa.category)
        assert np.array_equal(load_image(examples[i].image, 64), s.image)


def test_normalize():
    assert normalize(" The Red.") == "red" and normalize("2") == "two" and normalize("Yes!") == "yes"
    assert normalize("<eos>") == "eos" and normalize("?") == ""


@pytest.mark.parametrize("lines, pattern", [
    (['{"id": "world-s0-test-000001", "answer": "red"}', "not json"], r"p\.jsonl, line 2: not JSON"),
    (['{"id": "world-s0-test-000001"}'], r"line 1: expected an object with a string 'id' and a string 'answer'"),
    (['{"id": "q1", "answer": "red"}'], r"line 1: id 'q1' is not an exported world id"),
    (['{"id": "world-s0-test-000001", "answer": "red"}', '', '{"id": "world-s0-test-000001", "answer": "blue"}'],
     r"line 3: id 'world-s0-test-000001' repeats line 1"),
    (['{"id": "world-s0-test-000001", "answer": "red"}', '{"id": "world-s2-test-000002", "answer": "red"}'],
     r"line 2: world seed 2, but line 1 has seed 0"),
    ([], r"no predictions"),
])
def test_bad_predictions_name_the_file_and_line(tmp_path, lines, pattern, capsys):
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=pattern):
        read_predictions(p)
    assert main(["score", str(p), "--no-references"]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # one line


def test_bad_export_arguments_fail_in_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "coco"]) == 2
    assert "format='coco'; allowed values: ['llava', 'hf']" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--split", "dev"]) == 2
