"""Text that reaches a terminal: documents and file names are data, never terminal commands or rich markup.

* :func:`clean` makes control characters visible (``\\x1b`` for ESC, C1 controls, DEL, bidi overrides that
  could reorder what the user reads), so an ANSI escape in a document cannot recolour, clear or retitle the
  terminal; with ``one_line`` newlines are escaped too (error messages stay one line);
* :func:`cell` wraps text in a ``rich.text.Text`` so ``[/INST]`` or ``[bold]`` in a document is shown,
  not parsed as markup;
* :func:`json_text` is ``json.dumps`` whose output also escapes DEL, C1 controls and bidi overrides (plain
  ``json.dumps(ensure_ascii=False)`` passes them through raw).
"""

from __future__ import annotations

import json
import re
from typing import Any

_BIDI = "\u202a-\u202e\u2066-\u2069\u200e\u200f"
_CONTROL = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")
_CONTROL_NL = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")
_JSON_RAW = re.compile(f"[\x7f-\x9f{_BIDI}\ud800-\udfff]")


def _visible(m: re.Match[str]) -> str:
    c = m.group(0)
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def clean(text: object, one_line: bool = False) -> str:
    """``str(text)`` with control characters shown as escapes (newlines kept unless ``one_line``).

    Undecodable bytes of a non-UTF-8 file name (surrogates) become ``\\xNN`` too.
    """
    s = str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return (_CONTROL_NL if one_line else _CONTROL).sub(_visible, s)


def cell(text: object, one_line: bool = False) -> Any:
    """A rich ``Text`` (never parsed as markup) of :func:`clean` ``text``."""
    from rich.text import Text

    return Text(clean(text, one_line))


def json_text(obj: Any, **kw: Any) -> str:
    """``json.dumps(obj, ensure_ascii=False, **kw)`` with DEL, C1 controls and bidi overrides escaped."""
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group(0)):04x}", json.dumps(obj, ensure_ascii=False, **kw))
