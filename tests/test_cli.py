"""The command line: ``httpx-resilience`` without a command, and ``get URL``.

``main()`` runs its own event loop, so these tests are synchronous; the
fault server runs in a thread of its own (an anyio blocking portal) and the
command runs on asyncio or trio through ``--backend``.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import anyio.from_thread
import httpx
import pytest

from httpx_resilience import RetryEvent, RetryHistory, __version__, _retry
from httpx_resilience.cli import main
from httpx_resilience.cli._probe import attempts_made, parse_header
from httpx_resilience.testing import FaultPlan, FaultServer, Refuse, Respond, Stall

from .fakes import FakeSleep

BACKENDS = ["asyncio", "trio"]


@contextmanager
def serving(plan: FaultPlan | None = None, **options: object) -> Iterator[FaultServer]:
    """A fault server on its own event loop in a thread; read its records after the block."""
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        # Built on the server's loop: a FaultServer makes its cancel scope at once.
        server = portal.call(lambda: FaultServer(plan, **options))  # type: ignore[arg-type]
        with portal.wrap_async_context_manager(server):
            yield server


def fields(output: str) -> dict[str, str]:
    """The ``name  value`` lines of ``get``'s output."""
    rows = {}
    for line in output.splitlines()[1:]:
        name, _, value = line.strip().partition("  ")
        rows[name] = value.strip()
    return rows


def one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- no command ---------------------------------------------------------------


def test_without_a_command_prints_the_version_and_the_layers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"httpx-resilience {__version__}\n")
    for name in ("RequestIdTransport", "RetryTransport", "TracingTransport", "HTTPTransport"):
        assert name in out
    assert "httpx-resilience demo" in out


def test_version_and_help_return_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"httpx-resilience {__version__}"
    assert main(["get", "--help"]) == 0
    assert "--cacert" in capsys.readouterr().out


def test_usage_errors_return_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get"]) == 2
    assert "URL" in capsys.readouterr().err
    assert main(["get", "-H", "no colon", "https://example.com"]) == 2
    assert "not a header" in capsys.readouterr().err
    assert main(["get", "--retries", "-1", "https://example.com"]) == 2
    assert main(["get", "--insecure", "--cacert", "x.pem", "https://example.com"]) == 2


