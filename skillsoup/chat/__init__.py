"""The engine of ``skillsoup chat`` (rendering on a rich Console; the terminal is ``skillsoup.cli.chat``):

    session   ChatSession: one line in (a request or a slash command), output on the Console
    options   ChatOptions: router, mixing, layers, sampling, pinned skills; checked where set
    transcript  Turn, the dim line under an answer, the Markdown /save writes
"""

from skillsoup.chat.options import ChatOptions
from skillsoup.chat.session import ALIASES, COMMANDS, ChatSession, check_line
from skillsoup.chat.transcript import Turn, answer_line, cut_mark, transcript_markdown

__all__ = ["ALIASES", "COMMANDS", "ChatOptions", "ChatSession", "Turn", "answer_line", "check_line", "cut_mark",
           "transcript_markdown"]
