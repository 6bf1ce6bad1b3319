"""A PEP 503 simple index on 127.0.0.1 for tests: project pages list the files given, files are served from
memory, and a file can be served cut short (Content-Length promises more than is sent)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Index:
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # project -> filename -> bytes
    truncate: set[str] = field(default_factory=set)  # filenames sent cut short
    hits: list[str] = field(default_factory=list)  # request paths, in order
    url: str = ""

    def add(self, project: str, filename: str, data: bytes = b"x") -> None:
        self.files.setdefault(project, {})[filename] = data


def _handler(index: Index) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            index.hits.append(self.path)
            parts = [p for p in self.path.split("/") if p]
            if len(parts) == 2 and parts[0] == "simple" and parts[1] in index.files:
                links = "".join(f'<a href="/files/{parts[1]}/{name}#sha256=x">{name}</a>\n'
                                for name in index.files[parts[1]])
                return self._send(200, f"<html><body>{links}</body></html>".encode())
            if len(parts) == 3 and parts[0] == "files" and parts[2] in index.files.get(parts[1], {}):
                data = index.files[parts[1]][parts[2]]
                if parts[2] in index.truncate:
                    return self._send(200, data[: len(data) // 2], length=len(data))
                return self._send(200, data)
            return self._send(404, b"not found")

        def _send(self, code: int, body: bytes, length: int | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

    return Handler


@contextmanager
def serve_index(index: Index | None = None) -> Iterator[Index]:
    """Serve `index` on a free port of 127.0.0.1; `index.url` is its simple index URL."""
    index = index or Index()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(index))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    index.url = f"http://127.0.0.1:{server.server_address[1]}/simple"
    try:
        yield index
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
