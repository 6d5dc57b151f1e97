"""Downloads of weights URLs: https only, into the cache at a path from a hash of the whole URL,
logged first, verified, never partial; offline is one clear line. No test touches the network:
`_open_url` is replaced, or a server on 127.0.0.1 answers."""
import hashlib
import http.server
import io
import logging
import os
import pickle
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from torch import nn

from d2mask.checkpoint import DetectionCheckpointer
from d2mask.engine import USER_ERRORS
from d2mask.utils import download
from d2mask.utils.download import DownloadError, cache_path, get_local_path
from d2mask.utils.file_io import PathManager


class _Server:
    """Replaces `_open_url`: answers each URL with `content[url]`, records the URLs asked for, and
    the log lines written before the first request."""

    def __init__(self, monkeypatch, caplog, content):
        self.content, self.asked, self.logged_before = content, [], None
        self._caplog = caplog
        monkeypatch.setattr(download, "_open_url", self._open)

    def _open(self, url):
        if self.logged_before is None:
            self.logged_before = self._caplog.text
        self.asked.append(url)
        answer = self.content[url]
        if isinstance(answer, Exception):
            raise answer
        return io.BytesIO(answer)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("D2MASK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _files(folder):
    return sorted(os.path.relpath(os.path.join(root, n), folder) for root, _, names in os.walk(folder) for n in names)


def test_a_local_path_is_returned_as_it_is_and_nothing_is_fetched(cache, monkeypatch, caplog):
    server = _Server(monkeypatch, caplog, {})
    assert get_local_path("weights/model.pth") == "weights/model.pth"
    assert server.asked == [] and not cache.exists()


def test_a_url_is_downloaded_once_after_a_logged_line(cache, monkeypatch, caplog):
    url = "https://example.org/models/model_final.pkl"
    server = _Server(monkeypatch, caplog, {url: b"weights"})
    with caplog.at_level(logging.INFO, logger="d2mask.utils.download"):
        local = get_local_path(url)
        assert get_local_path(url) == local
    assert server.asked == [url]
    assert f"Downloading {url}" in server.logged_before
    assert open(local, "rb").read() == b"weights" and local.endswith("model_final.pkl")
    assert os.path.dirname(os.path.dirname(local)) == str(cache / "downloads")


def test_no_url_can_name_a_path_outside_the_cache_or_share_another_hosts_file(cache, monkeypatch, caplog):
    # iopath's cache path for such URLs was its cache directory + the URL's path, `..` included
    escaping = [
        "https://evil.example/../../../../../../tmp/planted.pth",
        "https://evil.example/a/%2e%2e/%2e%2e/%2e%2e/planted.pth",
        "https://evil.example/..",
    ]
    same_path = ["https://good.example/R-50.pkl", "https://evil.example/R-50.pkl"]
    server = _Server(monkeypatch, caplog, {u: u.encode() for u in escaping + same_path})
    for url in escaping + same_path:
        local = get_local_path(url)
        assert os.path.realpath(local).startswith(str(cache / "downloads") + os.sep)
        assert open(local, "rb").read() == url.encode()  # each URL its own file: no cache poisoning
    assert len(_files(cache)) == len(server.asked) == 5


def test_detectron2_paths_go_to_detectron2s_host_only(cache, monkeypatch, caplog):
    url = "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl"
    server = _Server(monkeypatch, caplog, {url: b"r50"})
    assert PathManager.get_local_path("detectron2://ImageNetPretrained/MSRA/R-50.pkl") == cache_path(url)
    assert server.asked == [url]


@pytest.mark.parametrize("url", ["http://example.org/model.pkl", "ftp://example.org/model.pkl", "file:///etc/passwd"])
def test_only_https_is_fetched(cache, monkeypatch, caplog, url):
    server = _Server(monkeypatch, caplog, {})
    with pytest.raises(DownloadError, match="downloads https:// URLs only"):
        get_local_path(url)
    if url.startswith(("http:", "ftp:")):
        with pytest.raises(DownloadError):
            PathManager.get_local_path(url)
    assert server.asked == [] and not cache.exists()


def test_offline_is_one_clear_line_and_leaves_nothing(cache, monkeypatch, caplog):
    url = "https://dl.fbaipublicfiles.com/detectron2/x/model_final_f10217.pkl"
    _Server(monkeypatch, caplog, {url: urllib.error.URLError(OSError(101, "Network is unreachable"))})
    with pytest.raises(DownloadError) as info:
        DetectionCheckpointer(nn.Linear(2, 2)).load("detectron2://x/model_final_f10217.pkl")
    message = str(info.value)
    assert message.startswith(f"Cannot download {url} (URLError: [Errno 101] Network is unreachable)")
    assert "MODEL.WEIGHTS /path/to/model_final_f10217.pkl" in message and "\n" not in message
    assert isinstance(info.value, USER_ERRORS)
    assert _files(cache) == []


def test_a_checksum_mismatch_keeps_nothing_and_a_match_is_cached(cache, monkeypatch, caplog):
    url = "https://example.org/model.pth"
    server = _Server(monkeypatch, caplog, {url: b"tampered"})
    with pytest.raises(DownloadError, match="not the expected"):
        get_local_path(url, sha256=hashlib.sha256(b"genuine").hexdigest())
    assert not os.path.exists(cache_path(url)) and _files(cache) == []
    server.content[url] = b"genuine"
    assert open(get_local_path(url, sha256=hashlib.sha256(b"genuine").hexdigest()), "rb").read() == b"genuine"
    with pytest.raises(DownloadError, match="delete it to download it again"):
        get_local_path(url, sha256=hashlib.sha256(b"other").hexdigest())


def test_a_download_larger_than_any_weights_file_is_stopped(cache, monkeypatch, caplog):
    monkeypatch.setattr(download, "MAX_DOWNLOAD_BYTES", 10)
    url = "https://example.org/endless.pth"
    _Server(monkeypatch, caplog, {url: b"x" * 11})
    with pytest.raises(DownloadError, match="more than 10 bytes"):
        get_local_path(url)
    assert _files(cache) == []


def test_weights_from_a_url_load_into_the_model(cache, monkeypatch, caplog):
    model = nn.Linear(2, 1)
    weights = {"weight": np.array([[1.0, 2.0]], dtype=np.float32), "bias": np.array([3.0], dtype=np.float32)}
    url = "https://example.org/linear.pkl"
    _Server(monkeypatch, caplog, {url: pickle.dumps({"model": weights, "__author__": "test"})})
    DetectionCheckpointer(model).load(url)
    assert model.weight.tolist() == [[1.0, 2.0]] and model.bias.tolist() == [3.0]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/file")
            self.end_headers()
        else:
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"bytes")

    def log_message(self, *args):
        pass


def test_the_real_fetch_streams_to_the_file_and_follows_no_redirect_away_from_https(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        download._download(f"{base}/file", str(tmp_path / "file"), sha256=None)
        assert (tmp_path / "file").read_bytes() == b"bytes"
        with pytest.raises(DownloadError, match="redirects to http://127.0.0.1.*which is not https"):
            download._download(f"{base}/redirect", str(tmp_path / "redirected"), sha256=None)
        assert not (tmp_path / "redirected").exists()
    finally:
        server.shutdown()
        server.server_close()
