"""``python -m skillsoup``: the ``skillsoup`` command (the cli stage)."""

from skillsoup.cli import run

if __name__ == "__main__":  # importing this module (the layout tests do) runs nothing
    run()
