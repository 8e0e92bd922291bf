"""ChatSession driven by scripted lines: the transcript shows the routed skill, the answer and the
dim timing line; each slash command works; bad commands, bad arguments and odd input get a short
note; errors are one red line; Ctrl-C during an answer stops only that answer."""

from __future__ import annotations

import re

import pytest

import skillsoup.chat.session as chat_module
from skillsoup.chat import COMMANDS, ChatOptions
from skillsoup.errors import SkillNotFoundError
from skillsoup.skills.loader import bundled_skills_dir

INFO = re.compile(r"first token \d+ ms · \d+ tok/s · \d+ tokens")


def test_a_request_is_routed_answered_and_followed_by_the_dim_line(chat, model_says):
    model_says("timer(minutes=7)")
    out = chat.run("set a timer for 7 minutes")
    lines = out.splitlines()
    assert lines[0] == "timer(minutes=7)"
    assert lines[1].startswith("timer 1.00 · ") and INFO.search(lines[1])
    turn = chat.session.transcript[-1]
    assert (turn.query, turn.answer, turn.stopped) == ("set a timer for 7 minutes", "timer(minutes=7)", False)


def test_the_router_abstains_and_the_line_says_no_skill(soup, make_chat, model_says):
    from skillsoup.routing.router import RouterParams

    soup.router.params = RouterParams(threshold=2.0)  # no score reaches it
    model_says("hello")
    out = make_chat().run("set a timer for 7 minutes")
    assert out.splitlines()[0] == "hello"
    assert out.splitlines()[1].startswith("no skill · first token")


def test_use_pins_skills_with_weights_until_auto(chat, model_says):
    model_says("X")
    out = chat.run("/use upper:3 timer")
    assert "pinned upper 0.75, timer 0.25 until /auto" in out
    assert chat.session.prompt == "chat[upper+timer]> "
    out = chat.run("set a timer for 7 minutes")
    assert "pinned upper 0.75, timer 0.25 · first token" in out
    out = chat.run("/auto", "set a timer for 7 minutes")
    assert "routing each request" in out and "\ntimer 1.00 · first token" in out
    assert chat.session.prompt == "chat> "


@pytest.mark.parametrize("line, note", [
    ("/use timr", "unknown skill 'timr'; close: timer"),
    ("/use zzzzzz", "unknown skill 'zzzzzz'; see /skills"),
    ("/use timer:abc", "the weight after ':' must be a number > 0, e.g. timer:0.5"),
    ("/use timer:-1", "the weight after ':' must be a number > 0"),
    ("/use timer:nan", "the weight after ':' must be a number > 0"),
    ("/use timer timer", "'timer' is given twice"),
    ("/use", "usage: /use NAME[:WEIGHT]"),
], ids=["typo", "unknown", "word-weight", "negative", "nan", "twice", "no-args"])
def test_use_rejects_bad_pins_and_keeps_routing(chat, line, note):
    out = chat.run(line)
    assert note in out and len(out.splitlines()) == 1
    assert chat.session.options.pins == ()


def test_skills_and_route(chat, model_says):
    calls = model_says("never")
    out = chat.run("/skills")
    assert "2 skills" in out and "timer" in out and "upper-case a word" in out
    out = chat.run("/route set a timer for 7 minutes")
    assert re.search(r"timer\s+│\s+\d\.\d{3}\s+│\s+1\.00", out) and "text router" in out
    assert not calls  # a dry run: nothing generated
    chat.session.soup.router.params = chat.session.soup.router.params.replace(threshold=2.0)
    assert "no skill: the request would be answered without one" in chat.run("/route set a timer")
    assert "usage: /route QUERY" in chat.run("/route")


@pytest.mark.parametrize("line, key, value", [
    ("/mix top", "mix", "top"),
    ("/mix kv=concat", "kv", "concat"),
    ("/mix conv=top kv=concat", "kv", "concat"),
    ("/layers 0-1", "layers", "0-1"),
    ("/router hybrid", "router", "hybrid"),
    ("/temperature 0.7", "temperature", 0.7),
    ("/max-tokens 5", "max_new_tokens", 5),
])
def test_settings_commands_change_the_next_answer(chat, model_says, line, key, value):
    calls = model_says("abcdefghij")
    chat.run(line)
    assert getattr(chat.session.options, key) == value
    chat.run("/use timer upper", "set a timer for 7 minutes")
    if key in ("temperature", "max_new_tokens"):
        assert calls[-1][key] == value
    if key == "max_new_tokens":
        assert chat.session.transcript[-1].answer == "abcde"


