"""Checksummed downloads with a timeout: the file arrives complete and verified, or not at all.

``fetch(url, target, sha256=...)`` streams ``url`` into a temporary file in ``target``'s folder,
hashing it on the way, and renames it onto ``target`` (atomically) only when its size and SHA-256
are the expected ones; after any failure no partial file is left behind. A failure raises
``DownloadFailed`` whose ``kind`` says what happened:

- ``"not_found"``: the server answered HTTP 404 (no such file at that address);
- ``"http"``: another HTTP error status (403, 500, ...);
- ``"timeout"``: no byte arrived for ``timeout`` seconds (a stalled or very slow connection);
- ``"unreachable"``: no connection at all (no network, unknown host, connection refused);
- ``"interrupted"``: the connection broke before the whole file arrived (truncated);
- ``"hash_mismatch"``: the whole file arrived but it is not the expected one.

Why not ``torch.hub.download_url_to_file``: it has no timeout (a stalled host hangs a notebook
cell for ever) and its errors do not say which of the cases above happened.
``url`` may be ``http(s)://``, ``file://`` or a local path (a mirror folder).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

PROGRESS_BYTES = 4_000_000  # show a progress bar for files larger than this


class DownloadFailed(OSError):
    """A download did not produce the expected file; ``kind`` names what went wrong."""

    def __init__(self, kind: str, url: str, detail: str):
        super().__init__(f"{url}: {detail}")
        self.kind, self.url, self.detail = kind, url, detail


def as_url(location: str) -> str:
    """``location`` as a URL: http(s)/file URLs unchanged, a local path as a ``file://`` URL."""
    if "://" in location:
        return location
    return Path(location).expanduser().resolve().as_uri()


def fetch(url: str, target: str | Path, *, sha256: str, size: int | None = None,
          timeout: float = 60.0, progress: bool | None = None) -> Path:
    """Download ``url`` to ``target`` if its SHA-256 (hex) is ``sha256``; return ``target``.

    ``size``: the expected number of bytes (checked, and used for the progress bar when the server
    sends no length). ``timeout``: seconds without data before giving up. ``progress``: a tqdm bar
    (default: only for files over ``PROGRESS_BYTES``).
    """
    url, target = as_url(url), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            got, digest, announced = _stream(url, out, size=size, timeout=timeout, progress=progress)
        if digest != sha256:
            if announced is None and size is not None and got < size:  # no length sent: cut short?
                raise DownloadFailed("interrupted", url, f"only {got:,} of {size:,} bytes arrived (the "
                                     "connection closed early, or this is another file)")
            expected = f"{size:,} bytes, " if size is not None else ""
            raise DownloadFailed("hash_mismatch", url, f"the file that arrived ({got:,} bytes, SHA-256 "
                                 f"{digest[:12]}...) is not the expected one ({expected}SHA-256 "
                                 f"{sha256[:12]}...)")
        os.replace(tmp, target)
        return target
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _stream(url: str, out, *, size: int | None, timeout: float,
            progress: bool | None) -> tuple[int, str, int | None]:
    """Copy ``url`` into the open file ``out``; return (bytes, hex SHA-256, the length the server
    announced or None). Raises DownloadFailed."""
    digest, got, announced = hashlib.sha256(), 0, None
    request = urllib.request.Request(url, headers={"User-Agent": "course_lib"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            announced = int(length) if length and length.isdigit() else None
            total = announced if announced is not None else size
            bar = None
            if progress or (progress is None and (total or 0) > PROGRESS_BYTES):
                from tqdm.auto import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name, leave=False)
            try:
                while block := response.read(1 << 16):
                    out.write(block)
                    digest.update(block)
                    got += len(block)
                    if bar is not None:
                        bar.update(len(block))
            finally:
                if bar is not None:
                    bar.close()
            if announced is not None and got < announced:
                raise DownloadFailed("interrupted", url, f"the connection closed after {got:,} of "
                                     f"{announced:,} bytes")
    except DownloadFailed:
        raise
    except urllib.error.HTTPError as err:
        kind = "not_found" if err.code == 404 else "http"
        raise DownloadFailed(kind, url, f"HTTP {err.code} {err.reason}") from err
    except TimeoutError as err:
        raise DownloadFailed("timeout", url, f"no data for {timeout:g} s (timed out)") from err
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, TimeoutError):
            raise DownloadFailed("timeout", url, f"no connection within {timeout:g} s (timed out)") from err
        if url.startswith("file:") and isinstance(reason, FileNotFoundError):
            raise DownloadFailed("not_found", url, "no such file") from err
        raise DownloadFailed("unreachable", url, f"could not connect ({reason})") from err
    except FileNotFoundError as err:  # file:// URLs
        raise DownloadFailed("not_found", url, "no such file") from err
    except (http.client.IncompleteRead, ConnectionError, http.client.HTTPException) as err:
        raise DownloadFailed("interrupted", url, f"the connection broke after {got:,} bytes "
                             f"({type(err).__name__})") from err
    return got, digest.hexdigest(), announced
