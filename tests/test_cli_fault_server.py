"""``httpx-resilience fault-server``: the plan syntax, and the server from the command line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Any

import anyio
import httpx
import pytest

from httpx_resilience.cli import main
from httpx_resilience.cli._main import (
    SCENARIOS,
    build_plan,
    describe_plan,
    format_outcome,
    format_route,
    parse_outcome,
    parse_route,
)
from httpx_resilience.testing import (
    Delay,
    FaultServer,
    GoAway,
    InOrder,
    Refuse,
    Reset,
    ResetMidBody,
    Respond,
    SlowBody,
    Stall,
    Weighted,
)

from .fakes import FakeSleep


@pytest.mark.parametrize(
    ("text", "outcome"),
    [
        ("200", Respond()),
        ("503(retry-after=1)", Respond(503, retry_after=1)),
        ("503(retry_after=Wed, 21 Oct 2026 07:28:00 GMT)", None),  # a comma: see below
        ("201(body=done)", Respond(201, body=b"done")),
        ("respond(404)", Respond(404)),
        ("delay(0.5)", Delay(0.5)),
        ("delay(0.5,then=503)", Delay(0.5, then=Respond(503))),
        ("delay(2, then=503(retry-after=3))", Delay(2, then=Respond(503, retry_after=3))),
        ("slow(chunks=20,interval=0.1)", SlowBody(chunks=20, interval=0.1)),
        ("slow-body(5,100)", SlowBody(chunks=5, chunk_size=100)),
        ("reset", Reset()),
        ("reset(stream)", Reset(scope="stream")),
        ("reset-mid-body(after=10,size=100)", ResetMidBody(after=10, size=100)),
        ("stall(2.5)", Stall(2.5)),
        ("goaway", GoAway()),
        ("goaway(then=503,coalesce=true)", GoAway(then=Respond(503), coalesce=True)),
        ("GOAWAY(last-stream-id=0)", GoAway(last_stream_id=0)),
        ("refuse", Refuse()),
        ("refuse()", Refuse()),
    ],
)
def test_parse_outcome(text: str, outcome: Any) -> None:
    if outcome is None:
        with pytest.raises(ValueError, match="retry"):
            parse_outcome(text)
        return
    assert parse_outcome(text) == outcome
    # What format_outcome writes reads back the same.
    assert parse_outcome(format_outcome(outcome)) == outcome


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("teapot", "unknown outcome 'teapot'"),
        ("99", "status must be from 200 to 599"),
        ("delay", "missing 1 required positional argument: 'seconds'"),
        ("delay(-1)", "must be >= 0"),
        ("delay(soon)", "could not convert"),
        ("delay(1,then=refuse)", "then= takes a status"),
        ("reset(sideways)", "scope is connection or stream"),
        ("stall(1,2)", "stall takes at most 1 arguments"),
        ("stall(minutes=1)", "stall has no 'minutes'"),
        ("slow(chunks=1,2)", "a positional argument after key=value"),
        ("slow(chunks=1,chunks=2)", "'chunks' given twice"),
        ("goaway(coalesce=maybe)", "not true or false"),
        ("delay(1", "arguments go in parentheses"),
        # Values the server could not send, or would send as invalid HTTP.
        ("503(retry-after=abc)", "Respond.retry_after must be seconds .* or an HTTP-date"),
        ("503(retry-after=-1)", "Respond.retry_after must be seconds"),
        ("503(retry-after=1.5)", "Respond.retry_after must be seconds"),
        ("delay(nan)", "Delay.seconds must be >= 0, got nan"),
        ("slow(interval=nan)", "SlowBody.interval must be >= 0"),
        ("slow(status=99)", "SlowBody.status must be from 200 to 599"),
        ("goaway(error-code=4294967296)", "GoAway.error_code must be from 0 to 2\\*\\*32-1"),
    ],
)
def test_parse_outcome_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_outcome(text)


def test_parse_route() -> None:
    assert parse_route("/pay=refuse,201") == ("/pay", InOrder(Refuse(), Respond(201)))
    path, route = parse_route("*=9*200, 1*503(retry-after=1)")
    assert path is None
    assert route == Weighted((9, Respond()), (1, Respond(503, retry_after=1)))
    assert parse_route("/d=delay(1,then=503(retry-after=2)),200")[1] == InOrder(
        Delay(1, then=Respond(503, retry_after=2)), Respond()
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("pay=200", "PATH starting with '/' or '\\*'"),
        ("/pay=", "an empty outcome"),
        ("/pay=200,,201", "an empty outcome"),
        ("/pay=2*200,refuse", "give every outcome a weight"),
        ("/pay=x*200", "not a weight"),
        ("/pay=delay(1))", "unbalanced"),
        ("/pay=-1*200", "'/pay=-1\\*200': weights must be finite and >= 0"),
        ("/pay=inf*200,1*503", "weights must be finite and >= 0, got inf"),
        ("/pay=nan*200", "weights must be finite and >= 0, got nan"),
    ],
)
def test_parse_route_refuses(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_route(spec)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenarios_print_in_the_syntax_they_are_read_in(name: str) -> None:
    plan = build_plan([name], seed=7)
    assert plan.seed == 7
    routes = [line for line in describe_plan(plan) if not line.startswith("--")]
    again = build_plan(routes, seed=7, goaway_every=plan.goaway_every)
    assert describe_plan(again) == describe_plan(plan)
    assert again.routes == plan.routes
    assert again.default == (plan.default or InOrder(Respond()))


def test_routes_go_over_a_scenario() -> None:
    plan = build_plan(["demo", "/orders=refuse", "*=200"], goaway_every=3)
    assert plan.routes["/orders"] == InOrder(Refuse())
    assert plan.default == InOrder(Respond())
    assert plan.goaway_every == 3
    assert build_plan([]).routes == {}
    assert build_plan([]).default is None


def test_format_route() -> None:
    assert format_route(Weighted((3, Respond()), (1, Stall(2)))) == "3*200,1*stall(seconds=2)"
    assert format_route(InOrder(Respond(503, retry_after=1), Reset())) == (
        "503(retry-after=1),reset"
    )


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["nonsense"], "unknown scenario 'nonsense'"),
        (["ok", "chaos"], "one scenario at a time"),
    ],
)
def test_build_plan_refuses(specs: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_plan(specs)


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ("/x=teapot", "unknown outcome 'teapot'"),
        ("/x=503(retry-after=abc)", "Respond.retry_after must be seconds"),
        ("/x=9*200,inf*reset", "weights must be finite"),
    ],
)
def test_a_bad_plan_is_a_one_line_error(
    plan: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fault-server", "--no-tls", "--plan", plan]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("httpx-resilience fault-server: '")  # the part of the plan at fault
    assert message in err


@pytest.mark.anyio
async def test_http1_status_lines_carry_the_standard_reason_phrase() -> None:
    plan = build_plan(["/busy=503(retry-after=1)", "/gone=slow(chunks=1,status=404)", "/odd=599"])
    lines = []
    async with FaultServer(plan, tls=False, http2=False) as server:
        for path in ("/busy", "/gone", "/odd"):
            async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
                await stream.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                head = b""
                while b"\r\n" not in head:
                    head += await stream.receive()
                lines.append(head.partition(b"\r\n")[0])
    assert lines == [
        b"HTTP/1.1 503 Service Unavailable",
        b"HTTP/1.1 404 Not Found",
        b"HTTP/1.1 599 ",  # no standard phrase; RFC 9112 lets it be empty
    ]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_serves_until_max_lifetime(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["fault-server", "--backend", backend, "--max-lifetime", "0.2", "--no-tls"]
    assert main([*argv, "--plan", "/x=503", "--goaway-every", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fault server on http://127.0.0.1:")
    assert "(HTTP/2 and HTTP/1.1)" in out
    assert "CA certificate" not in out
    assert "  /x=503\n  *=200\n  --goaway-every 5\n" in out
    assert out.splitlines()[-1].startswith("stopped after ")
    assert out.splitlines()[-1].endswith("received 0 requests, processed 0")


def test_a_busy_port_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["fault-server", "--port", str(port), "--max-lifetime", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        f"httpx-resilience fault-server: cannot serve on 127.0.0.1 port {port}: "
    )


def test_the_command_line_server_with_the_command_line_probe(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The server in a subprocess, ``get`` against it, then Ctrl-C."""
    command = [sys.executable, "-m", "httpx_resilience", "fault-server", "--max-lifetime", "30"]
    command += ["--plan", "/pay=503(retry-after=1),refuse,201"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        banner = [server.stdout.readline() for _ in range(3)]
        url = banner[0].split()[3]
        cacert = banner[1].removeprefix("CA certificate: ").strip()
        assert url.startswith("https://127.0.0.1:")
        assert os.path.exists(cacert)

        sleep = FakeSleep()
        code = main(["get", "--json", "--cacert", cacert, f"{url}/pay"], sleep=sleep)
        assert code == 0
        result = capsys.readouterr().out
        assert '"status": 201' in result
        assert '"attempts": 3' in result
        with httpx.Client(verify=False) as client:  # another path: the default, 200
            assert client.get(f"{url}/other").status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=10)
    assert server.returncode == 0, err
    assert err == ""
    last = out.splitlines()[-1]
    assert "received 4 requests, processed 3" in last
    assert "503(retry-after=1) x1, refuse x1, 201 x1, 200 x1" in last
    assert not os.path.exists(cacert)  # removed when the server stopped
