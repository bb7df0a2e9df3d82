"""A local stand-in for the Hugging Face hub: what ``hf_hub_download`` asks of it, answered
the way the hub answers, on 127.0.0.1 and a free port. No other traffic.

``HEAD`` and ``GET`` on ``/{repo_id}/resolve/{revision}/{filename}``: 200 with
``X-Repo-Commit``, ``ETag`` (the sha256 of the file, as the hub gives for LFS files),
``Content-Length`` and ``Accept-Ranges``; a ``Range: bytes=N-`` request gets 206 and
``Content-Range``; a file the repo lacks is 404 with ``X-Error-Code: EntryNotFound``; an
unknown repo is 401 with ``X-Error-Code: RepoNotFound`` (the hub hides private repos so).
Every request is counted. A file can be cut short (the announced length, then only the
first ``cut`` bytes and a closed connection, on every try) or served corrupt (same
length, different bytes)."""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_RESOLVE = re.compile(r"^/(?P<repo>.+?)/resolve/(?P<revision>[^/]+)/(?P<filename>[^?]+)")


@dataclass
class Hub:
    """Files by (repo id, filename); ``requests``: (method, path) of every request seen."""

    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    cut: dict[tuple[str, str], int] = field(default_factory=dict)  # bytes sent before the connection drops
    corrupt: set[tuple[str, str]] = field(default_factory=set)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def seen(self, method: str | None = None) -> list[tuple[str, str]]:
        with self._lock:
            return [r for r in self.requests if method is None or r[0] == method]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            with hub._lock:
                hub.requests.append((self.command, self.path))
            m = _RESOLVE.match(self.path)
            if m is None:
                return self._error(404, "RepoNotFound", "Not found")
            key = (m["repo"], m["filename"])
            if not any(repo == key[0] for repo, _ in hub.files):
                return self._error(401, "RepoNotFound", "Repository not found")
            if key not in hub.files:
                return self._error(404, "EntryNotFound", "Entry not found")
            data = hub.files[key]
            start = 0
            ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if ranged:
                start = min(int(ranged[1]), len(data))
            self.send_response(206 if ranged else 200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data) - start))
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            payload = data[start:]
            if key in hub.corrupt:
                payload = bytes(b ^ 0xFF for b in payload[:64]) + payload[64:]
            if key in hub.cut:
                self.wfile.write(payload[:max(0, hub.cut[key] - start)])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

        def _error(self, status: int, code: str, message: str) -> None:
            body = f'{{"error": "{message}"}}'.encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.hub_server ARCH.TAG ...``: serve a random-weight checkpoint of each
    timm model as ``timm/ARCH.TAG``; print the URL, then serve until stopped
    (``deploy/smoke.sh`` builds an image with one model baked in from it)."""
    import argparse

    import timm
    import torch
    from safetensors.torch import save

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("names", nargs="+")
    hub = Hub()
    for name in parser.parse_args(argv).names:
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False)
        hub.files[(f"timm/{name}", "model.safetensors")] = save({k: v.contiguous() for k, v in
                                                                model.state_dict().items()})
    print(hub.url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
