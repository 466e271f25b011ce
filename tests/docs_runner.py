"""Runs one documentation example, in a process (and network) of its own.

``tests/test_docs.py`` starts ``python -m tests.docs_runner SPEC`` in a new
network namespace (``unshare --net --map-root-user``), where only loopback
exists: whatever host an example names, nothing can leave the machine. Here:

- loopback is brought up, and a Hypercorn server listens on 127.0.0.1:443
  (TLS, HTTP/2 and HTTP/1.1, a certificate for every host name the examples
  use, from a CA that ``SSL_CERT_FILE`` makes trusted) and 127.0.0.1:80
  (plain HTTP/1.1), answering every request with 200 and a small JSON
  object; for an example that uses Redis, a redis-server too, at
  ``REDIS_URL``;
- every host name resolves to 127.0.0.1 (``socket.getaddrinfo``, which the
  library's default resolvers, httpcore and the SDKs all end in);
- the example runs: a ```` ```python ```` block as a module (top-level
  ``await`` allowed, run by ``asyncio.run``), a ```` ```pycon ```` block as a
  doctest, or, as its directive says, as a pytest module or until Ctrl-C.

The directives are described in docs/contributing.md.
"""

from __future__ import annotations

import ast
import asyncio
import atexit
import doctest
import fcntl
import ipaddress
import json
import os
import socket
import struct
import subprocess
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import trustme

from .redis_server import RedisServer
from .servers import ServerThread

LOOPBACK = "127.0.0.1"

Scope = MutableMapping[str, Any]


def loopback_up() -> None:
    """Bring up ``lo``, which a new network namespace starts with down."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def resolve_everything_to_loopback() -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None:
            try:
                ipaddress.ip_address(name)
            except ValueError:
                host = LOOPBACK
        return real(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


class DocsApp:
    """Answers every request with 200 and what it was, as JSON."""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": f"{message['type']}.complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        body = json.dumps(
            {
                "method": scope["method"],
                "path": scope["path"],
                "http_version": scope["http_version"],
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def run_module(blocks: list[dict[str, Any]]) -> None:
    """Run python blocks as one module: each keeps its own file and line numbers."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    body: list[ast.stmt] = []
    for block in blocks:
        tree = ast.parse(block["code"], block["path"])
        ast.increment_lineno(tree, block["line"] - 1)
        body.extend(tree.body)
    code = compile(
        ast.Module(body=body, type_ignores=[]),
        blocks[-1]["path"],
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
    )
    result = eval(code, namespace)
    if result is not None:
        asyncio.run(result)


def run_doctest(block: dict[str, Any]) -> int:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(
        block["code"], {"__name__": "__main__"}, block["path"], block["path"], block["line"] - 1
    )
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    return 1 if runner.failures else 0


def run_pytest(block: dict[str, Any]) -> int:
    # A process of its own, as a user runs it: plugins load before anything is imported.
    module = Path("test_example.py")
    module.write_text(block["code"])
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)]
    return subprocess.run(command, check=False).returncode


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    loopback_up()
    ca = trustme.CA.from_pem(Path(spec["ca_cert"]).read_bytes(), Path(spec["ca_key"]).read_bytes())
    resolve_everything_to_loopback()
    server = ServerThread(
        DocsApp(),  # type: ignore[arg-type]
        ca=ca,
        identities=spec["identities"],
        tls_port=443,
        http_port=80,
    )
    # Never stopped: the process ends with the example, and a stop would wait
    # for the TLS goodbyes of clients the example left open, as users do.
    server.start()
    if spec["redis"] is not None:
        # The fleet examples use the Redis at REDIS_URL, as their page says.
        redis = RedisServer(spec["redis"])
        redis.start()
        atexit.register(redis.stop)
        os.environ["REDIS_URL"] = redis.url
    blocks = spec["blocks"]
    if spec["mode"] == "pytest":
        return run_pytest(blocks[-1])
    if blocks[-1]["lang"] == "pycon":
        return run_doctest(blocks[-1])
    run_module(blocks)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
