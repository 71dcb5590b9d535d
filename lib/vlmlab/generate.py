"""Free-form answers: greedy decoding with a KV cache, for every architecture.

A prompt is the evaluation prompt without its answer (``<bos> scene : <img> question : ... answer :``); decoding
appends the argmax token until every row has said ``<eos>`` or ``max_new_tokens`` are out. Three paths give the
same tokens (tested):

- ``transformers``: the LLM's own ``generate`` from ``inputs_embeds`` (the visual tokens spliced at ``<img>``),
  where the model is the unmodified LLM over those embeddings with causal attention (LLaVA, Ovis, VW-LMM,
  X-Former, the references);
- ``own loop``: a prefill of the spliced sequence into a ``DynamicCache`` with the model's own attention mask
  (bidirectional image spans) and, for LLaViT, its per-token modality routing (visual Q/K/V), then one text token
  a step; ``generate`` cannot pass either;
- ``two caches``: HoVLE's ``prefill``/``decode_step``, whose holistic embedding module keeps a cache of its own.

``use_cache=False`` recomputes the model's ordinary forward pass over the prompt and the tokens so far at every
step: the reference the cached paths are checked against.
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from collections import defaultdict

import torch

from .archs.base import VLM
from .world import World, prompt_and_target

DEFAULT_MAX_NEW_TOKENS = 16  # the run parameter's default: a short answer, several words of a real tokenizer
MAX_NEW_TOKENS_LIMIT = 1024  # an upper bound that catches a typo before an evaluation that never ends
PATHS = ("transformers", "own loop", "two caches")


def decoding_path(model: VLM) -> str:
    """Which of :data:`PATHS` decodes ``model`` with a cache."""
    if hasattr(model, "prefill") and hasattr(model, "decode_step"):
        return "two caches"
    cls = type(model)
    plain = (cls.build_inputs is VLM.build_inputs and cls.run_lm is VLM.run_lm and cls.text_embeds is VLM.text_embeds
             and model.attention == "causal")
    return "transformers" if plain else "own loop"


def _routing(model: VLM, visual_mask: torch.Tensor):
    """LLaViT routes each token's Q/K/V by modality inside ``model.modality``; other models need no context."""
    route = getattr(model, "modality", None)
    return route(visual_mask) if route is not None else contextlib.nullcontext()


def prompt_ids(world: World, task: str, samples) -> list[list[int]]:
    """The token ids of each sample's prompt, ``<bos>`` first, as ``World.encode`` starts its rows."""
    tok = world.tokenizer
    prompts = [prompt_and_target(task, s)[0] for s in samples]
    return [[tok.bos_token_id] + ids for ids in tok(prompts, add_special_tokens=False)["input_ids"]]


def prompt_batch(ids: list[list[int]], pixel_values: torch.Tensor | None = None) -> dict:
    """A batch of unpadded prompts of one length, with the keys ``VLM.build_inputs`` reads."""
    if len({len(r) for r in ids}) != 1:
        raise ValueError("prompt_batch takes prompts of one length (generate_answers groups them by length)")
    t = torch.tensor(ids, dtype=torch.long)
    out = {"input_ids": t, "attention_mask": torch.ones_like(t), "labels": torch.full_like(t, -100),
           "answer_pos": torch.zeros(len(ids), dtype=torch.long)}
    if pixel_values is not None:
        out["pixel_values"] = pixel_values
    return out


def _finish(steps: list[torch.Tensor], eos: int, pad: int, max_new_tokens: int) -> torch.Tensor:
    """[B, max_new_tokens]: the tokens up to and including each row's first eos, pad after it."""
    out = torch.cat(steps, 1)
    if out.shape[1] < max_new_tokens:
        out = torch.cat([out, out.new_full((out.shape[0], max_new_tokens - out.shape[1]), pad)], 1)
    done = (out == eos).long().cumsum(1) - (out == eos).long()  # > 0 after the first eos
    return out.masked_fill(done > 0, pad)


def _loop(first_logits: torch.Tensor, step, eos: int, max_new_tokens: int) -> list[torch.Tensor]:
    """Greedy steps: ``step(tokens [B, 1]) -> logits [B, V]`` feeds one token per row; stops once all said eos."""
    nxt = first_logits.argmax(-1, keepdim=True)
    steps, done = [nxt], nxt[:, 0] == eos
    while len(steps) < max_new_tokens and not bool(done.all()):
        nxt = step(nxt).argmax(-1, keepdim=True)
        steps.append(nxt)
        done |= nxt[:, 0] == eos
    return steps


