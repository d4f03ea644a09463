"""``make demo`` / ``python -m omniret.demo``: index the bundled sample corpus and run three searches.

Indexes ``examples/sample-corpus/`` (emoji, photos, short texts, image+caption pairs) into ``demo-index/``
with the default offline encoder (incremental: a rerun encodes nothing), then shows

1. text -> image: ``"a cup of coffee"`` among the images (plain and captioned);
2. image -> text: the cat photo against the text documents;
3. image + text -> image: the red-apple emoji plus ``"green"``, among the images (the query image itself
   is left out of the table);
4. text -> whatever the instruction asks for: ``"a red apple"`` with "Find an image of the following." over
   the whole index, texts included (the default model's modality head puts images first).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from omniret.errors import IndexMismatchError, OmniretError
from omniret.types import Item

CORPUS = Path("examples") / "sample-corpus"
EXCLUDE = ("LICENSES.md",)


def find_corpus(path: str | None) -> Path:
    """The sample corpus: ``--corpus``, else ``./examples/sample-corpus``, else the source checkout's."""
    candidates = [Path(path)] if path else [CORPUS, Path(__file__).resolve().parents[2] / CORPUS]
    for c in candidates:
        if c.is_dir():
            return c
    raise OmniretError(f"sample corpus not found (looked in {', '.join(map(str, candidates))}); pass --corpus DIR")


def searches(corpus: Path) -> list[tuple[str, Item, str | list[str] | None]]:
    """(title, query, modality filter) of the demo searches."""
    return [
        ("text → image: 'a cup of coffee'", Item("a cup of coffee"), ["image", "image,text"]),
        (
            "image → text: photos/chelsea_the_cat.jpg",
            Item(image=str(corpus / "photos" / "chelsea_the_cat.jpg")),
            "text",
        ),
        (
            "image + text → image: emoji/red_apple.png + 'green'",
            Item("green", image=str(corpus / "emoji" / "red_apple.png")),
            "image",
        ),
        (
            "text + instruction → image: 'a red apple', 'Find an image of the following.'",
            Item("a red apple", instruction="Find an image of the following."),
            None,
        ),
    ]


def run(corpus: Path, index_dir: Path, model: str | None, k: int) -> None:
    from rich.console import Console

    from omniret.cli.corpus import print_hits, quiet_model_loading
    from omniret.retriever import Retriever

    console = Console()
    quiet_model_loading()
    t0 = time.perf_counter()
    try:
        r = Retriever.open_or_create(index_dir, model)
    except IndexMismatchError as e:
        # demo-index/ is a throwaway cache of this demo: rebuild it when the bundled encoder changed
        console.print(f"[yellow]{e}[/]\n[yellow]rebuilding {index_dir}[/]")
        shutil.rmtree(index_dir)
        r = Retriever.create(index_dir, model or "default")
    report = r.index_corpus(corpus, progress=console.is_terminal, exclude=EXCLUDE)
    console.print(
        f"[bold]indexed[/] {corpus} -> {index_dir}: {report} "
        f"[dim](encoder {r.encoder.name}, {time.perf_counter() - t0:.1f}s)[/]\n"
    )
    for title, query, modality in searches(corpus):
        hits = r.search(query, k=k + 1, modality=modality)
        # a query image that is itself in the corpus trivially ranks first: leave it out of the table
        own = {str(Path(p.path).resolve()) for p in query.images if p.path}
        hits = [h for h in hits if not (h.img_path and str(Path(h.img_path).resolve()) in own)][:k]
        shown = "all" if modality is None else modality if isinstance(modality, str) else " or ".join(modality)
        print_hits(hits, title=f"{title}  ({shown} documents)")
        console.print()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m omniret.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", help="corpus folder (default: examples/sample-corpus)")
    ap.add_argument("--index", default="demo-index", help="index directory (default: demo-index)")
    ap.add_argument("--model", default=None, help="encoder name or directory (default: the bundled one)")
    ap.add_argument("-k", type=int, default=5, help="hits per search")
    args = ap.parse_args(argv)
    try:
        run(find_corpus(args.corpus), Path(args.index), args.model, args.k)
    except OmniretError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
