"""Entry point of the ``omniret`` command. Each command group lives in its own module with ``register(app)``."""

from __future__ import annotations

import importlib
import os
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
    "omniret.cli.transfer",  # export, import (between index backends)
    "omniret.cli.models",  # models
    "omniret.cli.eval",  # eval mbeir|mmeb|beir
    "omniret.cli.lodo",  # eval lodo (leave-one-domain-out)
    "omniret.cli.data",  # data build emoji|wordnet
    "omniret.cli.train",  # train CONFIG.yaml
    "omniret.cli.mine",  # mine (modality-aware hard negatives)
    "omniret.cli.serve",  # serve (HTTP API + web page)
]

for _mod in _COMMAND_MODULES:
    importlib.import_module(_mod).register(app)


def main() -> None:
    """Run the CLI; user-facing errors become one line on stderr and exit code 1, never a traceback.

    Besides omniret's own errors, the errors a bad input or a full disk surface as in the libraries below
    (ValueError, OSError, RuntimeError from torch, TypeError, MemoryError, ...) are one line too; set
    ``OMNIRET_TRACEBACK=1`` to see the traceback of an unexpected one.
    """
    from omniret.cli.escape import clean
    from omniret.errors import OmniretError

    # typer's click (vendored in new typer, the real one in old) is reached through a public class's MRO
    click_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    try:
        # standalone_mode=False lets typer's own usage errors reach us, so they are one line too
        rv = app(standalone_mode=False)
    except click_error as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()  # its message is the help text
        else:
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            print(clean(f"error: {e.format_message()}{hint}", one_line=True), file=sys.stderr)
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except (OmniretError, OSError, ValueError, KeyError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(clean(f"error: {msg}", one_line=True), file=sys.stderr)
        sys.exit(1)
    except (RuntimeError, TypeError, MemoryError, AttributeError, IndexError) as e:
        if os.environ.get("OMNIRET_TRACEBACK"):
            raise
        # not expected from valid input; still one line (the type says where to look), never a traceback
        print(clean(f"error: {type(e).__name__}: {e}", one_line=True), file=sys.stderr)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