def _quiet(fn):
    """transformers 5 renamed ``past_key_values`` to ``cache`` with a warning per call; the old name works in every
    version pyproject allows, so the warning is silenced here rather than the code tied to one version."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*past_key_values.* is deprecated", category=FutureWarning)
            return fn(*args, **kwargs)
    return wrapped


@_quiet
@torch.no_grad()
def greedy(model: VLM, batch: dict, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, use_cache: bool = True,
           path: str | None = None) -> torch.Tensor:
    """Greedy continuation of a :func:`prompt_batch`: token ids [B, max_new_tokens], pad after each row's eos.

    ``path`` forces one of :data:`PATHS` (default :func:`decoding_path`); ``use_cache=False`` ignores it."""
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}; it must be an int >= 1")
    tok = model.tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id
    path = path or decoding_path(model)
    if path not in PATHS:
        raise ValueError(f"path={path!r}; allowed values: {list(PATHS)}")
    dev = model.device
    batch = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in batch.items()}
    if not use_cache:
        ids = batch["input_ids"]

        def full(extra: torch.Tensor | None) -> torch.Tensor:
            seq = ids if extra is None else torch.cat([ids, extra], 1)
            b = dict(batch, input_ids=seq, attention_mask=torch.ones_like(seq), labels=torch.full_like(seq, -100))
            return model.forward(b)["logits"][:, -1].float()

        said: list[torch.Tensor] = []

        def again(nxt):
            said.append(nxt)
            return full(torch.cat(said, 1))
        return _finish(_loop(full(None), again, eos, max_new_tokens), eos, pad, max_new_tokens)
    if path == "two caches":
        logits, state = model.prefill(batch)
        return _finish(_loop(logits[:, -1].float(), lambda nxt: model.decode_step(nxt, state).float(), eos,
                             max_new_tokens), eos, pad, max_new_tokens)
    inp = model.build_inputs(batch)
    emb = inp["inputs_embeds"]
    if path == "transformers":
        from transformers import GenerationConfig

        cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=eos,
                               pad_token_id=pad, use_cache=True)
        out = model.lm.generate(inputs_embeds=emb, attention_mask=inp["attention_mask"], generation_config=cfg)
        return _finish([out[:, -max_new_tokens:]], eos, pad, max_new_tokens)
    from transformers import DynamicCache

    B, L = emb.shape[:2]
    cache = DynamicCache()
    with _routing(model, inp["visual_mask"]):
        out = model.lm(inputs_embeds=emb, attention_mask=model.lm_attention_mask(inp, emb.dtype),
                       past_key_values=cache, use_cache=True)
    text = torch.zeros(B, 1, dtype=torch.bool, device=dev)  # a generated token is text
    seen = [L]

    def step(nxt):
        seen[0] += 1
        with _routing(model, text):
            o = model.lm(inputs_embeds=model.text_embeds(nxt), past_key_values=cache, use_cache=True,
                         attention_mask=torch.ones(B, seen[0], dtype=torch.long, device=dev))
        return o.logits[:, -1].float()
    return _finish(_loop(out.logits[:, -1].float(), step, eos, max_new_tokens), eos, pad, max_new_tokens)


def decode(tokenizer, tokens: torch.Tensor) -> list[str]:
    """Each row's text up to its eos (special tokens dropped)."""
    eos = tokenizer.eos_token_id
    out = []
    for row in tokens.tolist():
        row = row[:row.index(eos)] if eos in row else row
        out.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return out


@torch.no_grad()
def generate_answers(model: VLM, world: World, samples, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                     batch_size: int = 64, precision: str = "fp32", use_cache: bool = True) -> list[str]:
    """The model's free-form answer to each sample's question, in order. Prompts are batched by length, so that
    no row is padded (every path then sees the same positions, and HoVLE's prefill needs unpadded rows)."""
    from .device import autocast

    task = model.eval_task if model.eval_task in ("blind", "oracle") else "qa"
    ids = prompt_ids(world, task, samples)
    groups = defaultdict(list)
    for i, r in enumerate(ids):
        groups[len(r)].append(i)
    answers: list[str | None] = [None] * len(samples)
    model.eval()
    for _, idx in sorted(groups.items()):
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            pix = World.images([samples[i] for i in chunk]) if model.uses_images else None
            with autocast(model.device, precision):
                out = greedy(model, prompt_batch([ids[i] for i in chunk], pix), max_new_tokens, use_cache)
            for i, text in zip(chunk, decode(model.tokenizer, out.cpu())):
                answers[i] = text
    return answers


__all__ = ["DEFAULT_MAX_NEW_TOKENS", "MAX_NEW_TOKENS_LIMIT", "PATHS", "decoding_path", "prompt_ids", "prompt_batch",
           "greedy", "decode", "generate_answers"]
