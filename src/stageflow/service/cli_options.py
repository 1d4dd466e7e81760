"""Options several CLI modules share (one definition, one help text)."""

from __future__ import annotations

import click

__all__ = ["FORMAT", "PARAM_OPTION"]

#: ``--format``: the text a person reads, or JSON for a program.
FORMAT = click.Choice(["text", "json"])

#: ``--param KEY=VALUE`` (repeatable), for every command that starts a run.
PARAM_OPTION = click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a run parameter (JSON values are parsed: 3, true, [1,2]).",
)
