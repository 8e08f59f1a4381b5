"""The sample table of SampleTexts: contexts cut at a word, cells safe for Markdown and TensorBoard."""

from lit_align.callbacks.samples import context_tail, sample_table


def test_a_long_context_is_cut_at_a_word_and_marked():
    context = "word " * 100 + "Describe a movie.<|im_end|>\n<|im_start|>assistant\n"
    tail = context_tail(context, 60)
    assert tail.startswith("…") and context.endswith(tail[1:]) and len(tail) <= 61
    assert context[len(context) - len(tail)] == " "  # the character before the tail is the space it cut at
    assert context_tail("short", 60) == "short"


def test_per_context_rows_escape_pipes_tags_and_line_breaks():
    table = sample_table(["a <|im_end|>", "b"], ["x | y\nz", "w"], {"positive": [1.0, 0.25]})
    lines = table.splitlines()
    assert lines[0] == "| # | context | positive | sample |"
    assert lines[2] == "| 0 | a &lt;\\|im_end\\|&gt; | 1 | x \\| y ⏎ z |"
    assert lines[3] == "| 1 | b | 0.250 | w |"


def test_a_shared_context_is_written_once_above_the_table():
    table = sample_table(["<p>\n", "<p>\n"], ["s1", "s2"], {})
    assert table.splitlines()[0] == "context: &lt;p&gt; ⏎ "
    assert "| # | sample |" in table and "| 1 | s2 |" in table


def test_a_non_finite_score_is_shown_not_raised():
    assert "| 0 | nan | x |" in sample_table(["a", "a"], ["x", "y"], {"r": [float("nan"), float("-inf")]})
