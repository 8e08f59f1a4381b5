"""The conditional-task scorers (CDPG, arXiv:2112.00791) and task metrics on hand-written cases."""

from __future__ import annotations

import math

import pytest

from lit_align.callbacks.task_metrics import MissingMetricPackage, bleu, compute, rouge
from lit_align.data.conditional import Context
from lit_align.scorers import PEP8, Compilable, EntityConsistency, NumeralConsistency, PEP8Errors
from lit_align.scorers.code import assemble_program, compiles
from lit_align.scorers.entities import rule_entities
from lit_align.scorers.numeral import find_numbers


# ------------------------------------------------------------------------------- numerals
def test_find_numbers_words_digits_and_boundaries():
    assert find_numbers("someone has done one thing") == {1}  # not inside someone / done
    assert find_numbers("In 2021, 10 of the 1,000 delegates and 1 000 guests") == {2021, 10, 1000}
    assert find_numbers("a 3.5 kg parcel") == set()  # a decimal is not the integer 3 or 5
    assert find_numbers("Twenty-five members; FOUR abstained") == {25, 4}
    assert find_numbers("vingt-deux hommes et une femme", "fr") == {22, 1}


@pytest.mark.parametrize("source, output, expected", [
    ("The committee adopted three reports.", "La commission a adopté 3 rapports.", 1),
    ("The committee adopted three reports.", "La commission a adopté trois rapports.", 1),  # target word
    ("The committee adopted three reports.", "La commission a adopté des rapports.", 0),
    ("We waited ten years.", "Nous avons attendu 1 an et 0 jour.", 0),  # 10 ≠ 1 and 0
    ("We waited one year.", "Nous avons attendu 10 ans.", 0),  # "1" is not inside "10"
    ("Of the five groups, two agreed.", "Sur les 5 groupes, 2 étaient d'accord.", 1),
    ("Of the five groups, two agreed.", "Sur les 5 groupes, la plupart étaient d'accord.", 0),  # all numbers
    ("Someone has done it.", "Quelqu'un l'a fait.", 1),  # no numeral in the source: vacuous
    ("It cost 1,000 euros.", "Cela a coûté 1 000 euros.", 1),  # thousands separators
    ("The SIX members voted.", "Les six membres ont voté.", 1),  # casing
])
def test_numeral_consistency(source, output, expected):
    s = NumeralConsistency()
    assert s([output], [source]).tolist() == [expected]
    # the context may be a prompt carrying its source (T5 prefix): only the source is read
    ctx = Context("translate English to French: " + source, source)
    assert s([output], [ctx]).tolist() == [expected]


def test_numeral_consistency_digits_only_is_the_paper_phrase_table():
    paper = NumeralConsistency(target_words=None, max_value=10)
    assert paper(["trois rapports", "3 rapports"], ["three reports"] * 2).tolist() == [0, 1]
    assert paper(["rien"], ["twenty reports"]).tolist() == [1]  # beyond the table: not required
    with pytest.raises(RuntimeError, match="contexts"):
        paper(["x"])


# ------------------------------------------------------------------------------ entities
ARTICLE = ("The Bank of England said on Monday that Barack Obama visited New York. He met NASA officials "
           "and members of the U.S. Navy before flying to Berlin.")


def test_rule_entities_runs_connectors_acronyms_and_sentence_starts():
    ents = rule_entities(ARTICLE)
    assert ents == {"bank of england", "barack obama", "new york", "nasa", "u.s. navy", "berlin"}
    # commas end a run; sentence-initial common capitals are not entities unless known
    assert rule_entities("Floods hit Valmora, Estria.") == {"valmora", "estria"}
    assert rule_entities("Obama spoke.", known={"obama"}) == {"obama"}
    assert rule_entities("However, Merkel's team left.") == {"merkel"}
    # "of" after a multi-word name starts a new entity unless the name ends in an institution/title word
    assert rule_entities("He said governor Kenji Mori of Estria promised aid.") == {"kenji mori", "estria"}
    assert rule_entities("He thanked the Valmora Chamber of Commerce and the Duke of Edinburgh.") == \
        {"valmora chamber of commerce", "duke of edinburgh"}
    assert rule_entities("He met Vincent van Gogh.") == {"vincent van gogh"}


