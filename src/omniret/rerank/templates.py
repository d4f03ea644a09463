"""Point-wise reranking prompts: one template per M-BEIR task (user-overridable) and the answer pair scored.

MM-Embed (arXiv 2411.02571, §4.1 of omniret's METHODS notes, docs/rerank.md) asks an off-the-shelf LLaVA-Next a
yes/no question about (query, candidate) ending in "True or False" and ranks by P("True"). Only the
image-caption wording ("Does the above daily-life image match the caption? True or False") is published; the
other task wordings here are omniret's [I]. A ReMatch-trained checkpoint answers "Yes"/"No" (arXiv 2511.19278,
generative matching), so its template scores P("Yes").

A template is text with placeholders ``{query}``, ``{document}`` (exactly once) and optionally
``{instruction}`` (the query's task instruction, or nothing). Everything before ``{document}`` is the part shared
by all candidates of one query: it is encoded once and its KV cache reused (see :mod:`omniret.rerank.mllm`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from omniret.errors import ConfigError
from omniret.registry import Registry
from omniret.types import ImagePart, Item, Part

_PLACEHOLDER = re.compile(r"\{(query|document|instruction)\}")


@dataclass(frozen=True)
class RerankTemplate:
    """Prompt text plus the (positive, negative) answer words whose logits are compared."""

    text: str
    answers: tuple[str, str] = ("True", "False")

    def __post_init__(self) -> None:
        if self.text.count("{document}") != 1:
            raise ConfigError(f"rerank template must contain {{document}} exactly once: {self.text!r}")
        if len(self.answers) != 2 or self.answers[0] == self.answers[1] or not all(self.answers):
            raise ConfigError(f"rerank template answers must be two different words, got {self.answers!r}")

    def render(self, query: Item, document: Item | None) -> tuple[list[Part], list[Part]]:
        """``(prefix, suffix)`` parts: the prefix (before ``{document}``) depends on the query only; the suffix
        starts with the document's parts (empty when ``document`` is None)."""
        head, tail = self.text.split("{document}")
        prefix = _fill(head, query)
        if prefix and isinstance(prefix[0], str):  # an empty leading {instruction} leaves a bare newline
            prefix[0] = prefix[0].lstrip()
            prefix = prefix if prefix[0] else prefix[1:]
        suffix = ([] if document is None else list(document.parts)) + _fill(tail, query)
        return prefix, suffix


def _fill(text: str, query: Item) -> list[Part]:
    out: list[Part] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        out.append(text[pos : m.start()])
        if m.group(1) == "query":
            out.extend(query.parts)
        elif m.group(1) == "instruction":
            out.append(query.instruction or "")
        else:  # a second {document} is rejected by RerankTemplate
            raise ConfigError(f"{{document}} may appear only once in a rerank template: {text!r}")
        pos = m.end()
    out.append(text[pos:])
    return [p for p in out if isinstance(p, ImagePart) or p]


TEMPLATES: Registry[RerankTemplate] = Registry("rerank template")

_ASK = "True or False"
for _name, _text, _help in [
    ("default", "{instruction}\nQuery: {query}\nCandidate: {document}\nDoes the candidate match the query? " + _ASK,
     "any query and candidate modality"),
    ("text_to_image", "Caption: {query}\n{document}\nDoes the above image match the caption? " + _ASK,
     "MM-Embed's published image-caption wording, caption first so it can be shared"),
    ("text_to_text", "Query: {query}\nPassage: {document}\nDoes the passage answer the query? " + _ASK,
     "text query, text candidate"),
    ("text_to_mixed", "Query: {query}\nCandidate: {document}\nDoes the image and text above match the query? " + _ASK,
     "text query, image+text candidate"),
    ("image_to_text", "{query}\nCaption: {document}\nDoes the caption describe the above image? " + _ASK,
     "image query, text candidate"),
    ("image_to_image", "Image 1: {query}\nImage 2: {document}\nDo the two images show the same thing? " + _ASK,
     "image query, image candidate"),
    ("mixed_to_text", "{query}\nAnswer: {document}\nDoes the answer fit the image and question above? " + _ASK,
     "image+text query (e.g. a visual question), text candidate"),
    ("composed", "Reference image and change: {query}\nCandidate image: {document}\n"
     "Does the candidate image show the reference image with the change applied? " + _ASK,
     "composed image retrieval (CIRR, FashionIQ, CIRCO)"),
    ("mixed_to_mixed", "{query}\nCandidate: {document}\nDoes the candidate answer the query above? " + _ASK,
     "image+text query, image+text candidate"),
]:
    TEMPLATES.add(_name, RerankTemplate(_text), _help)
TEMPLATES.add(
    "yesno",
    RerankTemplate("Determine whether the candidate is related to the query; answer only Yes or No.\n"
                   "Query: {query}\nCandidate: {document}", ("Yes", "No")),
    "ReMatch-style matching question (P(Yes)), for checkpoints trained with generative matching",
)

#: M-BEIR task id (UniIR's numbering, query -> candidate modality) -> template name
MBEIR_TASK_TEMPLATES: dict[int, str] = {
    0: "text_to_image", 1: "text_to_text", 2: "text_to_mixed", 3: "image_to_text", 4: "image_to_image",
    5: "mixed_to_mixed", 6: "mixed_to_text", 7: "composed", 8: "mixed_to_mixed",
}


def resolve_template(spec: str | RerankTemplate | None, task: str | int | None = None,
                     overrides: dict[str, str | RerankTemplate] | None = None) -> RerankTemplate:
    """The template for one query.

    ``spec`` (a registered name, literal template text containing ``{document}``, or a template) wins; else
    ``task`` picks one: an M-BEIR task id (``7``), a task name (``"cirr_task7"``) or a template name, first
    looked up in the user's ``overrides``. With neither, the ``default`` template.
    """
    if spec is not None:
        return _as_template(spec)
    if task is None:
        return TEMPLATES.get("default")
    key = str(task)
    if overrides and key in overrides:
        return _as_template(overrides[key])
    m = re.fullmatch(r"(?:.*_)?task(\d+)|(\d+)", key)
    if m:
        tid = int(m.group(1) or m.group(2))
        if overrides and str(tid) in overrides:
            return _as_template(overrides[str(tid)])
        if tid in MBEIR_TASK_TEMPLATES:
            return TEMPLATES.get(MBEIR_TASK_TEMPLATES[tid])
    if key in TEMPLATES:
        return TEMPLATES.get(key)
    raise ConfigError(f"no rerank template for task {key!r}: use an M-BEIR task id 0-8, a task name like "
                      f"'cirr_task7', or one of {', '.join(TEMPLATES.names())}")


def _as_template(spec: str | RerankTemplate) -> RerankTemplate:
    if isinstance(spec, RerankTemplate):
        return spec
    if "{document}" in spec:
        return RerankTemplate(spec)
    if spec not in TEMPLATES:
        raise ConfigError(f"unknown rerank template {spec!r}: give a name ({', '.join(TEMPLATES.names())}) "
                          f"or template text containing {{query}} and {{document}}")
    return TEMPLATES.get(spec)


__all__ = ["RerankTemplate", "TEMPLATES", "MBEIR_TASK_TEMPLATES", "resolve_template"]
