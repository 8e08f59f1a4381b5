"""Scorers (surface features, VADER sentiment, validation) and composable EBM targets."""

from __future__ import annotations

import math

import pytest
import torch

from lit_align.scorers import Count, PositiveSentiment, Regex, Scorer, Sentiment, WordPresence
from lit_align.targets import EBM, Exponential, Pointwise, Potential, RewardTilt, base


class Fixed(Scorer):
    """A scorer returning given values (for target arithmetic)."""

    def __init__(self, values, name="fixed", binary=False):
        super().__init__(name)
        self.values = values
        self.binary = binary

    def score(self, texts, contexts=None):
        return self.values[: len(texts)]


TEXTS = ["a", "b", "c"]


# ----------------------------------------------------------------- WordPresence
def test_word_presence_whole_word_case_insensitive():
    s = WordPresence(["amazing"])
    texts = ["This is Amazing!", "AMAZING", "amazingly good", "an amaz ing day", "what an amazing, day", ""]
    assert s(texts).tolist() == [1, 1, 0, 0, 1, 0]
    assert s.name == "amazing" and s.binary and (s.low, s.high) == (0.0, 1.0)
    out = s(texts)
    assert out.dtype == torch.float64 and out.shape == (len(texts),)


def test_word_presence_case_sensitive_and_several_words():
    s = WordPresence(["Paris", "london"], lowercase=False)
    assert s(["I saw Paris", "i saw paris", "London", "london calling"]).tolist() == [1, 0, 0, 1]
    assert s.name == "wordlist"
    assert WordPresence(["x"], name="custom").name == "custom"


