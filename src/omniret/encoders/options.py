"""The keyword options each model-family loader accepts, declared next to the loader.

A training config's ``model.options`` are checked against this set before anything is written to the run
folder (:mod:`omniret.training.preflight`), so a typo fails in a second instead of after the fingerprint is
stamped and the model has started loading. A loader states its set with :func:`declare_options`, derived
from the same source its own check uses (a recipe dataclass's fields plus its runtime options, or a
constructor's explicit keyword parameters), so the early check cannot reject what the loader accepts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def declare_options(names: Iterable[str]) -> Callable[[F], F]:
    """Decorator: ``loader`` accepts exactly the keyword options ``names``."""
    frozen = frozenset(names)

    def mark(loader: F) -> F:
        loader.accepted_options = frozen  # type: ignore[attr-defined]
        return loader

    return mark


def keyword_options(fn: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword parameters ``fn`` names explicitly; ``None`` when it also takes ``**kwargs``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return frozenset(p.name for p in params if p.kind in kinds and p.name != "self")


def accepted_options(loader: Callable[..., Any]) -> frozenset[str] | None:
    """Options ``loader(path, **options)`` accepts: its declaration, else its explicit keyword parameters
    after the model path; ``None`` when neither says (a third-party loader forwarding ``**options``)."""
    declared = getattr(loader, "accepted_options", None)
    if declared is not None:
        return frozenset(declared)
    named = keyword_options(loader)
    if named is None:
        return None
    first = next(iter(inspect.signature(loader).parameters), None)
    return named - {first}
