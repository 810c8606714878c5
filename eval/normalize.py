"""LLaVA-Med answer normalisation (``llava/eval/eval_metrics/glossary.py::normalize_word``, v1.0.0).

Reproduced behaviour, quirks included, so that our VQA-RAD / PathVQA numbers sit in the same tables
as published ones:

- punctuation from a fixed list is *deleted* when any mark of the list touches a space somewhere in
  the input (``"x ;"``) or when the input holds a digit-comma-digit group (``"1,000"``); otherwise it
  is *replaced by a space*. The test runs on the original input, once per mark.
- ``'``, ``:``, ``*``, ``#``, ``%``, ``&`` and ``$`` are not in the list and survive.
- periods not followed by a digit are stripped, but only the first 32 of them: the original passes
  ``re.UNICODE`` (whose value is 32) as the ``count`` argument of ``re.sub``.
- lower-case, whitespace split, number words ``none``/``zero``..``ten`` -> digits (``"none"`` ->
  ``"0"``), articles ``a``/``an``/``the`` dropped, contractions written without apostrophe get their
  apostrophes back (``"dont"`` -> ``"don't"``); the table's capitalised keys (``Im``, ``Ive``, ...) can
  never match because the text is already lower-case, and one entry runs backwards
  (``"somebody'd"`` -> ``"somebodyd"``).
- finally every comma is removed.
"""

from __future__ import annotations

import re
from collections import Counter

PUNCTUATION_MARKS = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
                     "@", "`", ",", "?", "!")
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
MAX_PERIODS_STRIPPED = 32  # re.UNICODE == 32, passed as re.sub's count in the original

_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# The original pattern "(?!<=\d)(\.)(?!\d)" opens with a look-*ahead* that can never fail at a
# period, so it strips every period that is not followed by a digit.
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")

# Contractions the glossary restores. For a form with one apostrophe the key is the form without it;
# for forms with several apostrophes the keys are the form with any *one* apostrophe missing (the
# glossary lists no key with all of them missing, e.g. "couldntve" stays as it is).
_ONE_APOSTROPHE = (
    "ain't aren't can't could've couldn't didn't doesn't don't hadn't hasn't haven't he'd he's how'd "
    "how'll how's isn't it'd it'll ma'am mightn't might've mustn't must've needn't not've o'clock "
    "oughtn't shan't should've shouldn't somebody'll somebody's someone'd someone'll someone's "
    "something'd something'll that's there'd there're there's they'd they'll they're they've 'twas "
    "wasn't we've weren't what'll what're what's what've when's where'd where's where've who'd who'll "
    "who's who've why'll why're why's won't would've wouldn't y'all you'd you'll you're you've"
).split()
_SEVERAL_APOSTROPHES = (
    "couldn't've hadn't've he'd've it'd've mightn't've 'ow's'at she'd've shouldn't've somebody'd've "
    "someone'd've something'd've there'd've they'd've we'd've who'd've wouldn't've y'all'll y'all'd've "
    "you'd've"
).split()


def _contraction_table() -> dict[str, str]:
    table = {form.replace("'", ""): form for form in _ONE_APOSTROPHE}
    for form in _SEVERAL_APOSTROPHES:
        for position in [i for i, char in enumerate(form) if char == "'"]:
            table[form[:position] + form[position + 1:]] = form
    table["somebody'd"] = "somebodyd"  # the glossary's one backwards entry
    return table


CONTRACTIONS = _contraction_table()


def normalize_word(text: str) -> str:
    """LLaVA-Med's ``normalize_word``: the string both the ground truth and the prediction go through."""
    glued = _DIGIT_COMMA_DIGIT.search(text) is not None
    cleaned = text
    for mark in PUNCTUATION_MARKS:
        delete = glued or (mark + " " in text) or (" " + mark in text)
        cleaned = cleaned.replace(mark, "" if delete else " ")
    cleaned = _PERIOD_NOT_BEFORE_DIGIT.sub("", cleaned, count=MAX_PERIODS_STRIPPED)
    words = [NUMBER_WORDS.get(word, word) for word in cleaned.lower().split()]
    words = [CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES]
    return " ".join(words).replace(",", "")


def word_counts(text: str) -> Counter[str]:
    """Whitespace unigrams of the lower-cased text with their counts (the glossary's ``split_sentence``)."""
    return Counter(text.lower().split())
