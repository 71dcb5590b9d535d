"""The built-in world: determinism, balance (the blind floor cannot beat chance), splits, tokenizer."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from vlmlab.world import CATEGORIES, World, WorldConfig, build_tokenizer, prompt_and_target, wording


def test_same_seed_gives_byte_identical_samples():
    a, b = World(seed=7), World(seed=7)
    for i in (0, 5, 123):
        sa, sb = a.sample("train", i), b.sample("train", i)
        assert sa.image.tobytes() == sb.image.tobytes()
        assert sa.qa == sb.qa and sa.scene == sb.scene
    assert World(seed=8).sample("train", 0).image.tobytes() != a.sample("train", 0).image.tobytes()


def test_text_only_batches_skip_rendering_and_keep_the_text(world):
    """Without images a batch holds the same tokens (scene, questions, extra questions) as with them."""
    for kw in ({}, {"extra_questions": 8}):
        full = world.batch("scene_lm", "train", 40, 16, **kw)
        text = world.batch("scene_lm", "train", 40, 16, with_images=False, **kw)
        assert "pixel_values" in full and "pixel_values" not in text
        for k in ("input_ids", "labels", "attention_mask"):
            assert full[k].equal(text[k]), k
    s, t = world.sample("val", 3), world.sample("val", 3, image=False)
    assert t.image is None and s.image is not None and (s.scene, s.qa) == (t.scene, t.qa)


def test_samples_do_not_depend_on_access_order(world):
    forward = [world.sample("test", i).qa for i in range(10)]
    backward = [world.sample("test", i).qa for i in reversed(range(10))][::-1]
    assert forward == backward


def test_categories_cycle_and_answers_are_balanced(world):
    samples = world.samples("train", 0, 8 * 300)
    assert Counter(s.qa.category for s in samples) == {c: 300 for c in CATEGORIES}
    for cat in CATEGORIES:
        answers = Counter(s.qa.answer for s in samples if s.qa.category == cat)
        n_answers = len(samples[CATEGORIES.index(cat)].qa.answers)
        # every answer appears, and none is more than twice as frequent as uniform
        assert max(answers.values()) / 300 < 2.0 / n_answers, (cat, answers)


def test_answers_are_independent_of_question_wording(world):
    """The blind floor sits at chance only if P(answer | question) is flat: check yes/no templates."""
    samples = world.samples("train", 0, 8 * 400)
    by_q = {}
    for s in samples:
        if s.qa.answer in ("yes", "no"):
            by_q.setdefault((s.qa.category, wording(s.qa.question, world.config)), []).append(s.qa.answer == "yes")
    for key, ys in by_q.items():
        if len(ys) >= 80:
            assert 0.35 < np.mean(ys) < 0.65, (key, np.mean(ys))


def test_wordings_name_no_object_and_split_four_categories_in_two(world):
    """``wording`` keeps a question's template words only; the evaluator groups by it (evaluate.wordings)."""
    batch = world.batch("qa", "test", 0, 8 * 100, with_images=False)
    names = set(world.config.colors + world.config.shapes)
    by_cat = {}
    for cat, w, q in zip(batch["category"], batch["wording"], (s.qa.question for s in world.samples("test", 0, 800))):
        assert not names & set(w.split()) and len(w.split()) == len(q.split()), (q, w)
        by_cat.setdefault(cat, Counter())[w] += 1
    assert {c: len(ws) for c, ws in by_cat.items()} == {
        "attribute": 1, "object": 1, "existence": 1, "texture": 1, "spatial": 2, "counting": 2, "comparison": 2,
        "logical": 2}
    assert set(by_cat["comparison"]) == {"is the <shape> bigger than the <shape> ?",
                                         "is the <shape> the same color as the <shape> ?"}
    assert all(min(ws.values()) >= 30 for ws in by_cat.values())  # each wording about half of its category


