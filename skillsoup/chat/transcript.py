"""What the chat keeps of each answer (Turn), the dim line under an answer, the table of a route
(``skillsoup route`` prints the same), and the Markdown that /save writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rich.markup import escape
from rich.table import Table

from skillsoup.chat.options import ChatOptions
from skillsoup.routing import SkillMatch, weight_text
from skillsoup.runtime import Answer, SkillSoup


@dataclass
class Turn:
    query: str
    answer: str
    info: str  # the dim line: skills, weights, timings
    stopped: bool = False
    cut_at: int = 0  # the token limit that cut the answer (0: it ended by itself)
    router: str = ""  # how its skills were chosen: "text router", "state router", ... or "pinned"


def skills_line(matches: tuple[SkillMatch, ...] | list[SkillMatch], pinned: bool = False) -> str:
    """'pinned a 0.75, b 0.25', 'a 0.99, b <0.01' or 'no skill'."""
    if not matches:
        return "no skill"
    return ("pinned " if pinned else "") + ", ".join(f"{m.name} {weight_text(m.weight)}" for m in matches)


def route_table(title: str, matches: list[SkillMatch]) -> Table:
    """Skill, score and weight of each match; a composite that took routed sources names them."""
    table = Table(title=escape(title[:60]))
    for col in ("skill", "score", "weight"):
        table.add_column(col, justify="left" if col == "skill" else "right")
    for m in matches:
        folded = f" [dim](+ source{'s' if len(m.folded) > 1 else ''} {escape(', '.join(m.folded))})[/]" if m.folded else ""
        table.add_row(escape(m.name) + folded, f"{m.score:.3f}", weight_text(m.weight))
    return table


def answer_line(answer: Answer) -> str:
    """The dim line after an answer: skills and weights (or "no skill"), then timings."""
    t = answer.timings
    return (f"{skills_line(answer.matches, answer.pinned)} · first token {t.first_token_ms:.0f} ms"
            f" · {t.decode_tokens_per_s:.0f} tok/s · {t.n_tokens} tokens")


def cut_mark(max_new_tokens: int) -> str:
    return f"(cut at {max_new_tokens} tokens)"


def transcript_markdown(turns: list[Turn], soup: SkillSoup | None = None, options: ChatOptions | None = None) -> str:
    """The transcript for /save: the model and settings, then one section per turn with the answer
    in a fenced block and how it was made (skills, router, timings)."""
    source = getattr(getattr(soup, "model", None), "source", "")
    head = f"{datetime.now():%Y-%m-%d %H:%M}" + (f" · model {source}" if source else "")
    if options is not None:
        head += (f" · {options.router} router · mix {options.mix} (layers {options.layers})"
                 f" · temperature {options.temperature:g} · max tokens {options.max_new_tokens}")
    lines = ["# skillsoup chat", "", head, ""]
    for i, turn in enumerate(turns, 1):
        fence = "````" if "```" in turn.answer else "```"
        answer = turn.answer + (" [stopped]" if turn.stopped else "") if turn.answer or turn.stopped else "(empty answer)"
        if turn.cut_at:
            answer += f" {cut_mark(turn.cut_at)}"
        info = f"{turn.info} · {turn.router}" if turn.router else turn.info
        lines += [f"## {i}. {turn.query}", "", fence, answer, fence, "", f"_{info}_", ""]
    return "\n".join(lines)
