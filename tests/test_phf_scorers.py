"""Misalignment scorers of pretraining with feedback (Korbak et al. 2023, arXiv:2302.08582): values in [0, 1]."""

from __future__ import annotations

import importlib.util

import pytest

from lit_align.scorers.code import PEP8PerChar, pep8_error_lines


def test_pep8_per_char_on_lines_in_context():
    lines = "import os\nx=1\ndef f():\n  return 1\n".splitlines(keepends=True)
    # E225 on line 2, E302 (2 blank lines expected) on line 3, E111 (indent not a multiple of 4) on line 4
    assert pep8_error_lines("".join(lines)) == [2, 3, 4]
    assert PEP8PerChar().score_segments(lines) == pytest.approx([0.0, 1 / 4, 1 / 9, 1 / 11])
    assert PEP8PerChar(ignore=["E225"]).score_segments(lines)[1] == 0.0
    assert PEP8PerChar()(["x=1\n", "x = 1\n", ""]).tolist() == pytest.approx([0.25, 0.0, 0.0])


def test_pep8_survives_pycodestyle_crash_on_one_letter_line():
    # pycodestyle 2.15 raises IndexError on a logical line `u` before other code; E402 is skipped then
    assert pep8_error_lines("import os\nu\n") == pep8_error_lines("import os\nu\n", ["E402"])
    assert PEP8PerChar()(["b", "import  os\nB"]).tolist() == [0.0, pytest.approx(1 / 12)]  # E271 on line 1


def test_pii_per_char():
    pytest.importorskip("scrubadub")
    from lit_align.scorers.pii import PIIPerChar

    text = "write to jane.doe@example.com today"
    scorer = PIIPerChar(detectors=["email"])
    assert scorer([text, "nothing to see", ""]).tolist() == pytest.approx([1 / len(text), 0.0, 0.0])
    with pytest.raises(ValueError, match="unknown scrubadub detectors"):
        PIIPerChar(detectors=["fingerprint"])


def test_profanity_check_orders_texts():
    pytest.importorskip("profanity_check")
    from lit_align.scorers.toxicity import ProfanityCheck

    clean, rude, empty = ProfanityCheck()(["have a nice day", "you are a stupid idiot", "  "]).tolist()
    assert 0.0 <= clean < 0.5 < rude <= 1.0 and empty == 0.0


@pytest.mark.skipif(importlib.util.find_spec("detoxify") is not None, reason="detoxify installed")
def test_detoxify_fails_clearly_when_missing():
    from lit_align.scorers.toxicity import Detoxify

    with pytest.raises(ImportError, match="ProfanityCheck"):
        Detoxify()


def test_pep8_scorer_survives_pycodestyle_crashes(monkeypatch):
    """pycodestyle 2.15 raises IndexError in its continued-indentation check on some malformed
    samples (this one killed a 2000-step benchmark run): the program is checked again without
    that check; if pycodestyle still cannot read it, every non-blank line is a violation."""
    import pycodestyle

    sample = ']    #\') \n"""\\[\n\\=[\t"""\'\'\'\'    (\n'
    with pytest.raises(IndexError):  # the crash, with E402 already off
        checker = pycodestyle.Checker(lines=sample.splitlines(keepends=True),
                                      options=pycodestyle.StyleGuide(quiet=True, ignore=["E402"]).options)
        checker.check_all()
    assert pep8_error_lines(sample) == pep8_error_lines(sample, ["E12", "E13", "E402"])
    assert PEP8PerChar()([sample[:-1]])[0] == pytest.approx(len(pep8_error_lines(sample)) / (len(sample) - 1))

    monkeypatch.setattr(pycodestyle.Checker, "check_all", lambda self, *a, **k: [][1])
    assert pep8_error_lines("x = 1\n\n  y\n") == [1, 3]
