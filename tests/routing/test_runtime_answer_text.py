"""The answer text is what the model wrote after the template's label, without its leading space."""

from __future__ import annotations

from skillsoup.runtime import Stream


def test_leading_template_space_is_not_part_of_the_answer():
    stream = Stream((), False, iter([" ", " posi", "tive"]), {})
    assert list(stream) == ["posi", "tive"]
    assert stream.answer.text == "positive"
