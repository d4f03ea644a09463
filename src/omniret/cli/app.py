"""Entry point of the ``omniret`` command. Each command group lives in its own module with ``register(app)``."""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="omniret",
    help="Universal multimodal retrieval: index, search, evaluate, train.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_COMMAND_MODULES = [
    "omniret.cli.corpus",  # index, search, info
]

for _mod in _COMMAND_MODULES:
    importlib.import_module(_mod).register(app)


def main() -> None:
    """Run the CLI; user-facing errors become one line on stderr and exit code 1, never a traceback."""
    from omniret.errors import OmniretError

    try:
        app()
    except (OmniretError, FileNotFoundError, PermissionError, ValueError, KeyError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