@pytest.mark.parametrize("summary, expected", [
    ("Barack Obama visited New York and met NASA and the Bank of England.", 1),
    ("BARACK OBAMA visited new york and met Nasa staff and the bank of England.", 0),  # < 4 found (lower-case)
    ("Barack Obama visited NEW YORK, met NASA and the Bank of England.", 1),  # casing differs from the source
    ("Barack Obama visited New York, met NASA and flew to Paris.", 0),  # Paris is not in the source
    ("Barack Obama visited New York and Berlin.", 0),  # only 3 entities
])
def test_entity_consistency_rules(summary, expected):
    s = EntityConsistency(min_entities=4, backend="rules")
    assert s([summary], [Context("summarize: " + ARTICLE, ARTICLE)]).tolist() == [expected]


def test_entity_consistency_backend_errors():
    with pytest.raises(ValueError, match="backend"):
        EntityConsistency(backend="nope")
    try:
        import spacy  # noqa: F401

        pytest.skip("spaCy installed")
    except ImportError:
        with pytest.raises(RuntimeError, match="backend: rules"):
            EntityConsistency(backend="spacy")
        with pytest.warns(UserWarning, match="rule-based"):
            assert EntityConsistency(backend="auto").backend == "rules"


# ---------------------------------------------------------------------------------- code
SIG = 'def area(width, height):\n    """Return the area of a rectangle."""\n'


@pytest.mark.parametrize("body, expected", [
    ("    return width * height\n", 1),
    ("    return width *", 0),  # cut mid-expression
    ("    if width:\n", 0),  # incomplete block
    ("    return width * height\nprint(area(2, 3)\n", 1),  # text after the body is cut off
    ("return width * height", 0),  # not indented: no body at all
    ("", 0),  # a docstring-only function is not counted as written code
    ("```python\ndef area(width, height):\n    return width * height\n```\nThis multiplies.", 1),  # chat answer
    ("```python\ndef area(width, height):\n    return width *\n```", 0),
])
def test_compilable(body, expected):
    assert Compilable()([body], [SIG]).tolist() == [expected]


def test_code_that_compiles_only_with_its_signature():
    body = "    yield from range(width)\n    return height\n"
    assert not compiles(body) and not compiles(body.strip() + "\n")  # 'return'/'yield' outside a function
    assert Compilable()([body], [SIG]).tolist() == [1]
    # instructions before the signature in a chat prompt are ignored
    prompt = "Complete this Python function.\n\n```python\n" + SIG + "```"
    assert assemble_program(body, prompt) == SIG + body.rstrip() + "\n"
    assert Compilable()([body], [prompt]).tolist() == [1]
    # incomplete input counts only with partial=True
    assert Compilable(partial=True)(["    if width:\n"], [SIG]).tolist() == [1]


def test_pep8():
    pytest.importorskip("pycodestyle")
    good = "    return width * height\n"
    bad = "    return width*height ;\n"  # E225 missing whitespace around operator, E203/E703
    long_line = "    return " + "width + " * 12 + "height\n"  # E501
    n = PEP8Errors()([good, bad, long_line], [SIG] * 3).tolist()
    assert n[0] == 0 and n[1] >= 2 and n[2] == 1
    assert PEP8()([good, bad, long_line, ""], [SIG] * 4).tolist() == [1, 0, 0, 0]
    assert PEP8(max_errors=1)([long_line], [SIG]).tolist() == [1]
    assert PEP8(ignore=["E501"])([long_line], [SIG]).tolist() == [1]


# ------------------------------------------------------------------------------- metrics
def test_bleu_and_rouge_exact_values():
    pytest.importorskip("sacrebleu")
    pytest.importorskip("rouge_score")
    assert bleu(["le chat est sur le tapis"], ["le chat est sur le tapis"]) == pytest.approx(100.0)
    assert bleu(["zzz qqq"], ["le chat est sur le tapis"]) < 1.0
    r = rouge(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert r == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    r = rouge(["the cat"], ["the cat sat on the mat"])  # P = 1, R = 2/6 → F1 = 0.5
    assert r["rouge1"] == pytest.approx(0.5)
    ctx = [Context("p", "s", "le chat est sur le tapis"), Context("p", "s", None)]
    assert compute("bleu", ["le chat est sur le tapis", "x"], ctx) == {"bleu": pytest.approx(100.0)}


def test_code_metrics_and_missing_package(monkeypatch):
    texts = ["    return width * height\n", "    return width *"]
    assert compute("compile_rate", texts, [SIG, SIG]) == {"compile_rate": 0.5}
    import builtins

    real_import = builtins.__import__

    def no_sacrebleu(name, *args, **kwargs):
        if name == "sacrebleu":
            raise ImportError("no sacrebleu")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sacrebleu)
    with pytest.raises(MissingMetricPackage, match="pip install sacrebleu"):
        bleu(["a"], ["a"])
    assert math.isfinite(compute("length", ["a b", "c"], [SIG, SIG])["length_words"])
