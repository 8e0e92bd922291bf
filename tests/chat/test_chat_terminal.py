"""The real program in a terminal: `skillsoup chat` started in a pty answers a request with the
same text the library gives, prints the dim routing line, stops an answer on Ctrl-C, and leaves
on /quit."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")

REPO = Path(__file__).resolve().parents[2]
PROMPT = r"chat(\[[^\]]*\])?>"  # prompt_toolkit redraws the prompt, so match it loosely
QUERY = "set a timer for 7 minutes"


def _program() -> list[str]:
    script = Path(sys.executable).parent / "skillsoup"
    if script.is_file():
        return [str(script)]
    found = shutil.which("skillsoup")
    if found is None:
        pytest.skip("the skillsoup console script is not installed")
    return [found]


def test_chat_in_a_terminal(registry_dir, tiny_model, mamba_dir, tmp_path):
    from skillsoup.registry import SkillRegistry
    from skillsoup.routing.router import RouterParams
    from skillsoup.runtime import SkillSoup

    with SkillRegistry.open(registry_dir) as reg:  # what the library answers, to compare with the terminal
        soup = SkillSoup(reg, tiny_model)
        soup.router.params = RouterParams(top_k=1)
        soup.router.save()  # the program reads the router's parameters from the registry
        expected = soup.answer(QUERY, max_new_tokens=12)
    assert [m.name for m in expected.matches] == ["timer"]

    home = tmp_path / "home"
    env = dict(os.environ, SKILLSOUP_HOME=str(home), SKILLSOUP_EMBEDDER="hash:64", OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    program = _program()
    args = program[1:] + ["chat", "--registry", str(registry_dir), "--model", str(mamba_dir), "--yes",
                          "--max-tokens", "12"]
    t0 = time.perf_counter()
    # a background job of a non-interactive shell (how CI may start the tests) ignores SIGINT, and
    # children inherit that: give the chat the default Ctrl-C that a user's terminal gives it
    child = pexpect.spawn(program[0], args, env=env, encoding="utf-8", timeout=120, dimensions=(40, 160),
                          cwd=str(tmp_path), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        child.expect(r"· 2 skills · text router")
        child.expect(PROMPT)
        child.sendline(QUERY)
        child.expect(r"timer 1\.00 · first token \d+ ms · \d+ tok/s · \d+ tokens")
        shown = child.before
        assert expected.text and expected.text in shown, (expected.text, shown)
        child.expect(PROMPT)
        child.sendline("/max-tokens 4096")  # a long answer (seconds), stopped by Ctrl-C
        child.expect("max tokens 4096")
        child.expect(PROMPT)
        child.sendline(QUERY)
        child.expect(re.escape(expected.text))  # the answer has begun
        child.sendintr()
        child.expect(r"\[stopped\]")
        child.expect(r"timer 1\.00 · first token \d+ ms · \d+ tok/s · (\d+) tokens")
        assert int(child.match.group(1)) < 4096
        child.expect(PROMPT)
        child.sendline("/use upperr")
        child.expect("unknown skill 'upperr'; close: upper")
        child.expect(PROMPT)
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    assert QUERY in (home / "chat_history").read_text(encoding="utf-8")  # history kept under the user directory
    print(f"terminal chat took {time.perf_counter() - t0:.1f} s")
