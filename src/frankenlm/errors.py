"""The one exception type that carries a user-facing message.

Library code raises `FrankenError` for anything the user can fix (bad plan text, unknown model, corrupt file);
the CLI prints its message on one line and exits non-zero. Anything else is a bug and keeps its traceback.
"""


class FrankenError(Exception):
    """An error caused by the user's input; its message names the input and what would be valid."""
