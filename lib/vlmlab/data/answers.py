"""Free-form answers scored by normalized exact match, with the VQAv2 evaluation's answer normalization.

The normalization, applied to the generated answer and to the reference alike: lower case; a comma between digits
dropped ("1,000" -> "1000"); other punctuation dropped where it touches a space and replaced by a space elsewhere
("t-shirt" -> "t shirt", "yes!" -> "yes"); a period dropped unless it is a decimal point; number words up to ten as
digits; the articles a, an, the dropped; common contractions written without their apostrophe restored ("dont" ->
"don't"). A question has one reference answer here (VQAv2's ten-annotator vote has no counterpart in a LLaVA or
datasets row), so the score is 1 when the two normalized strings are equal and 0 otherwise.
"""
from __future__ import annotations

import re
from collections import defaultdict

PUNCTUATION = ";/[]\"{}()=+\\_-><@`,?!"  # VQAv2's list: an apostrophe stays, so contractions keep theirs
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")
_PERIOD = re.compile(r"(?<!\d)\.|\.(?!\d)")  # a period that is not between two digits
NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
           "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = {"a", "an", "the"}
# the apostrophe-less spellings VQAv2 restores (a subset: the ones a short answer plausibly holds)
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldnt": "couldn't", "didnt": "didn't",
    "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't", "hasnt": "hasn't", "havent": "haven't",
    "hes": "he's", "im": "i'm", "isnt": "isn't", "ive": "i've", "shes": "she's", "shouldnt": "shouldn't",
    "thats": "that's", "theres": "there's", "theyre": "they're", "wasnt": "wasn't", "werent": "weren't",
    "whats": "what's", "wont": "won't", "wouldnt": "wouldn't", "youre": "you're", "youve": "you've",
}


def normalize_answer(text: str) -> str:
    """An answer as the VQAv2 evaluation compares it: "The Two Dogs." -> "2 dogs", "T-shirt" -> "t shirt"."""
    s = " ".join(text.replace("\n", " ").replace("\t", " ").lower().split())
    s = _DIGIT_COMMA.sub("", s)
    for p in PUNCTUATION:
        if f"{p} " in s or f" {p}" in s:
            s = s.replace(p, "")
        else:
            s = s.replace(p, " ")
    s = _PERIOD.sub("", s)
    words = [NUMBERS.get(w, w) for w in s.split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words)


def exact_match(prediction: str, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


def exact_match_scores(examples, predictions: list[str], other: str = "other") -> dict:
    """{category | "overall": share of exact matches}: the overall is the mean over categories, as the world's;
    an example without a category counts under ``other``."""
    hits = defaultdict(list)
    for ex, pred in zip(examples, predictions, strict=True):
        hits[ex.category or other].append(exact_match(pred, ex.answer))
    out = {c: sum(v) / len(v) for c, v in sorted(hits.items())}
    out["overall"] = sum(out.values()) / len(out)
    return out


__all__ = ["normalize_answer", "exact_match", "exact_match_scores"]
