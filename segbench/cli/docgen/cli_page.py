"""The CLI reference, read from the argparse parser ``segbench`` itself runs (``build_parser``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segbench.cli.docgen.markdown import MISSING, code, page, table
from segbench.cli.parser import build_parser

SOURCE = "the argparse parser in `segbench/cli/parser.py` (`build_parser`)"


def _help(action: argparse.Action, prog: str) -> str:
    """The help text with argparse's ``%(...)s`` placeholders and ``%%`` expanded, as ``--help`` shows it."""
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    params: dict[str, Any] = dict(vars(action), prog=prog)
    for name, value in list(params.items()):
        if value is argparse.SUPPRESS:
            del params[name]
        elif hasattr(value, "__name__"):
            params[name] = value.__name__
    if params.get("choices") is not None:
        params["choices"] = ", ".join(str(choice) for choice in params["choices"])
    return action.help % params


# What a value looks like, by the parser's type function (argparse would show the option's name in
# capitals, which says less than the form the value takes).
_TYPE_FORMS = {"Path": "PATH", "int": "N", "float": "X", "names": "A,B,...", "_size": "HxW",
               "_sizes": "HxW,...", "_batches": "N,...", "_positive": "N", "_threshold": "PCT",
               "_probability": "P", "_option": "KEY=VALUE"}  # fmt: skip


def _metavar(action: argparse.Action) -> str:
    if action.metavar:
        return " ".join(action.metavar) if isinstance(action.metavar, tuple) else action.metavar
    if not action.option_strings:
        return action.dest.upper()
    return _TYPE_FORMS.get(getattr(action.type, "__name__", ""), action.dest.upper())


def _value(action: argparse.Action) -> str:
    """What the argument takes: its choices, the form of its value, or a flag."""
    if action.nargs == 0:
        return "flag"
    if action.choices is not None:
        return " | ".join(code(choice) for choice in action.choices)
    count = {"?": " (optional)", "+": " ... (one or more)", "*": " ... (any number)"}
    suffix = f" x{action.nargs}" if isinstance(action.nargs, int) else count.get(str(action.nargs), "")
    if isinstance(action, argparse._AppendAction):
        suffix += " (repeatable)"
    # A positional's name is in the first column already: say the form of its value instead.
    form = (
        _metavar(action)
        if action.option_strings
        else _TYPE_FORMS.get(getattr(action.type, "__name__", ""), "text")
    )
    return code(form) + suffix


def _default(action: argparse.Action) -> str:
    default = action.default
    if action.nargs == 0 or default is None or default is argparse.SUPPRESS or default == []:
        return MISSING
    if isinstance(default, tuple) and len(default) == 2 and all(isinstance(v, int) for v in default):
        return code(f"{default[0]}x{default[1]}")  # a size: HxW, as it is written on the command line
    if isinstance(default, Path):
        return code(default.as_posix())
    return code(default)


def _visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
    ]


def _usage(name: str, parser: argparse.ArgumentParser) -> str:
    """A usage line built from the actions (argparse's own wraps at the terminal's width)."""
    words = [f"segbench {name}"]
    for action in _visible(parser):
        if action.choices is not None:
            value = "{" + ",".join(str(choice) for choice in action.choices) + "}"
        else:
            value = _metavar(action)
        if action.option_strings:
            word = action.option_strings[-1] if action.nargs == 0 else f"{action.option_strings[-1]} {value}"
            words.append(word if action.required else f"[{word}]")
        else:
            words.append({"?": f"[{value}]", "+": f"{value} [{value} ...]"}.get(str(action.nargs), value))
    return " ".join(words)


def _commands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of every listed command, in the parser's order; a command added without
    help (``ab-side``, started by ``ab`` itself) is not listed by ``--help`` and not here either."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                found.append((choice.dest, choice.help or "", action.choices[choice.dest]))
    return found


def cli_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """``docs/reference/cli.md``: every command, its usage and its arguments."""
    parser = parser or build_parser()
    commands = _commands(parser)
    parts = [
        f"{parser.description} On bad input (a malformed file, an unknown name, a value of the wrong form) "
        "every command prints one `segbench: error:` line and exits 2. `segbench --version` prints the "
        "version.",
        table(
            ["command", "what it does"], [(f"[{code(name)}](#{name})", text) for name, text, _ in commands]
        ),
    ]
    for name, text, sub in commands:
        rows = [
            (
                ", ".join(code(flag) for flag in action.option_strings) or code(_metavar(action)),
                _value(action),
                _default(action),
                "required. " * bool(action.option_strings and action.required)
                + _help(action, f"segbench {name}"),
            )
            for action in _visible(sub)
        ]
        parts += [
            f"## segbench {name} {{#{name}}}",
            text[:1].upper() + text[1:] + ".",
            f"```text\n{_usage(name, sub)}\n```",
            table(["argument", "value", "default", "description"], rows) if rows else "No arguments.",
        ]
    return page("Command line", SOURCE, parts)
