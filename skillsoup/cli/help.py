"""Help that reads like a usual command line: QUERY, TEXT, INTEGER, PATH; nothing after a flag.

typer 0.29 renders help its own way: a required argument is ``{query}`` in the usage line, and the
type column shows Python types (``<str>``, ``<bool>`` for flags, ``<list[str]>``, ``<int range>``,
``<path>``). Every command of ``skillsoup`` is built from the classes here (:class:`Typer` makes
them the default), whose parameters render as click always did: arguments by their name in capitals
(``QUERY``, ``[FILE]``, ``PATHS...``), options by the kind of value they take (``TEXT``,
``INTEGER [x>=1]``, ``PATH``), flags with no placeholder, and an explicit ``metavar=`` as given.
tests/cli/test_help.py reads every command's help.
"""

from __future__ import annotations

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

# typer's type labels (without < >) -> click's usual metavars
TYPE_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH", "file": "FILE", "dir": "DIR",
              "bool": "BOOLEAN", "datetime": "DATETIME"}


def value_metavar(param, ctx) -> str:
    """What an option's value looks like, from typer's label for its type: <int range> -> INTEGER,
    <list[str]> -> TEXT (the option repeats), <a|b> -> [a|b]."""
    label = param.display_type(ctx).strip("<>")
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]
    label = label.removesuffix(" range")
    if "|" in label:  # choices are spelt as the user types them
        return f"[{label}]"
    return TYPE_NAMES.get(label, label.upper())


class Argument(TyperArgument):
    @property
    def display_name_raw(self) -> str:  # the help's name column, the usage line and error messages
        return self.metavar if self.metavar is not None else self.name.upper()

    def display_type_rich(self, ctx) -> str | None:
        return None  # its name says what it is

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


class Option(TyperOption):
    def display_type_rich(self, ctx) -> str | None:
        if self.metavar is not None:
            return self.metavar
        if self.is_flag or self.count:
            return None  # a flag takes no value
        return value_metavar(self, ctx) + ("..." if self.nargs != 1 else "")


def _adopt(params: list) -> list:
    """typer's parameters, the help option included, rendered by the classes above (they add
    methods only, no state, so switching the class of a built parameter is safe)."""
    for p in params:
        if type(p) is TyperArgument:
            p.__class__ = Argument
        elif type(p) is TyperOption:
            p.__class__ = Option
    return params


class Command(TyperCommand):
    def get_params(self, ctx):  # what help, usage and the parser all read
        return _adopt(super().get_params(ctx))


class Group(TyperGroup):
    order: tuple[str, ...] = ()  # commands listed first, in this order; the others follow as registered

    def get_params(self, ctx):
        return _adopt(super().get_params(ctx))

    def list_commands(self, ctx):  # what --help lists
        names = super().list_commands(ctx)
        first = [n for n in self.order if n in names]
        return first + [n for n in names if n not in first]


class Typer(typer.Typer):
    """typer.Typer whose groups and commands render help as above."""

    def __init__(self, cls: type[Group] = Group, **options) -> None:
        super().__init__(cls=cls, **options)

    def command(self, name: str | None = None, *, cls=None, **options):
        return super().command(name, cls=cls or Command, **options)
