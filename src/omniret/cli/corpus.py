"""`omniret index`, `omniret search`, `omniret info`."""

import typer


def register(app: typer.Typer) -> None:
    pass
