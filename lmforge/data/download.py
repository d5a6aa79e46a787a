"""`url:` sources: download once into a cache dir, resume cut-off downloads, verify sha256.

A download streams into `<name>.part`; when the connection drops, the next attempt (in this run or
a later one) asks for the rest with an HTTP `Range` header and appends, or starts over if the
server ignores ranges. Only a complete, verified file is renamed to its final cache name, so a
cached file is always whole. Standard library only (`urllib`).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lmforge.errors import DataError
from lmforge.progress import progress_bar

log = logging.getLogger(__name__)

_BLOCK = 1 << 16
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def parse_url_spec(spec: str) -> tuple[str, str | None]:
    """`url:https://host/f.txt#sha256=<hex>` -> (url, sha256 or None)."""
    url = spec.removeprefix("url:")
    url, _, fragment = url.partition("#")
    sha256 = None
    if fragment:
        key, _, value = fragment.partition("=")
        if key != "sha256" or not _SHA256.match(value):
            raise DataError(
                f"source '{spec}': the part after '#' must be sha256=<64 hex digits>, "
                f"got '#{fragment}'"
            )
        sha256 = value.lower()
    if urlsplit(url).scheme not in ("http", "https"):
        raise DataError(f"source '{spec}' is not an http(s) URL; write url:https://host/file.txt")
    return url, sha256


def cache_path(url: str, cache_dir: Path) -> Path:
    """Where `url` is cached: `<cache>/downloads/<hash of url>-<file name>`, keeping the suffix."""
    name = Path(unquote(urlsplit(url).path)).name or "download"
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return cache_dir / "downloads" / f"{digest}-{name}"


def fetch(
    url: str, cache_dir: Path, sha256: str | None = None, retries: int = 3, timeout: float = 30.0
) -> Path:
    """Return the cached file for `url`, downloading (and resuming) it if needed."""
    final = cache_path(url, cache_dir)
    if final.is_file() and (sha256 is None or file_sha256(final) == sha256):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    last_error = ""
    for attempt in range(retries + 1):
        try:
            if _download(url, part, timeout):
                break
            last_error = "the connection closed before the end of the file"
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, urllib.error.HTTPError) and exc.code not in (
                408,
                429,
                500,
                502,
                503,
            ):
                raise DataError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from None
            last_error = str(exc) or type(exc).__name__
        log.info("download of %s interrupted (attempt %d): %s", url, attempt + 1, last_error)
    else:
        have = part.stat().st_size if part.exists() else 0
        raise DataError(
            f"downloading {url} failed after {retries + 1} attempts ({last_error}; {have} bytes "
            f"kept in {part}); re-run to resume"
        )
    _verify(url, part, sha256)
    part.replace(final)
    return final


def _download(url: str, part: Path, timeout: float) -> bool:
    """One attempt; True when the body is complete. Resumes from `part` with a Range request."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "lmforge"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # range beyond the end: the part file is already whole
            return True
        raise
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored Range and sends the whole file; start over
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length is not None else None
        received = have
        with open(part, "ab" if have else "wb") as out, progress_bar() as progress:
            task = progress.add_task(f"download {Path(part).stem}", total=expected)
            progress.update(task, completed=have)
            while True:
                try:
                    block = response.read(_BLOCK)
                except http.client.IncompleteRead as exc:
                    out.write(exc.partial)
                    return False
                if not block:
                    break
                out.write(block)
                received += len(block)
                progress.update(task, completed=received)
    return expected is None or received >= expected


def _verify(url: str, part: Path, sha256: str | None) -> None:
    if sha256 is None:
        return
    actual = file_sha256(part)
    if actual != sha256:
        part.unlink()  # a wrong file must not be resumed from
        raise DataError(
            f"sha256 of {url} is {actual}, expected {sha256}; fix the '#sha256=' in the source "
            "or check the URL"
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
