"""A real HTTP file server on 127.0.0.1 for download tests: Range requests, request log,
and faults on demand (a connection cut after N bytes, an error status, a dead host)."""

from __future__ import annotations

import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class FileServer:
    """Serve the files under `root` at `url`; use as a context manager.

    `cut_after[path] = n` makes the next response for `path` stop after n body bytes and close
    the connection (once); `status[path] = code` answers that path with an error. Every GET is
    logged in `requests` as (path, Range header or None); `sent[path]` counts body bytes sent.
    """

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.cut_after: dict[str, int] = {}
        self.status: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.sent: dict[str, int] = {}
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FileServer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def dead_url(path: str = "file") -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path}"


def _handler(server: FileServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = unquote(urlparse(self.path).path).lstrip("/")
            header = self.headers.get("Range")
            with server.lock:
                server.requests.append((path, header))
                status = server.status.get(path)
                cut = server.cut_after.pop(path, None)
            file = (server.root / path).resolve()
            if status is not None or not file.is_file() or server.root not in file.parents:
                self.send_error(status or 404)
                return
            data = file.read_bytes()
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", header or "")
            if match:
                start = int(match.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if cut is not None:
                body = body[:cut]
                self.close_connection = True
            self.wfile.write(body)
            with server.lock:
                server.sent[path] = server.sent.get(path, 0) + len(body)

    return Handler
