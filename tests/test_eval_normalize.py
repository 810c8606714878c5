"""LLaVA-Med's normalize_word, quirks included (expected strings worked out by hand from glossary.py)."""

from longllava.eval.normalize import CONTRACTIONS, normalize_word, word_counts


def test_number_words_become_digits_and_none_is_zero():
    assert normalize_word("None") == "0"
    assert normalize_word("zero") == "0"
    assert normalize_word("two lesions") == "2 lesions"
    assert normalize_word("ten") == "10"
    assert normalize_word("eleven") == "eleven"  # the table stops at ten


def test_articles_are_dropped_and_text_lower_cased():
    assert normalize_word("The Left Lung") == "left lung"
    assert normalize_word("a an the mass") == "mass"


def test_contractions_get_their_apostrophes_back():
    assert normalize_word("dont know") == "don't know"
    assert normalize_word("couldn'tve") == "couldn't've"
    assert normalize_word("couldntve") == "couldntve"  # no key with every apostrophe missing
    assert normalize_word("somebody'd") == "somebodyd"  # the table's backwards entry
    assert normalize_word("Im fine") == "im fine"  # capitalised keys never match lower-case text
    assert CONTRACTIONS["yall'd've"] == "y'all'd've"


def test_punctuation_replaced_by_space_unless_a_mark_touches_a_space():
    assert normalize_word("x-ray") == "x ray"
    # ", " touches a space: every comma is deleted; the hyphen does not, so it becomes a space
    assert normalize_word("x-ray, chest") == "x ray chest"
    # a hyphen next to a space: *every* hyphen is deleted, the one inside "x-ray" too
    assert normalize_word("x-ray - chest") == "xray chest"


def test_digit_comma_digit_deletes_all_marks():
    assert normalize_word("1,000 cells (approx)") == "1000 cells approx"


def test_marks_outside_the_list_survive():
    assert normalize_word("ratio: 2*") == "ratio: 2*"
    assert normalize_word("it's") == "it's"


def test_periods_before_digits_kept_others_stripped():
    assert normalize_word("3.5 cm.") == "3.5 cm"


def test_only_32_periods_are_stripped():
    # re.UNICODE (32) is passed as re.sub's count: the last 8 of 40 periods survive
    assert normalize_word("x." * 40) == "x" * 32 + "x." * 8
    assert normalize_word(normalize_word("x." * 40)) == "x" * 40


def test_word_counts_are_lower_cased_unigrams():
    assert word_counts("Lung lung  mass") == {"lung": 2, "mass": 1}
