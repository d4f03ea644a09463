"""`omniret serve` as a user starts it: a subprocess on loopback that serves the page and the API, and on
SIGTERM finishes the request in flight before it exits."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from _serve import SAMPLE, shared_index

from _cli import run

CAT = base64.b64encode((SAMPLE / "photos" / "chelsea_the_cat.jpg").read_bytes()).decode()


def test_serve_refuses_a_missing_index(monkeypatch, capsys, tmp_path):
    code, _, err = run(monkeypatch, capsys, "serve", "--index", str(tmp_path / "nope"))
    assert code == 1 and "no index there" in err and "omniret index" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp, state 0A = LISTEN)."""
    found = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":
            found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


def _get(sock: socket.socket, path: str) -> bytes:
    """One HTTP/1.1 keep-alive GET on ``sock``; returns the response head."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += _recv(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: *(\d+)", head.lower())[1])
    while len(body) < length:
        body += _recv(sock)
    return head


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("the server closed the keep-alive connection")
    return chunk


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.mark.slow
def test_serve_cli_loopback_page_api_and_graceful_sigterm():
    port = _free_port()
    # PyTorch runtime: the 24-image request below must still be running 1 s later (ONNX Runtime is ~10x faster)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "OMNIRET_RUNTIME": "torch"}
    proc = subprocess.Popen([sys.executable, "-m", "omniret", "serve", "--index", str(shared_index()),
                             "--port", str(port), "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.2)
        assert _listening_addresses(port) == {"127.0.0.1"}
        # an idle keep-alive connection outlives common client expiries (httpx: 5 s, as uvicorn's own default),
        # so a client never reuses one the server is closing; shutdown below still closes it at once
        idle = socket.create_connection(("127.0.0.1", port), timeout=30)
        assert _get(idle, "/healthz").startswith(b"HTTP/1.1 200")
        time.sleep(6)
        assert _get(idle, "/healthz").startswith(b"HTTP/1.1 200")  # the same connection still serves
        assert "<title>omniret search</title>" in httpx.get(url + "/").text
        dim = httpx.get(url + "/v1/models").json()["data"][0]["dimensions"]
        assert len(httpx.post(url + "/v1/embeddings", json={"input": "x"}).json()["data"][0]["embedding"]) == dim

        # a slow request (256 images, the item cap: seconds of decoding and encoding) is in flight when SIGTERM
        # arrives 1 s after it was sent: it completes, then the server exits
        item = {"content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + CAT}}]}
        result = {}

        def slow():
            r = httpx.post(url + "/v1/embeddings", json={"input": [item] * 256}, timeout=120)
            result.update(status=r.status_code, n=len(r.json()["data"]), done=time.monotonic())

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(1.0)
        sigterm_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        t.join(120)
        proc.wait(60)
        err = proc.stderr.read()
        assert _closed(idle)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert result["status"] == 200 and result["n"] == 256 and result["done"] > sigterm_at, result
    # uvicorn re-raises the captured SIGTERM after its graceful shutdown, so the exit is "by SIGTERM", clean
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Traceback" not in err, err
