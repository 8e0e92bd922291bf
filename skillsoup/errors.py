"""Every error skillsoup raises on purpose.

Each message says what failed and how to fix it; the CLI prints ``str(error)`` as one red line and
exits non-zero. Catch :class:`SkillsoupError` to handle them all.
"""

from __future__ import annotations


class SkillsoupError(Exception):
    """Base class: an expected failure with a message meant for the user."""

    exit_code = 1


class ModelLoadError(SkillsoupError):
    """A model could not be found, loaded, or is not a supported architecture."""


class StateError(SkillsoupError):
    """A skill state is malformed, corrupted or belongs to another model. ``problem`` is what is
    wrong without the advice, for a caller that recomputes the state itself."""

    def __init__(self, message: str, problem: str | None = None):
        super().__init__(message)
        self.problem = problem or message


class StateMismatchError(StateError):
    """A state does not fit the model or the other states it is used with."""


class StateFileError(StateError):
    """A state file is missing, truncated, not safetensors, or holds bad values."""


class MixError(SkillsoupError):
    """Mixing weights or options are invalid."""


class GenerationError(SkillsoupError):
    """Generation options are invalid."""


class SkillFileError(SkillsoupError):
    """A skill file cannot be read or does not follow the format (docs/skills.md)."""


class RegistryError(SkillsoupError):
    """The skill registry is missing a skill, inconsistent, or cannot be opened."""


class RegistryLockedError(RegistryError):
    """Another process holds the registry's write lock."""


class RegistryReadOnlyError(RegistryError):
    """A write to a registry folder this process may only read."""


class _NamesSkills:
    """An error about some skills: ``names`` lets another caller (the HTTP server) word its own message."""

    def __init__(self, message: str, names: tuple[str, ...] = ()):
        super().__init__(message)
        self.names = tuple(names)


class SkillNotFoundError(_NamesSkills, RegistryError):
    """A skill name is not in the registry. ``names``: the names asked for."""


class SkillConflictError(_NamesSkills, RegistryError):
    """A skill being added has the name of a stored skill with other content, and replacing was not
    asked for. ``names``: the conflicting names."""


class RoutingError(SkillsoupError):
    """A query or router option is invalid."""


class UnknownSkillError(_NamesSkills, RoutingError):
    """A skill named in a request (pinned) is not in the registry. ``names``: the names asked for."""


class PolicyError(RoutingError):
    """An aggregation policy name or router parameter is not valid."""


class LabelledDataError(RoutingError):
    """A labelled-queries file (JSONL for fit / eval) is malformed; the message says file:line."""


class KernelUnavailableError(SkillsoupError):
    """A fast path was forced but cannot run here."""


class ICLEvalError(SkillsoupError):
    """The in-context evaluation's input (skills, k list, methods, split) or output option is invalid."""


class PlotUnavailableError(ICLEvalError):
    """A plot was asked for but matplotlib is not installed."""


class ServeError(SkillsoupError):
    """The server's settings are unsafe or invalid (e.g. a public address without an API key)."""
