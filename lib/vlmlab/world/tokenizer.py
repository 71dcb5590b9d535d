"""A word-level tokenizer for the built-in world, exposed through the transformers tokenizer interface.

Every word of the world is one token, so every answer is one token. Code downstream only uses the
``PreTrainedTokenizerFast`` API, so a real subword tokenizer drops in unchanged (answers may then span several
tokens; the evaluator scores the first one).
"""
from __future__ import annotations

from tokenizers import Regex, Tokenizer
from tokenizers.models import WordLevel
from tokenizers.normalizers import Replace
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

from .questions import TEMPLATE_WORDS
from .scenes import WorldConfig
from .text import text_vocabulary

PAD, BOS, EOS, UNK, IMG = "<pad>", "<bos>", "<eos>", "<unk>", "<img>"
SPECIALS = [PAD, BOS, EOS, UNK, IMG]
PROMPT_WORDS = ["scene", "image", "question", "answer", "caption", ":"]


def world_vocabulary(world: WorldConfig) -> list[str]:
    words: list[str] = []
    for w in SPECIALS + PROMPT_WORDS + text_vocabulary(world) + TEMPLATE_WORDS:
        if w not in words:
            words.append(w)
    return words


def build_tokenizer(world: WorldConfig) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(world_vocabulary(world))}
    core = Tokenizer(WordLevel(vocab, unk_token=UNK))
    # the article's form carries nothing here: "an" reads as "a" ("is there an orange cross ?", via
    # vlmlab.checks.article), so grammatical questions keep the LM's ids
    core.normalizer = Replace(Regex(r"\ban\b"), "a")
    core.pre_tokenizer = WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                  unk_token=UNK, additional_special_tokens=[IMG])
    tok.padding_side = "right"
    return tok
