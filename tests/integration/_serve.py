"""Shared pieces of the server tests: a real uvicorn server on a free loopback port, and a small real index.

The default encoder and the index are built once per test process (``functools.cache``), not per module.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import uvicorn

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample-corpus"
EMOJI = ("cat.png", "dog.png", "red_apple.png", "green_apple.png", "rocket.png")
TEXTS = ("apples.txt", "dogs.txt", "domestic_cat.txt", "espresso.txt", "rocket_launch.txt", "the_moon.txt")


@cache
def default_encoder():
    from omniret import load_encoder

    return load_encoder("default")


def build_corpus(dst: Path) -> Path:
    """A 19-document slice of the sample corpus: 6 photos (2 captioned), 5 emoji, 6 texts."""
    shutil.copytree(SAMPLE / "photos", dst / "photos")
    (dst / "emoji").mkdir(parents=True)
    (dst / "texts").mkdir()
    for name in EMOJI:
        shutil.copy(SAMPLE / "emoji" / name, dst / "emoji" / name)
    for name in TEXTS:
        shutil.copy(SAMPLE / "texts" / name, dst / "texts" / name)
    return dst


@cache
def shared_index() -> Path:
    """An index of :func:`build_corpus` with the default encoder, in a temp dir removed at exit."""
    from omniret import Retriever

    root = Path(tempfile.mkdtemp(prefix="omniret-serve-"))
    atexit.register(shutil.rmtree, root, True)
    corpus = build_corpus(root / "corpus")
    Retriever.create(root / "index", default_encoder()).index_corpus(corpus)
    return root / "index"


def open_shared():
    from omniret import Retriever

    return Retriever.open(shared_index(), default_encoder())


@contextlib.contextmanager
def running(app, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