def test_an_unknown_option_shows_the_usage_of_its_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["get", "--bogus", "https://example.com/"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: httpx-resilience get ")
    assert err.endswith("httpx-resilience get: error: unrecognized arguments: --bogus\n")
    assert main(["--bogus"]) == 2
    assert capsys.readouterr().err.endswith(
        "httpx-resilience: error: unrecognized arguments: --bogus\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fault-server", "--port", "99999"], "--port: must be from 0 to 65535, got 99999"),
        (["fault-server", "--port", "-1"], "--port: must be from 0 to 65535, got -1"),
        (["fault-server", "--seed", "1.5"], "--seed: not a whole number: '1.5'"),
        (["fault-server", "--goaway-every", "0"], "--goaway-every: must be at least 1, got 0"),
        (["fault-server", "--max-lifetime", "nan"], "--max-lifetime: must be more than 0"),
        (["demo", "--requests", "10000000"], "--requests: must be from 1 to 100000"),
        (["demo", "--concurrency", "0"], "--concurrency: must be from 1 to 10000, got 0"),
        (["demo", "--seed", "x"], "--seed: not a whole number: 'x'"),
        (["get", "--retries", "two", "https://example.com/"], "--retries: not a whole number"),
        (["get", "--timeout", "0", "https://example.com/"], "--timeout: must be more than 0"),
    ],
)
def test_numeric_options_are_checked_before_anything_runs(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: httpx-resilience {argv[0]} ")
    assert f"httpx-resilience {argv[0]}: error: argument {message}" in err


# -- get against the fault server ---------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_get_over_http2_shows_attempts_and_why(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = FaultPlan(routes={"/flaky": [Respond(503, retry_after=1), Refuse(), Respond()]})
    sleep = FakeSleep()
    with serving(plan) as server:
        code = main(
            ["get", "--backend", backend, "--cacert", str(server.ca_path), f"{server.url}/flaky"],
            sleep=sleep,
        )
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    rows = fields(out)
    assert out.splitlines()[0] == f"GET {server.url}/flaky"
    assert rows["status"] == "200 OK"
    assert rows["http"] == "HTTP/2"
    assert rows["attempts"] == (
        "3: 503 (waited 1.00 s), REFUSED_STREAM (never processed: re-sent at once), then 200"
    )
    assert sleep.calls == [1.0]  # Retry-After: 1 beats the policy's first backoff
    records = server.received
    assert [(r.method, r.path, r.processed, r.status) for r in records] == [
        ("GET", "/flaky", True, 503),
        ("GET", "/flaky", False, None),
        ("GET", "/flaky", True, 200),
    ]
    assert {r.request_id for r in records} == {rows["request id"]}
    assert rows["timings"].startswith("dns -  connect ")  # an IP address: no lookup
    assert "tls " in rows["timings"]
    assert rows["timings"].endswith("(reused connection)")
    assert rows["body"].endswith("application/json")


@pytest.mark.parametrize("backend", BACKENDS)
def test_get_over_http1_with_json_output_and_headers(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refuse() on HTTP/1.1 is a TCP reset: a ReadError, re-sent after a wait (GET).
    plan = FaultPlan(routes={"/flaky": [Refuse(), Respond(201)]})
    sleep = FakeSleep()
    with serving(plan) as server:
        argv = ["get", "--backend", backend, "--http1", "--json", "--retries", "1"]
        argv += ["--cacert", str(server.ca_path), "-H", "X-Tenant: blue", "-H", "Accept: */*"]
        code = main([*argv, f"{server.url}/flaky?q=1"], sleep=sleep)
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result["status"] == 201
    assert result["http_version"] == "HTTP/1.1"
    assert result["attempts"] == 2
    [retry] = result["retries"]
    assert retry["reason"] == "ReadError"
    assert retry["attempt"] == 1
    assert retry["unprocessed"] is False
    assert sleep.calls == [retry["wait"]]
    records = server.received
    assert len(records) == result["attempts"]
    assert {r.http_version for r in records} == {"1.1"}
    assert {r.request_id for r in records} == {result["request_id"]}
    assert all(r.headers["x-tenant"] == "blue" for r in records)
    assert records[-1].query == "q=1"
    timings = result["timings"]
    assert timings["connection_reused"] is False  # the reset connection is gone
    assert timings["tls"] > 0
    assert timings["total"] >= timings["wait"]


def test_get_through_localhost_times_the_lookup(capsys: pytest.CaptureFixture[str]) -> None:
    looked_up: list[str] = []

    async def resolver(host: str) -> list[str]:
        looked_up.append(host)
        return ["127.0.0.1"]

    with serving() as server:
        url = f"https://localhost:{server.port}/x"
        code = main(["get", "--json", "--cacert", str(server.ca_path), url], resolver=resolver)
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert looked_up == ["localhost"]
    assert result["timings"]["dns"] >= 0
    assert result["attempts"] == 1
    assert result["retries"] == []


def test_an_error_status_exits_one(capsys: pytest.CaptureFixture[str]) -> None:
    with serving(FaultPlan(default=Respond(404))) as server:
        code = main(["get", "--cacert", str(server.ca_path), f"{server.url}/missing"])
    out, err = capsys.readouterr()
    assert code == 1
    assert err == ""
    assert fields(out)["status"] == "404 Not Found"
    assert fields(out)["attempts"] == "1 (no retries)"


# -- errors: one line on stderr, an exit code, never a traceback --------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_closed_port(backend: str, closed_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    sleep = FakeSleep()
    code = main(["get", "--backend", backend, f"http://127.0.0.1:{closed_port}/"], sleep=sleep)
    out, err = capsys.readouterr()
    assert (code, out) == (3, "")
    assert one_line_error(err) == (
        f"httpx-resilience get: connection refused by 127.0.0.1:{closed_port}: "
        "nothing listens there (3 attempts)"
    )
    assert len(sleep.calls) == 2  # ConnectError is re-sent for every method


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_host(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    async def resolver(host: str) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    code = main(
        ["get", "--backend", backend, "--retries", "0", "https://no-such-host.test/"],
        resolver=resolver,
    )
    out, err = capsys.readouterr()
    assert (code, out) == (3, "")
    assert one_line_error(err) == (
        "httpx-resilience get: cannot resolve host 'no-such-host.test': Name or service not known"
    )


def test_unknown_host_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    async def resolver(host: str) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    code = main(["get", "--json", "--retries", "0", "https://nope.test/"], resolver=resolver)
    out, err = capsys.readouterr()
    assert code == 3
    assert json.loads(out)["error"]["kind"] == "dns"
    assert "cannot resolve host 'nope.test'" in one_line_error(err)


def test_untrusted_certificate(capsys: pytest.CaptureFixture[str]) -> None:
    with serving() as server:
        code = main(["get", "--retries", "0", f"{server.url}/x"])
    err = one_line_error(capsys.readouterr().err)
    assert code == 3
    assert err.startswith(f"httpx-resilience get: TLS certificate of 127.0.0.1:{server.port} ")
    assert "not trusted" in err
    assert err.endswith("pass --cacert FILE (or --insecure)")


def test_insecure_skips_the_certificate_check(capsys: pytest.CaptureFixture[str]) -> None:
    with serving() as server:
        code = main(["get", "--insecure", f"{server.url}/x"])
    assert code == 0
    assert fields(capsys.readouterr().out)["status"] == "200 OK"


def test_attempts_come_from_the_retry_layers_note_on_every_python(
    closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python 3.10 has no ``add_note``: the retry layer sets ``__notes__`` itself (PEP 678)."""

    class NoAddNote(httpx.ConnectError):
        add_note = None  # what 3.10's exceptions lack

    error = NoAddNote("refused")
    events = (RetryEvent(1, "ConnectError", 0.5), RetryEvent(2, "ConnectError", 1.0))
    _retry._add_note(error, RetryHistory(3, events))
    assert error.__notes__ == [
        "httpx-resilience: gave up after 3 attempts (retried after: ConnectError, ConnectError)"
    ]
    assert attempts_made(error) == 3
    code = main(["get", f"http://127.0.0.1:{closed_port}/"], sleep=FakeSleep())
    assert code == 3
    err = one_line_error(capsys.readouterr().err)
    assert err.endswith("nothing listens there (3 attempts)")


def test_ctrl_c_as_asyncio_delivers_it_on_python_3_10(capsys: pytest.CaptureFixture[str]) -> None:
    """asyncio on 3.10 makes Ctrl-C a cancelled main task: a CancelledError out of the loop."""

    async def interrupted(seconds: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)

    with serving(FaultPlan(default=Respond(503, retry_after=1)), tls=False) as server:
        code = main(["get", f"{server.url}/x"], sleep=interrupted)
    assert code == 130
    assert capsys.readouterr().err == "httpx-resilience get: interrupted\n"


def test_read_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    with serving(FaultPlan(default=Stall(5))) as server:
        argv = ["get", "--timeout", "0.2", "--retries", "0", "--cacert", str(server.ca_path)]
        code = main([*argv, f"{server.url}/slow"])
    err = one_line_error(capsys.readouterr().err)
    assert code == 3
    assert err == (
        f"httpx-resilience get: timed out waiting for the response of 127.0.0.1:{server.port} "
        "after 0.2 s"
    )


def test_timeouts_after_retries_say_how_long_it_took_in_all(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sleep = FakeSleep()
    with serving(FaultPlan(default=Stall(5)), tls=False) as server:
        code = main(["get", "--timeout", "0.1", f"{server.url}/slow"], sleep=sleep)
    err = one_line_error(capsys.readouterr().err)
    assert code == 3
    prefix = (
        f"httpx-resilience get: timed out waiting for the response of 127.0.0.1:{server.port} "
        "after 0.1 s (--timeout, per attempt); 3 attempts, "
    )
    assert err.startswith(prefix), err
    assert err.endswith(" s in all")
    # Three read timeouts of 0.1 s; the waits between them were faked away.
    assert float(err.removeprefix(prefix).removesuffix(" s in all")) >= 0.3
    assert len(sleep.calls) == 2


@pytest.mark.parametrize(
    ("url", "guess"),
    [
        ("example.com", "https://example.com"),
        ("example.com/path?q=1", "https://example.com/path?q=1"),
        ("localhost:8443/x", "https://localhost:8443/x"),
        ("127.0.0.1:8000", "https://127.0.0.1:8000"),
        ("//example.com/x", "https://example.com/x"),
    ],
)
def test_a_url_without_a_scheme_gets_a_suggestion(
    url: str, guess: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["get", url]) == 2
    assert one_line_error(capsys.readouterr().err) == (
        f"httpx-resilience get: invalid URL {url!r}: no http:// or https://; did you mean {guess}?"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/", "the scheme must be http or https, not 'ftp://'"),
        ("mailto:me@example.com", "the scheme must be http or https, not 'mailto://'"),
        ("https:///path", "no host name"),
        ("http://[::1/", "Invalid port"),
    ],
)
def test_bad_urls(url: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", url]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert err.startswith(f"httpx-resilience get: invalid URL {url!r}: ")
    assert message in err


def test_a_missing_ca_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", "--cacert", "/nonexistent/ca.pem", "https://example.com/"]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert err == (
        "httpx-resilience get: cannot use --cacert /nonexistent/ca.pem: No such file or directory"
    )


@pytest.mark.parametrize(
    ("text", "header"),
    [("X-A: 1", ("X-A", "1")), ("X-A:1", ("X-A", "1")), ("X-Empty:", ("X-Empty", ""))],
)
def test_parse_header(text: str, header: tuple[str, str]) -> None:
    assert parse_header(text) == header


@pytest.mark.parametrize("text", ["nocolon", ": value", "Two Words: x"])
def test_parse_header_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a header"):
        parse_header(text)