@pytest.mark.parametrize("line, note", [
    ("/mix soup", "cannot read mixing policy 'soup'; use [conv=]mix|top and/or kv=top|concat"),
    ("/mix kv=mean", "cannot read mixing policy 'kv=mean'"),
    ("/layers first", "cannot read layers 'first'"),
    ("/router psychic", "unknown router 'psychic'; choose one of text, state, hybrid"),
    ("/temperature warm", "'warm' is not a temperature"),
    ("/temperature -1", "temperature must be a finite number >= 0"),
    ("/temperature nan", "temperature must be a finite number >= 0"),
    ("/max-tokens 0", "max tokens must be an integer from 1 to 4096"),
    ("/max-tokens 99999", "max tokens must be an integer from 1 to 4096"),
    ("/max-tokens 1.5", "'1.5' is not a max tokens"),
])
def test_settings_commands_reject_bad_values(chat, line, note):
    out = chat.run(line)
    assert note in out and len(out.splitlines()) == 1
    assert chat.session.options == ChatOptions()


def test_settings_commands_without_a_value_show_it(chat):
    assert "mix mix, kv top" in chat.run("/mix")
    assert "max tokens" in chat.run("/max-tokens") and "now 64" in chat.run("/max-tokens")


def test_add_reads_skill_files_with_progress(chat, tmp_path, model_says):
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "greet.yaml").write_text(
        "name: greet\ndescription: greet people\ndemonstrations:\n"
        "  - {input: 'say hi to Ann', output: 'Hi, Ann!'}\n  - {input: 'say hi to Bo', output: 'Hi, Bo!'}\n",
        encoding="utf-8")
    out = chat.run(f"/add '{folder}'")
    assert "1 added (greet)" in out
    assert chat.progress_calls[-1] == (1, 1, "greet")
    assert "greet people" in chat.run("/skills")
    model_says("Hi, Cy!")
    assert "greet 1.00 · first token" in chat.run("say hi to Cy")
    assert "1 unchanged" in chat.run(f"/add {folder}")


def test_add_problems_are_one_line(chat, tmp_path):
    out = chat.run(f"/add {tmp_path / 'missing.yaml'}")
    assert out.startswith("error: ") and len(out.splitlines()) == 1
    assert "unmatched quote" in chat.run("/add 'oops")
    assert "usage: /add PATH" in chat.run("/add")


def test_save_writes_the_transcript_as_markdown(chat, model_says, tmp_path):
    model_says("timer(minutes=7)")
    chat.run("set a timer for 7 minutes")
    path = tmp_path / "chat log.md"
    assert f"saved 1 turn to {path}" in chat.run(f'/save "{path}"')
    text = path.read_text(encoding="utf-8")
    assert "## 1. set a timer for 7 minutes" in text and "\ntimer(minutes=7)\n" in text
    assert "_timer 1.00 · first token" in text
    assert "cannot write" in chat.run(f"/save {tmp_path}")  # a folder
    assert "usage: /save FILE" in chat.run("/save")


def test_reset_restores_the_starting_settings_and_clears_the_transcript(make_chat, model_says):
    t = make_chat(max_new_tokens=8)
    model_says("abc")
    t.run("/use upper", "/mix top", "/temperature 1", "/max-tokens 3", "shout the word dog")
    assert t.session.transcript
    out = t.run("/reset")
    assert "reset: routing (text router), mix mix kv top (layers all), temperature 0, max tokens 8; transcript cleared" in out
    assert t.session.options == ChatOptions(max_new_tokens=8) and not t.session.transcript


def test_help_lists_every_command(chat):
    out = chat.run("/help")
    for name in COMMANDS:
        assert name in out
    assert "Ctrl-C stops an answer" in chat.run("/?")


@pytest.mark.parametrize("line", ["/quit", "/exit", "/q", "/QUIT"])
def test_quit(chat, line):
    chat.run(line)
    assert chat.alive is False


@pytest.mark.parametrize("line, note", [
    ("/hepl", "unknown command /hepl; did you mean /help?"),
    ("/frobnicate", "unknown command /frobnicate; /help lists them"),
    ("/", "type a command after /"),
    ("", "nothing to do"),
    ("   \t ", "nothing to do"),
    ("x" * 4001, "the line has 4,001 characters; the limit is 4,000"),
    ("set a timer\x1b[A", r"control character ('\x1b')"),
    ("\x00", r"control character ('\x00')"),
])
def test_odd_input_gets_a_short_note_and_no_answer(chat, model_says, line, note):
    calls = model_says("never")
    out = chat.run(line)
    assert note in out and len(out.splitlines()) == 1
    assert not calls and chat.alive


def test_a_line_starting_with_two_slashes_is_a_request(chat, model_says):
    model_says("ok")
    chat.run("//etc is a folder")
    assert chat.session.transcript[-1].query == "/etc is a folder"


def test_ctrl_c_during_an_answer_stops_it_and_the_chat_goes_on(chat, model_says):
    model_says("timer(min", then=KeyboardInterrupt())
    out = chat.run("set a timer for 7 minutes")
    lines = out.splitlines()
    assert lines[:2] == ["timer(min", "[stopped]"] and lines[2].startswith("timer 1.00 · ")
    assert chat.session.transcript[-1].stopped and chat.session.transcript[-1].answer == "timer(min"
    model_says("done")
    assert chat.run("set a timer for 8 minutes").startswith("done\n")