def test_word_presence_wordlist_file(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("# positive words\nwonderful\n\n  great  \n#amazing\n", encoding="utf-8")
    s = WordPresence(wordlist=str(path))
    assert s(["a wonderful day", "GREAT", "amazing", "greatness", "# amazing"]).tolist() == [1, 1, 0, 0, 0]
    both = WordPresence(["amazing"], wordlist=str(path))
    assert both(["amazing", "great", "nothing"]).tolist() == [1, 1, 0]


def test_word_presence_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        WordPresence(wordlist=str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError):
        WordPresence()
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(ValueError):
        WordPresence(wordlist=str(empty))


# ----------------------------------------------------------------- Regex, Count
def test_regex():
    assert Regex(r"\bd\w*").__call__(["a dog", "cat", "ad"]).tolist() == [1, 0, 0]
    assert Regex("DOG")(["a dog"]).tolist() == [0]
    assert Regex("DOG", ignore_case=True)(["a dog"]).tolist() == [1]
    assert Regex("d").name == "regex" and Regex("d", name="has_d").name == "has_d"
    with pytest.raises(ValueError, match="invalid pattern"):
        Regex("(unclosed")


def test_count():
    s = Count(r"\bthe\b")
    assert s(["the cat and the dog", "there", "", "The the the"]).tolist() == [2, 0, 0, 2]
    assert not s.binary
    assert Count("aa")(["aaaaa"]).tolist() == [2]  # non-overlapping


# ----------------------------------------------------------------- sentiment (VADER)
POSITIVE = "I love this movie, it is wonderful and amazing!"
NEGATIVE = "This is terrible, I hate it and it is awful."
NEUTRAL = "The table is made of wood."


def test_sentiment_compound():
    v = Sentiment()(["good", POSITIVE, NEGATIVE, NEUTRAL])
    assert v[1] > 0.5 and v[2] < -0.5 and v[3] == 0.0
    assert 0.0 < v[0] < 0.5 < v[1], "'good' is mildly positive, the long sentence strongly"
    assert ((v >= -1) & (v <= 1)).all()


def test_positive_sentiment_threshold_and_negative():
    texts = ["good", POSITIVE, NEGATIVE, NEUTRAL]
    pos = PositiveSentiment()
    assert pos.name == "positive" and pos.binary
    assert pos(texts).tolist() == [0, 1, 0, 0]
    assert PositiveSentiment(threshold=0.3)(texts).tolist() == [1, 1, 0, 0]
    neg = PositiveSentiment(negative=True)
    assert neg.name == "negative"
    assert neg(texts).tolist() == [0, 0, 1, 0]
    with pytest.raises(ValueError):
        PositiveSentiment(threshold=1.5)


# ----------------------------------------------------------------- Scorer validation
def test_scorer_wrong_shape_names_the_scorer():
    with pytest.raises(ValueError, match="'short'"):
        Fixed([1.0], name="short")(TEXTS)
    with pytest.raises(ValueError, match="'matrix'"):
        Fixed(torch.ones(3, 2), name="matrix")(TEXTS)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_scorer_non_finite_names_the_scorer(bad):
    with pytest.raises(ValueError, match="'broken'"):
        Fixed([0.0, bad, 1.0], name="broken")(TEXTS)


def test_scorer_exception_is_reraised_naming_the_scorer():
    class Boom(Scorer):
        def score(self, texts, contexts=None):
            raise KeyError("missing feature")

    with pytest.raises(RuntimeError, match="'boom'") as info:
        Boom("boom")(TEXTS)
    assert isinstance(info.value.__cause__, KeyError)
    assert "missing feature" in str(info.value)


def test_scorer_accepts_tensor_and_passes_contexts():
    class Echo(Scorer):
        def score(self, texts, contexts=None):
            return torch.tensor([float(len(c)) for c in contexts], dtype=torch.float32)

    out = Echo("echo")(["x", "y"], ["ab", "abcd"])
    assert out.dtype == torch.float64 and out.tolist() == [2.0, 4.0]


# ----------------------------------------------------------------- targets
def test_base_times_pointwise_composition():
    b = Fixed([1.0, 0.0, 1.0], name="b")
    target = base * Pointwise(b)
    assert isinstance(target, EBM) and len(target.potentials) == 1
    assert target.is_pointwise and target.scorers() == [b]
    log_a = torch.tensor([-3.0, -2.0, -5.5])
    log_P = target.log_score(log_a, TEXTS)
    assert log_P.dtype == torch.float64
    assert log_P[0] == -3.0 and log_P[2] == -5.5
    assert log_P[1] == -math.inf, "b = 0 gives P = 0 (log P = -inf), not NaN"


def test_pointwise_epsilon_keeps_targets_finite():
    b = Fixed([1.0, 0.0], name="b")
    eps = 1e-4
    log_P = (base * Pointwise(b, epsilon=eps)).log_score(torch.tensor([-1.0, -2.0]), TEXTS[:2])
    torch.testing.assert_close(log_P, torch.tensor([-1.0 + math.log1p(eps), -2.0 + math.log(eps)], dtype=torch.float64))


def test_pointwise_validation():
    with pytest.raises(ValueError, match="outside"):
        (base * Pointwise(Fixed([0.0, 2.0, 1.0], name="notbinary"))).log_score(torch.zeros(3), TEXTS)
    with pytest.raises(TypeError):
        Pointwise(lambda texts: [1.0])
    with pytest.raises(ValueError):
        Pointwise(Fixed([1.0]), epsilon=-0.1)


def test_exponential_is_lambda_dot_phi():
    phi1, phi2 = Fixed([1.0, 0.0, 2.0], name="f1"), Fixed([0.5, 3.0, -1.0], name="f2")
    lam = [0.7, -1.3]
    target = base * Exponential([phi1, phi2], lam)
    assert not target.is_pointwise
    log_a = torch.tensor([-1.0, -2.0, -3.0])
    expected = log_a.double() + torch.tensor([0.7 * 1 - 1.3 * 0.5, 0.7 * 0 - 1.3 * 3, 0.7 * 2 + 1.3 * 1], dtype=torch.float64)
    torch.testing.assert_close(target.log_score(log_a, TEXTS), expected)
    with pytest.raises(ValueError):
        Exponential([phi1, phi2], [1.0])


def test_reward_tilt_is_r_over_beta():
    r = Fixed([1.0, -2.0, 0.5], name="r")
    log_a = torch.tensor([-1.0, -1.0, -1.0])
    torch.testing.assert_close((base * RewardTilt(r, temperature=0.1)).log_score(log_a, TEXTS),
                               torch.tensor([-1.0 + 10.0, -1.0 - 20.0, -1.0 + 5.0], dtype=torch.float64))
    for beta in (0.0, -1.0):
        with pytest.raises(ValueError):
            RewardTilt(r, temperature=beta)


def test_products_of_potentials_and_ebms_add_log_potentials():
    b = Fixed([1.0, 0.0, 1.0], name="b")
    phi = Fixed([1.0, 2.0, 3.0], name="phi")
    r = Fixed([2.0, 2.0, -2.0], name="r")
    e1 = base * Pointwise(b)
    e2 = base * Exponential([phi], [0.5])
    both = e1 * e2 * RewardTilt(r, temperature=2.0)
    assert [type(p) for p in both.potentials] == [Pointwise, Exponential, RewardTilt]
    log_a = torch.tensor([-1.0, -2.0, -3.0])
    log_P = both.log_score(log_a, TEXTS)
    assert log_P[1] == -math.inf
    torch.testing.assert_close(log_P[[0, 2]], torch.tensor([-1.0 + 0.5 + 1.0, -3.0 + 1.5 - 1.0], dtype=torch.float64))
    # EBM * EBM is the concatenation of factors and leaves the operands untouched
    assert len(e1.potentials) == 1 and len(e2.potentials) == 1
    # potential * potential and the same scorer shared by two factors (logged once)
    pp = Pointwise(b) * Exponential([b], [1.0])
    assert isinstance(pp, EBM) and len(pp.potentials) == 2 and pp.scorers() == [b]
    assert set(map(id, both.scorers())) == {id(b), id(phi), id(r)}
    assert repr(both) == "base * Pointwise * Exponential * RewardTilt"


def test_log_score_does_not_propagate_gradients_into_base():
    log_a = torch.tensor([-1.0, -2.0], requires_grad=True)
    log_P = (base * Pointwise(Fixed([1.0, 1.0]))).log_score(log_a, TEXTS[:2])
    assert not log_P.requires_grad


def test_ebm_rejects_non_potentials():
    with pytest.raises(TypeError):
        EBM([Fixed([1.0])])
    assert isinstance(Pointwise(Fixed([1.0])), Potential)
