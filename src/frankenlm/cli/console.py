"""The CLI's consoles: rich on a terminal; on a pipe or file, nothing is cut or wrapped.

rich sizes output to 80 columns when stdout is not a terminal, so redirected tables were truncated
(`gemma3-2…`) and long lines (generated text, cache paths) got newlines inserted. `PipeConsole` reports a very
wide console when its file is not a terminal: tables keep every character of every cell on one line, and text is
written as is.
"""

from __future__ import annotations

import sys

from rich.console import Console, ConsoleDimensions

PIPE_WIDTH = 100_000  # "unlimited": tables do not expand to the width, so this only removes the cut


class PipeConsole(Console):
    """A rich Console whose width is unlimited when not writing to a terminal (never truncates or wraps)."""

    @property
    def size(self) -> ConsoleDimensions:
        if not self.is_terminal and self._width is None:
            return ConsoleDimensions(PIPE_WIDTH, self._height or 25)
        return super().size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        width, height = new_size
        self._width, self._height = width, height


console = PipeConsole()
err_console = PipeConsole(stderr=True)


def write_text(text: str) -> None:
    """Write `text` and a newline to stdout exactly as it is (no markup, no highlighting, no wrapping)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
