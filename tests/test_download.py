"""The checkpoint download path against a local HTTP server (127.0.0.1 only, no network).

Every failure a reader can meet (404, truncated, altered, stalled, interrupted, refused) gives an
error that names it and leaves no partial file; a good download lands verified in the cache; the
mirror override and the pinned revision decide where the file comes from.
"""

import hashlib
import http.server
import json
import socket
import threading
import time

import pytest

from course_lib import download, pretrained
from course_lib.vae import VAE, VAEConfig

TIMEOUT = 0.3  # seconds; the stalled server sleeps longer


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A real (tiny) checkpoint file saved with pretrained.save, its bytes and its manifest."""
    root = tmp_path_factory.mktemp("served")
    path = root / "manifest.json"
    path.write_text(json.dumps({"repository": "https://github.com/o/r", "branch": "main", "checkpoints": {}}))
    pretrained.save("tiny", VAE(VAEConfig(hidden_dims=(3,), latent_dim=2)), {"command": "test"},
                    path=path, local_dir=root / "ckpt")
    return path, (root / "ckpt" / "tiny.pt").read_bytes()


@pytest.fixture(scope="module")
def server(weights):
    """http://127.0.0.1:PORT/<mode>/tiny.pt, mode in ok, altered, truncated, short, html, cut, stall."""
    _, data = weights

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

        def do_GET(self):
            mode, _, file = self.path.strip("/").partition("/")
            modes = ("ok", "altered", "truncated", "short", "html", "cut", "stall")
            if file != "tiny.pt" or mode not in modes:
                self.send_error(404)
                return
            body = data
            if mode == "altered":  # same length, one byte changed
                body = data[:100] + bytes([data[100] ^ 1]) + data[101:]
            if mode == "short":  # a truncated file served as if it were whole
                body = data[: len(data) // 2]
            if mode == "html":  # a login or error page instead of the file (a captive portal)
                body = b"<html><body>Please sign in to use this network.</body></html>"
            self.send_response(200)
            if mode == "cut":  # no length announced (HTTP/1.0), half the file, then the end
                body = data[: len(data) // 2]
            else:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if mode == "stall":
                time.sleep(TIMEOUT * 5)
            elif mode == "truncated":  # promises the whole file, sends half, hangs up
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
            else:
                self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.delenv(pretrained.MIRROR_ENV, raising=False)
    (tmp_path / "local").mkdir()
    return tmp_path / "local", tmp_path / "cache"


def _load(weights, dirs, **kwargs):
    path, _ = weights
    local, cache = dirs
    return pretrained.locate("tiny", path=path, local_dir=local, cache_dir=cache, timeout=TIMEOUT, **kwargs)


def _serve_from(monkeypatch, *urls):
    monkeypatch.setattr(pretrained, "sources", lambda name, path=None: [f"{u}/{name}.pt" for u in urls])


def _nothing_left(cache):
    left = sorted(p.name for p in cache.iterdir()) if cache.exists() else []
    assert left == [], f"partial or unverified files left behind: {left}"


def test_success_lands_verified_in_the_cache(weights, dirs, server, monkeypatch):
    _, data = weights
    _serve_from(monkeypatch, f"{server}/ok")
    file = _load(weights, dirs)
    assert file == dirs[1] / "tiny.pt" and file.read_bytes() == data
    assert sorted(p.name for p in dirs[1].iterdir()) == ["tiny.pt"]  # no temporary file left
    model = pretrained.load("tiny", path=weights[0], local_dir=dirs[0], cache_dir=dirs[1], download=False)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("mode, kind, words", [
    ("missing", "not_found", "HTTP 404"),
    ("altered", "hash_mismatch", "not the expected one"),
    ("short", "hash_mismatch", "not the expected one"),
    ("html", "hash_mismatch", "not the expected one"),
    ("cut", "interrupted", "closed early"),
    ("truncated", "interrupted", "after"),
    ("stall", "timeout", "timed out"),
])
def test_each_failure_names_what_happened_and_leaves_nothing(weights, dirs, server, monkeypatch,
                                                             mode, kind, words):
    _serve_from(monkeypatch, f"{server}/{mode}")
    started = time.perf_counter()
    with pytest.raises(pretrained.CheckpointError, match=words) as caught:
        _load(weights, dirs)
    assert time.perf_counter() - started < TIMEOUT * 4  # the stalled server does not hang the caller
    assert isinstance(caught.value.__cause__, download.DownloadFailed)
    assert caught.value.__cause__.kind == kind
    assert f"{server}/{mode}/tiny.pt" in str(caught.value)
    assert "connect to the internet" not in str(caught.value)  # only where that is the cause
    _nothing_left(dirs[1])


def test_connection_refused_says_no_connection(weights, dirs, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _serve_from(monkeypatch, f"http://127.0.0.1:{port}")
    with pytest.raises(pretrained.CheckpointError, match="could not connect") as caught:
        _load(weights, dirs)
    assert caught.value.__cause__.kind == "unreachable"
    assert "connect to the internet" in str(caught.value) and pretrained.MIRROR_ENV in str(caught.value)
    _nothing_left(dirs[1])


def test_the_pinned_revision_is_tried_first_then_the_branch(weights, dirs, server, monkeypatch):
    path, _ = weights
    data = json.loads(path.read_text())
    data["checkpoints"]["tiny"]["revision"] = "a" * 40
    pinned = path.with_name("pinned.json")
    pinned.write_text(json.dumps(data))
    assert pretrained.sources("tiny", pinned) == [
        f"https://raw.githubusercontent.com/o/r/{'a' * 40}/checkpoints/tiny.pt",
        "https://raw.githubusercontent.com/o/r/main/checkpoints/tiny.pt"]
    assert pretrained.sources("tiny", path) == ["https://raw.githubusercontent.com/o/r/main/checkpoints/tiny.pt"]
    # a 404 at the pinned commit (history rewritten) or other weights there: the next source is tried
    _serve_from(monkeypatch, f"{server}/missing", f"{server}/altered", f"{server}/ok")
    assert _load(weights, dirs).read_bytes() == weights[1]


def test_the_mirror_override_replaces_the_source(weights, dirs, server, monkeypatch, tmp_path):
    monkeypatch.setenv(pretrained.MIRROR_ENV, f"{server}/ok/")
    assert pretrained.sources("tiny", weights[0]) == [f"{server}/ok/tiny.pt"]
    assert _load(weights, dirs).read_bytes() == weights[1]
    # a local folder works too (a copy of the repository's checkpoints/ folder)
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "tiny.pt").write_bytes(weights[1])
    monkeypatch.setenv(pretrained.MIRROR_ENV, str(folder))
    (dirs[1] / "tiny.pt").unlink()
    assert _load(weights, dirs).read_bytes() == weights[1]
    (dirs[1] / "tiny.pt").unlink()
    (folder / "tiny.pt").unlink()
    with pytest.raises(pretrained.CheckpointError, match="no such file"):
        _load(weights, dirs)


def test_a_stale_cached_file_is_replaced(weights, dirs, server, monkeypatch):
    _serve_from(monkeypatch, f"{server}/ok")
    dirs[1].mkdir(parents=True)
    (dirs[1] / "tiny.pt").write_bytes(b"weights of another course_lib version")
    assert _load(weights, dirs).read_bytes() == weights[1]


def test_a_failed_download_keeps_the_old_cached_file_and_says_so(weights, dirs, server, monkeypatch):
    _serve_from(monkeypatch, f"{server}/missing")
    dirs[1].mkdir(parents=True)
    (dirs[1] / "tiny.pt").write_bytes(b"old")
    with pytest.raises(pretrained.CheckpointError, match="holds other weights"):
        _load(weights, dirs)
    assert (dirs[1] / "tiny.pt").read_bytes() == b"old"


def test_messages_for_a_pip_install_do_not_point_into_site_packages(weights, dirs, server, monkeypatch):
    monkeypatch.setattr(pretrained, "in_checkout", lambda: False)
    _serve_from(monkeypatch, f"{server}/missing")
    path, _ = weights
    with pytest.raises(pretrained.CheckpointError) as caught:
        pretrained.locate("tiny", path=path, cache_dir=dirs[1], timeout=TIMEOUT)
    text = str(caught.value)
    assert "clone the course repository" in text and str(dirs[1]) in text
    assert "site-packages" not in text and str(pretrained.CHECKPOINTS) not in text
    with pytest.raises(pretrained.CheckpointError, match="download=False") as caught:
        pretrained.locate("tiny", path=path, cache_dir=dirs[1], download=False)
    assert str(pretrained.CHECKPOINTS) not in str(caught.value)


def test_messages_in_a_checkout_name_the_script(weights, dirs, server, monkeypatch):
    monkeypatch.setattr(pretrained, "in_checkout", lambda: True)
    _serve_from(monkeypatch, f"{server}/missing")
    with pytest.raises(pretrained.CheckpointError, match=r"`python scripts/train_checkpoint.py tiny`\."):
        _load(weights, dirs)


def test_fetch_with_a_progress_bar(weights, server, tmp_path, capsys):
    _, data = weights
    target = tmp_path / "x.pt"
    download.fetch(f"{server}/ok/tiny.pt", target, sha256=hashlib.sha256(data).hexdigest(),
                   size=len(data), timeout=TIMEOUT, progress=True)
    assert target.read_bytes() == data
    assert "tiny.pt" in capsys.readouterr().err  # tqdm wrote its bar


def test_this_library_runs_from_a_checkout():
    assert pretrained.in_checkout()  # the test suite runs in the repository
