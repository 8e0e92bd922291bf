"""Rough edges a newcomer met in the chat: /layers is checked against the model when typed, an
answer cut by the token limit says so, and /save records how each answer was made (the router)."""

from __future__ import annotations

from skillsoup.chat import ChatOptions


def test_layers_are_checked_against_the_model_when_typed(chat, model_says):
    """Before, "/layers 7-9" was accepted and every later request failed."""
    assert chat.session.soup.model.num_layers == 2
    out = chat.run("/layers 7-9")
    assert out == "layers '7-9' name layer 9, the model has layers 0..1\n"
    assert chat.session.options == ChatOptions()
    assert chat.run("/layers 1") == "layers 1\n" and chat.session.options.layers == "1"
    model_says("timer(minutes=7)")
    out = chat.run("/use timer upper", "set a timer for 7 minutes")
    assert "timer(minutes=7)\n" in out and "error" not in out
    assert chat.run("/layers all") == "layers all\n"


def test_an_answer_cut_by_the_token_limit_says_so(chat, model_says):
    model_says("abcdefghij")
    out = chat.run("/max-tokens 4", "set a timer for 7 minutes")
    first = out.splitlines()[1]
    assert first == "abcd (cut at 4 tokens)"
    turn = chat.session.transcript[-1]
    assert (turn.answer, turn.cut_at) == ("abcd", 4)
    model_says("abc")  # ends (EOS) before the limit: no mark
    out = chat.run("set a timer for 7 minutes")
    assert out.splitlines()[0] == "abc" and "cut at" not in out
    assert chat.session.transcript[-1].cut_at == 0


def test_an_answer_ending_exactly_at_its_stop_string_is_not_cut(chat, model_says, tmp_path):
    skill = tmp_path / "semi.yaml"  # a template whose answers end with ";" (the tiny tokenizer has no newline)
    skill.write_text("name: semi\ndescription: answers end with a semicolon\ntemplate: '{input} => {output};'\n"
                     "demonstrations:\n  - {input: a, output: b}\n", encoding="utf-8")
    assert "1 added (semi)" in chat.run(f"/add {skill}")
    model_says("abc;")  # 4 tokens, the last one the stop string: limit 4 reached, but the answer ended
    out = chat.run("/max-tokens 4", "/use semi", "anything")
    assert out.splitlines()[2] == "abc" and "cut at" not in out
    assert chat.session.transcript[-1].cut_at == 0


def test_save_records_the_router_and_the_cut(chat, model_says, tmp_path):
    model_says("abcdefghij")
    chat.run("/max-tokens 3", "set a timer for 7 minutes", "/router hybrid", "/use upper", "shout the word cat")
    path = tmp_path / "chat.md"
    assert f"saved 2 turns to {path}" in chat.run(f"/save {path}")
    text = path.read_text(encoding="utf-8")
    assert " · hybrid router · mix mix (layers all) · temperature 0 · max tokens 3" in text.splitlines()[2]
    assert "```\nabc (cut at 3 tokens)\n```" in text
    sections = text.split("## ")[1:]
    assert sections[0].startswith("1. set a timer for 7 minutes") and "tokens · text router_" in sections[0]
    assert sections[1].startswith("2. shout the word cat") and "tokens · pinned_" in sections[1]