def test_ctrl_c_while_routing_or_in_a_command_stops_that_line(chat, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(chat.session.soup, "stream", interrupted)
    assert chat.run("set a timer") == "[stopped]\n" and chat.alive
    monkeypatch.setattr(chat.session.soup, "route", interrupted)  # a command, too
    assert chat.run("/route set a timer") == "[stopped]\n" and chat.alive


def test_errors_are_one_red_line_and_the_chat_goes_on(chat, monkeypatch, model_says):
    def missing(*a, **k):
        raise SkillNotFoundError("skill 'timer' is gone; see skillsoup skills list")

    monkeypatch.setattr(chat.session.soup, "stream", missing)
    assert chat.run("set a timer") == "error: skill 'timer' is gone; see skillsoup skills list\n"

    def bug(*a, **k):
        raise ValueError("boom")

    monkeypatch.setattr(chat.session.soup, "stream", bug)
    out = chat.run("set a timer")
    assert out.startswith("unexpected error: ValueError: boom") and len(out.splitlines()) == 1


# ---- first start ------------------------------------------------------------------------------
@pytest.fixture
def empty_soup(tmp_path, tiny_model):
    from skillsoup.registry import SkillRegistry
    from skillsoup.runtime import SkillSoup

    reg = SkillRegistry.open(tmp_path / "empty", embedder="hash:64")
    yield SkillSoup(reg, tiny_model)
    reg.close()


@pytest.fixture
def bundled(tmp_path, monkeypatch):
    folder = tmp_path / "bundled"
    folder.mkdir()
    (folder / "echo.yaml").write_text("name: echo\ndescription: echo\ndemonstrations:\n  - {input: a, output: a}\n",
                                      encoding="utf-8")
    monkeypatch.setattr(chat_module, "bundled_skills_dir", lambda: folder)
    return folder


def test_first_start_offers_the_bundled_skills(make_chat, empty_soup, bundled):
    t = make_chat(empty_soup)
    asked = []
    t.session.first_start(lambda q: asked.append(q) or True)
    assert asked == [f"The registry is empty. Add the bundled skills from {bundled}?"]
    assert empty_soup.registry.names() == ["echo"] and t.progress_calls == [(1, 1, "echo")]
    t.session.first_start(lambda q: pytest.fail("asked again with skills in the registry"))


def test_first_start_declined_adds_nothing(make_chat, empty_soup, bundled):
    t = make_chat(empty_soup)
    t.session.first_start(lambda q: False)
    assert empty_soup.registry.names() == []
    assert f"add some with /add {bundled}" in t.buffer.getvalue()


def test_broken_bundled_skills_are_one_red_line(make_chat, empty_soup, bundled):
    (bundled / "broken.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    t = make_chat(empty_soup)
    t.session.first_start(lambda q: True)
    out = t.buffer.getvalue()
    assert out.startswith("error: ") and "broken.yaml" in out and len(out.splitlines()) == 1
    assert empty_soup.registry.names() == []


def test_bundled_skills_dir_prefers_the_demo_skills():
    folder = bundled_skills_dir()
    assert folder is not None and folder.is_dir()
    assert any(folder.rglob("*.yaml")) or any(folder.rglob("*.md")) or any(folder.rglob("*.jsonl"))
    assert folder.name == "demo" or not (folder / "demo").is_dir()


def test_chat_on_a_hybrid_model_mixes_with_concatenated_kv(tmp_path, hybrid_model):
    """The chat runs a hybrid (tiny Jamba) unchanged: /mix kv=concat reaches the mix, and the answer
    of two pinned skills is written."""
    import io

    from rich.console import Console

    from skillsoup.chat import ChatSession
    from skillsoup.registry import SkillRegistry
    from skillsoup.runtime import SkillSoup
    from skillsoup.skills.skill import Demonstration, Skill

    skills = [Skill(name, name, tuple(Demonstration(w, f(w)) for w in ("cat", "lamp", "stone")))
              for name, f in (("upper", str.upper), ("reverse", lambda w: w[::-1]))]
    with SkillRegistry.open(tmp_path / "reg", embedder="hash:64") as reg:
        reg.add(skills, hybrid_model)
        buffer = io.StringIO()
        session = ChatSession(SkillSoup(reg, hybrid_model), Console(file=buffer, width=100, color_system=None),
                              ChatOptions(max_new_tokens=3))
        for line in ("/mix kv=concat", "/use upper:2 reverse", "river"):
            session.handle(line)
    out = buffer.getvalue()
    assert "mix mix, kv concat" in out and "pinned upper 0.67, reverse 0.33" in out
    assert session.options.kv == "concat" and len(session.transcript) == 1 and "error" not in out