def test_answer_is_true_of_the_scene(world):
    """Spot-check the generators' semantics against the scene graph."""
    for s in world.samples("val", 0, 400):
        q, a, objs = s.qa.question.split(), s.qa.answer, s.scene
        if s.qa.category == "attribute":
            (obj,) = [o for o in objs if o.shape == q[4]]
            assert obj.color == a
        elif s.qa.category == "counting":
            attr = q[2]
            n = sum(1 for o in objs if attr in (o.color, o.shape))
            assert ["zero", "one", "two", "three"][n] == a
        elif s.qa.category == "existence":
            assert any(o.color == q[3] and o.shape == q[4] for o in objs) == (a == "yes")
        elif s.qa.category == "spatial":
            (oa,) = [o for o in objs if o.shape == q[2]]
            (ob,) = [o for o in objs if o.shape == q[-2]]
            truth = oa.col < ob.col if q[3] == "left" else oa.row < ob.row
            assert truth == (a == "yes")


def test_compositional_split_holds_out_pairs(world):
    held = set(world.config.holdout)
    for split in ("train", "test"):
        for s in world.samples(split, 0, 200):
            assert not any((o.shape, o.color) in held for o in s.scene)
    for s in world.samples("compositional", 0, 200):
        assert any((o.shape, o.color) in held for o in s.scene)


def test_objects_fit_their_cells_and_images_are_uint8(world):
    s = world.sample("train", 3)
    assert s.image.dtype == np.uint8 and s.image.shape == (64, 64, 3)
    assert len({o.cell for o in s.scene}) == len(s.scene)


