"""`url:` sources against a localhost server: cache, resume with Range, sha256, dropped links."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lmforge.data import download, sources
from lmforge.errors import DataError

BODY = ("line of text for the download test\n" * 4000).encode()  # 140 KB: several read blocks
SHA = hashlib.sha256(BODY).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves BODY. `drops` = how many requests are cut off halfway; `ranges` = honour Range."""

    drops = 0
    ranges = True
    requests: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's API
        cls = type(self)
        cls.requests.append(self.headers.get("Range"))
        if self.path.endswith("missing.txt"):
            self.send_error(404)
            return
        start = 0
        header = self.headers.get("Range")
        if header and cls.ranges:
            start = int(header.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
        else:
            self.send_response(200)
        body = BODY[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cls.drops > 0:
            cls.drops -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True  # hang up mid-file
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"requests": [], "drops": 0, "ranges": True})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def test_download_once_then_cached(server, tmp_path):
    base, handler = server
    path = download.fetch(f"{base}/corpus.txt", tmp_path)
    assert path.read_bytes() == BODY and path.name.endswith("-corpus.txt")
    assert download.fetch(f"{base}/corpus.txt", tmp_path, SHA) == path
    assert handler.requests == [None]  # the second call never reached the server


def test_dropped_connection_resumes_with_range(server, tmp_path):
    base, handler = server
    handler.drops = 1
    path = download.fetch(f"{base}/corpus.txt", tmp_path, SHA)
    assert path.read_bytes() == BODY
    assert handler.requests[0] is None and handler.requests[1] == f"bytes={len(BODY) // 2}-"


def test_server_without_range_restarts(server, tmp_path):
    base, handler = server
    handler.drops, handler.ranges = 1, False
    assert download.fetch(f"{base}/corpus.txt", tmp_path, SHA).read_bytes() == BODY


def test_interrupted_run_resumes_in_a_later_run(server, tmp_path):
    base, handler = server
    handler.drops = 5
    with pytest.raises(DataError, match="failed after 2 attempts.*re-run to resume"):
        download.fetch(f"{base}/corpus.txt", tmp_path, SHA, retries=1)
    part = download.cache_path(f"{base}/corpus.txt", tmp_path).with_suffix(".txt.part")
    assert 0 < part.stat().st_size < len(BODY)
    assert not download.cache_path(f"{base}/corpus.txt", tmp_path).exists()
    handler.drops = 0
    assert download.fetch(f"{base}/corpus.txt", tmp_path, SHA).read_bytes() == BODY
    assert handler.requests[-1] is not None  # resumed, not restarted


def test_sha256_mismatch_and_http_errors(server, tmp_path):
    base, _ = server
    with pytest.raises(DataError, match=f"sha256 of .* expected {'0' * 64}"):
        download.fetch(f"{base}/corpus.txt", tmp_path, "0" * 64)
    assert not list((tmp_path / "downloads").glob("*"))  # nothing half-trusted is kept
    with pytest.raises(DataError, match="HTTP 404"):
        download.fetch(f"{base}/missing.txt", tmp_path)


def test_url_source_spec(server, tmp_path):
    base, _ = server
    options = sources.SourceOptions(cache_dir=tmp_path)
    inputs = sources.resolve([f"url:{base}/corpus.txt#sha256={SHA}"], options)
    stats = sources.ReadStats()
    docs = list(sources.iter_documents(inputs, options, stats))
    assert [d.text for d in docs] == [BODY.decode()]
    with pytest.raises(DataError, match="sha256=<64 hex digits>"):
        sources.resolve([f"url:{base}/corpus.txt#md5=abc"], options)
    with pytest.raises(DataError, match="not an http"):
        download.parse_url_spec("url:ftp://x/y")


def test_cache_path_keeps_suffix(tmp_path):
    path = download.cache_path("https://h/a/b/data.jsonl.gz?x=1", tmp_path)
    assert path.name.endswith("-data.jsonl.gz") and path.parent == Path(tmp_path) / "downloads"
