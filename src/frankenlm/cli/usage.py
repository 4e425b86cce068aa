"""Usage errors (a value click/typer cannot parse, an unknown option or command) as one line and exit status 2.

Without this, typer draws a multi-line box for them; every other refusal of the CLI is one `error: ...` line,
so these are too, with a pointer to the command's --help.
"""

from __future__ import annotations

import typer
from rich.markup import escape
from typer.core import TyperGroup

try:  # typer >= 0.24 vendors click as typer._click; older typer uses click itself
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import NoArgsIsHelpError, UsageError

from frankenlm.cli.console import err_console


def _refuse(e: UsageError) -> None:
    ctx = e.ctx
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    err_console.print(
        f"[bold red]error:[/] {escape(e.format_message() + where)}", highlight=False, soft_wrap=True, markup=True
    )
    raise typer.Exit(e.exit_code)


class OneLineUsageErrors(TyperGroup):
    """A Typer group whose usage errors, and those of its subcommands, print one line (help requests still work)."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except NoArgsIsHelpError:
            raise
        except UsageError as e:
            _refuse(e)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:
            raise
        except UsageError as e:
            _refuse(e)
