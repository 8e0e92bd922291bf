"""``python -m skillsoup``: the ``skillsoup`` command."""

from skillsoup.cli import run

run()