def test_tokenizer_is_word_level_and_round_trips(world):
    tok = world.tokenizer
    for task in ("qa", "describe", "oracle", "blind", "scene_lm", "caption"):
        p, t = prompt_and_target(task, world.sample("train", 1))
        ids = tok(f"{p} {t}", add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == f"{p} {t}"
    assert len(tok(world.sample("train", 0).qa.answer, add_special_tokens=False)["input_ids"]) == 1


def test_every_question_of_every_category_tokenizes_without_unk(world):
    """Every template word is in the vocabulary (once, "as" in "the same color as the" was missing)."""
    tok = world.tokenizer
    for s in world.samples("train", 0, 400):
        ids = tok(s.qa.question, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, s.qa.question


def test_bad_world_config_is_rejected():
    with pytest.raises(ValueError, match="grid"):
        WorldConfig(image_size=63)
    with pytest.raises(ValueError, match="split"):
        World().sample("holdout", 0)


def test_batch_labels_supervise_the_answer(world):
    b = world.batch("qa", "train", 0, 8)
    tok = world.tokenizer
    for i in range(8):
        ans = b["labels"][i, b["answer_pos"][i]].item()
        assert tok.convert_ids_to_tokens(ans) == world.sample("train", i).qa.answer
    assert b["pixel_values"].shape == (8, 3, 64, 64) and 0 <= b["pixel_values"].min() <= b["pixel_values"].max() <= 1


def test_ask_more_skips_only_categories_no_question_could_ask(world):
    """ask_more stops at a category the scene cannot answer instead of burning its retries; that shortcut must
    agree with trying every templated question of the category (otherwise it would change the LM's data)."""
    from vlmlab.world.questions import _askable, ask_more, solve

    w = world.config
    every = {
        "attribute": [f"what color is the {s} ?" for s in w.shapes],
        "object": [f"what shape is the {c} object ?" for c in w.colors],
        "texture": [f"what texture is the {c} object ?" for c in w.colors],
        "spatial": [f"is the {a} {rel} the {b} ?" for a in w.shapes for b in w.shapes for rel in ("left of", "above")],
        "comparison": [q for a in w.shapes for b in w.shapes
                       for q in (f"is the {a} bigger than the {b} ?", f"is the {a} the same color as the {b} ?")],
    }
    seen = Counter()
    for i in range(300):
        scene = world.sample("train", i).scene
        askable = _askable(scene)
        for cat, questions in every.items():
            assert askable[cat] == any(solve(q, scene) is not None for q in questions), (cat, scene)
            seen[askable[cat]] += 1
        more = ask_more(np.random.default_rng(i), w, scene, 8)
        assert all(solve(q, scene) == a for q, a in more)
    assert seen[True] and seen[False]  # both branches were exercised


# ---- world v2 -----------------------------------------------------------------------------------------------
def test_textures_differ_by_local_contrast_not_by_mean_brightness():
    """An object's average colour says nothing of its texture; its neighbouring pixels do."""
    from vlmlab.world.render import _texture_gain

    gains = {t: _texture_gain(t, 14) for t in WorldConfig().textures}
    means = [float(g[:12, :12].mean()) for g in gains.values()]  # whole 4-px periods
    assert max(means) - min(means) < 1e-6
    contrast = {t: float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())
                for t, g in gains.items()}
    assert contrast["plain"] == 0 and contrast["striped"] > 0.2 and contrast["checkered"] > contrast["striped"]


def test_clean_render_is_the_noisy_image_before_its_noise(world):
    s = world.sample("train", 11, clean=True)
    noisy = s.image.astype(np.float32)
    assert s.clean_image is not None and s.clean_image.shape == s.image.shape
    diff = noisy - s.clean_image
    assert 5 < diff.std() < 15  # the pixel noise (std 0.04 of 255), and nothing else: same jitter, same draw
    assert world.sample("train", 11).image.tobytes() == s.image.tobytes()  # asking for it changes nothing
    assert world.sample("train", 11).clean_image is None


def test_scene_text_names_the_shape_before_its_attributes(world):
    s = world.sample("train", 0)
    words = s.scene_text.split()
    o = s.scene[0]
    assert words[:8] == [o.shape, o.size, o.color, o.texture, "at", f"r{o.row}", f"c{o.col}", "."]


def test_grounding_questions_are_look_ups_true_of_the_scene(world):
    from vlmlab.world.questions import solve

    plain = world.samples("train", 0, 200)
    mixed = world.samples("train", 0, 200, grounding=0.5)
    ground = [s for s in mixed if s.qa.category == "grounding"]
    assert 60 < len(ground) < 140
    for a, b in zip(plain, mixed):
        assert a.image.tobytes() == b.image.tobytes() and a.scene == b.scene
        if b.qa.category != "grounding":
            assert a.qa == b.qa
    for s in ground:
        assert s.qa.question.split()[1] in ("size", "row", "column")
        assert solve(s.qa.question, s.scene) == s.qa.answer
    with pytest.raises(ValueError, match="grounding"):
        world.sample("test", 0, grounding=0.5)


def test_image_prompts_use_only_words_the_lm_was_pretrained_on(world):
    """A stage with a frozen LLM prompts in the LLM's pretraining format: every word of an image prompt (but the
    image marker) occurs in the LM's pretraining text, and the image stands where that text had the scene."""
    from vlmlab.world import IMG

    seen = set()
    batch = world.batch("scene_lm", "train", 0, 64, with_images=False, extra_questions=8)
    for row in batch["input_ids"]:
        seen |= set(world.tokenizer.convert_ids_to_tokens(row.tolist()))
    s = world.sample("train", 0)
    for task in ("qa", "describe"):
        prompt, _ = prompt_and_target(task, s)
        words = [w for w in prompt.split() if w != IMG]
        assert set(words) <= seen, (task, set(words) - seen)
        assert prompt.startswith(f"scene : {IMG}")


def test_evaluation_reports_the_share_of_answers_inside_the_answer_set(world, tiny_backbones, smoke_budget):
    """A model that always says "yes" is valid on yes/no questions only; its colour answers are format errors."""
    from vlmlab.archs import build
    from vlmlab.evaluate import evaluate

    m = build("llava", tiny_backbones, smoke_budget)
    yes = world.tokenizer.convert_tokens_to_ids("yes")
    vocab = len(world.tokenizer)

    def always_yes(batch):
        out = torch.full((len(batch["input_ids"]), vocab), -1e4)
        out[:, yes] = 0.0
        return out

    m.answer_logits = always_yes
    valid = evaluate(m, world, 8, 64, splits=("test",))["valid"]["test"]
    assert valid["existence"] == valid["spatial"] == 1.0
    assert valid["attribute"] == valid["counting"] == valid["texture"] == 0.0
