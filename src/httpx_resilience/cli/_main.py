"""The ``httpx-resilience`` command: ``demo``, ``get URL`` and ``fault-server``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import functools
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, cast

import anyio

from .._dns import Resolver
from .._retry import Sleep
from .._version import VERSION
from ..testing._plan import (
    Delay,
    FaultPlan,
    GoAway,
    InOrder,
    Outcome,
    Refuse,
    Reset,
    ResetMidBody,
    Respond,
    Route,
    SlowBody,
    Stall,
    Weighted,
)

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

PROG = "httpx-resilience"

LAYERS = (
    ("RequestIdTransport", "one X-Request-ID per logical request, shared by its attempts"),
    ("IdempotencyKeyTransport", "one Idempotency-Key per POST/PATCH, shared by its attempts"),
    ("RetryTransport", "re-sends what is safe to re-send, Tenacity backoff, Retry-After"),
    ("TracingTransport", "one OpenTelemetry span and duration point per attempt"),
    ("HTTPTransport", "httpx's transport, HTTP/2 on, DNS/connect/TLS timings, GOAWAY guard"),
)

#: Bounds of the demo's workload: a demo, not a load test.
MAX_DEMO_REQUESTS = 100_000
MAX_DEMO_CONCURRENCY = 10_000

COMMANDS = (
    ("demo", "bare httpx and resilient_transport() against a local fault server"),
    ("get URL", "one GET through the stack: status, attempts and why, timings"),
    ("fault-server", "serve a fault plan on 127.0.0.1 until Ctrl-C"),
)


def main(
    argv: Sequence[str] | None = None,
    *,
    resolver: Resolver | None = None,
    sleep: Sleep | None = None,
) -> int:
    """Run the command line; return the exit code.

    ``resolver`` (host name to addresses) and ``sleep`` (the wait between
    attempts) replace the system's for ``get`` and ``demo``: tests pass fakes.
    """
    try:
        return _main(argv, resolver=resolver, sleep=sleep)
    finally:
        # Output a closed pipe did not take would otherwise make the
        # interpreter's own flush at exit print "Exception ignored ...".
        _flush(sys.stdout)
        _flush(sys.stderr)


def _main(argv: Sequence[str] | None, *, resolver: Resolver | None, sleep: Sleep | None) -> int:
    parser = _parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            # argparse reports a subcommand's unknown options with the top
            # level's usage; the subcommand's usage is the one that helps.
            getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 2
    command: Callable[..., int] | None = getattr(args, "run", None)
    if command is None:
        _about()
        return 0
    if args.backend == "trio" and not _installed("trio"):
        _error(args.command, "--backend trio needs trio: pip install trio")
        return 2
    try:
        return command(args, resolver=resolver, sleep=sleep)
    except KeyboardInterrupt:
        _error(args.command, "interrupted")
        return 130
    except ImportError as exc:  # --backend trio without trio, a missing extra
        _error(args.command, f"{exc}")
        return 2


def _about() -> None:
    lines = [f"httpx-resilience {VERSION}", "layers, outermost first:"]
    width = max(len(name) for name, _ in LAYERS)
    lines += [f"  {name:<{width}}  {job}" for name, job in LAYERS]
    lines.append("commands:")
    width = max(len(name) for name, _ in COMMANDS)
    lines += [f"  {PROG} {name:<{width}}  {job}" for name, job in COMMANDS]
    _out("\n".join(lines))


def _error(command: str, message: str) -> None:
    _write(sys.stderr, f"{PROG} {command}: {message}\n")


# -- output -------------------------------------------------------------------
# A reader that goes away (`| head -1`) closes the pipe under stdout, and the
# next write raises BrokenPipeError. That is no error of the command: what is
# left to print is dropped, the command finishes and keeps its exit code.


def _out(text: str) -> None:
    """Print a line (or lines) on stdout now."""
    _write(sys.stdout, text + "\n")


def _write(stream: IO[str] | None, text: str) -> None:
    if stream is None:  # started with the descriptor closed (`>&-`)
        return
    try:
        stream.write(text)
        stream.flush()
    except OSError as exc:
        if not _reader_gone(exc):
            raise
        _discard(stream)


def _flush(stream: IO[str] | None) -> None:
    if stream is None:
        return
    try:
        stream.flush()
    except OSError as exc:
        if not _reader_gone(exc):
            raise
        _discard(stream)
    except ValueError:  # closed by whoever replaced it
        pass


def _reader_gone(exc: OSError) -> bool:
    # EPIPE: the reader closed its end of the pipe; EIO: the terminal hung up.
    return isinstance(exc, BrokenPipeError) or exc.errno == errno.EIO


def _discard(stream: IO[str]) -> None:
    """Send what ``stream`` still holds, and all it is given later, to /dev/null."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a file (a test's capture): each write is caught
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # its parent package is missing
        return False


def _run(function: Callable[[], Any], backend: str) -> Any:
    try:
        return anyio.run(function, backend=backend)
    except BaseException as exc:
        if _interrupted(exc):
            raise KeyboardInterrupt from None
        raise


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C, however the event loop let it out.

    asyncio on Python 3.10 cancels the main task and lets the CancelledError
    out; trio may wrap KeyboardInterrupt in an exception group.
    """
    if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
        return True
    members = getattr(exc, "exceptions", None)
    return (
        isinstance(members, tuple)
        and bool(members)
        and all(isinstance(m, BaseException) and _interrupted(m) for m in members)
    )


def _whole(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number within bounds, refused with a message naming them."""
    if minimum is not None and maximum is not None:
        bounds = f"from {minimum} to {maximum}"
    else:
        bounds = f"at least {minimum}" if minimum is not None else f"at most {maximum}"

    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return whole


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def _header(text: str) -> tuple[str, str]:
    from ._probe import parse_header

    try:
        return parse_header(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    """argparse, with help and usage errors written as the rest of the output is."""

    # Every message of argparse goes through here: help, usage, --version,
    # errors. Python 3.10's own lets BrokenPipeError out.
    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        if message:
            # argparse passes sys.stdout or sys.stderr.
            _write(cast(IO[str], file or sys.stderr), message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Resilience middleware for httpx, built as composable transports.",
        epilog="Without a command: the version and the layers of resilient_transport().",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    backend = _Parser(add_help=False)
    backend.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="the event loop to run on (default: asyncio)",
    )

    demo = commands.add_parser(
        "demo",
        parents=[backend],
        help="bare httpx and resilient_transport() against a local fault server",
        description="Send the same workload of GETs and POSTs, over HTTP/2, through bare "
        "httpx and through resilient_transport(), each against a fault server on 127.0.0.1 "
        "with the same seeded fault plan, and compare. Exits 1 unless the stack answered "
        "every request without any POST processed twice.",
    )
    demo.add_argument(
        "--requests",
        type=_whole(1, MAX_DEMO_REQUESTS),
        default=300,
        metavar="N",
        help=f"1 to {MAX_DEMO_REQUESTS} (default: 300)",
    )
    demo.add_argument(
        "--concurrency",
        type=_whole(1, MAX_DEMO_CONCURRENCY),
        default=150,
        metavar="N",
        help="requests in flight at once (default: 150)",
    )
    demo.add_argument(
        "--seed", type=_whole(), default=1, help="the workload and the fault draws (default: 1)"
    )
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.set_defaults(run=_demo, parser=demo)

    get = commands.add_parser(
        "get",
        parents=[backend],
        help="one GET through the stack: status, attempts and why, timings",
        description="Send one GET through resilient_transport() and show what happened: "
        "status, HTTP version, attempts and why, the request ID and the timings. "
        "Exit codes: 0 a response below 400, 1 a response of 400 or more, "
        "2 a bad command line or URL, 3 no response (DNS, refused, TLS, timeout, ...).",
    )
    get.add_argument("url", metavar="URL")
    get.add_argument("--http1", action="store_true", help="HTTP/1.1 only (default: HTTP/2 too)")
    get.add_argument(
        "--retries",
        type=_whole(0),
        default=2,
        metavar="N",
        help="re-sends after a failed attempt, when safe (default: 2)",
    )
    get.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds for each of connect, read, write and pool (default: 10)",
    )
    get.add_argument(
        "-H",
        "--header",
        type=_header,
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        dest="headers",
        help="a request header; repeat for more",
    )
    tls = get.add_mutually_exclusive_group()
    tls.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    tls.add_argument("--cacert", metavar="FILE", help="trust the CA certificates in this PEM file")
    get.add_argument("--json", action="store_true", help="print the result as JSON")
    get.set_defaults(run=_get, parser=get)

    server = commands.add_parser(
        "fault-server",
        parents=[backend],
        help="serve a fault plan on 127.0.0.1 until Ctrl-C",
        description="Run the fault-injecting server (httpx_resilience.testing.FaultServer) on "
        "127.0.0.1 until Ctrl-C or --max-lifetime. A --plan is a scenario name or a route, "
        "PATH=OUTCOMES; see docs/cli.md.",
        epilog="scenarios: "
        + "; ".join(f"{name}: {text}" for name, (text, _) in SCENARIOS.items())
        + ". Routes: PATH=OUTCOME,OUTCOME,... is served in order (the last repeats), "
        "PATH=W*OUTCOME,W*OUTCOME,... at random with weights W; PATH * is every other path. "
        "Outcomes: 200 (any status), 503(retry-after=1), delay(0.5), delay(0.5,then=503), "
        "slow(chunks=10,interval=0.05), reset, reset(stream), reset-mid-body(after=1024), "
        "stall(30), goaway, refuse.",
    )
    server.add_argument(
        "--port",
        type=_whole(0, 65535),
        default=0,
        help="0 to 65535 (default: 0, an ephemeral port)",
    )
    server.add_argument(
        "--plan",
        action="append",
        default=[],
        metavar="SCENARIO|PATH=OUTCOMES",
        help="a named scenario, or a route; repeat for more routes (default: ok)",
    )
    server.add_argument(
        "--seed", type=_whole(), default=None, help="the seed of random draws (default: 0)"
    )
    server.add_argument(
        "--goaway-every",
        type=_whole(1),
        default=None,
        metavar="N",
        help="end each connection after N requests (GOAWAY, or Connection: close)",
    )
    server.add_argument("--http1", action="store_true", help="do not offer HTTP/2")
    server.add_argument("--no-tls", action="store_true", help="plain HTTP instead of TLS")
    server.add_argument(
        "--max-lifetime",
        type=_seconds,
        default=300.0,
        metavar="S",
        help="stop by itself after S seconds (default: 300)",
    )
    server.set_defaults(run=_fault_server, parser=server)
    return parser


# -- demo ---------------------------------------------------------------------


def _demo(args: argparse.Namespace, *, resolver: Resolver | None, sleep: Sleep | None) -> int:
    from . import _demo as demo

    if not (_installed("opentelemetry.sdk") and _installed("trustme")):
        _error("demo", "the demo needs the demo extra: pip install 'httpx-resilience[demo]'")
        return 2
    options = demo.DemoOptions(
        requests=args.requests, concurrency=args.concurrency, seed=args.seed
    )
    if not args.json:
        _out("\n".join(demo.format_header(options, demo.workload(options))))
    progress = ProgressPrinter(sys.stderr)
    run = functools.partial(demo.run_demo, options, progress=progress, sleep=sleep)
    try:
        result: demo.DemoResult = _run(run, args.backend)
    except ImportError as exc:
        _error("demo", str(exc))
        return 2
    if args.json:
        _out(json.dumps(result.to_json(), indent=2))
    else:
        _out("\n" + "\n".join(demo.format_summary(result)))
    if not result.ok:
        _error(
            "demo",
            "resilient_transport() did not answer every request, or a POST reached the "
            "server twice: please report this with the seed",
        )
        return 1
    return 0


class ProgressPrinter:
    """Progress of the demo: a bar redrawn in place on a terminal, a few lines otherwise."""

    WIDTH = 30

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._started: dict[str, float] = {}
        self._drawn = 0.0

    def __call__(self, client: str, done: int, total: int) -> None:
        from ._demo import LABELS

        now = time.perf_counter()
        start = self._started.setdefault(client, now)
        label = f"{LABELS.get(client, client):<22}"
        finished = done == total
        if self._tty:
            if not finished and now - self._drawn < 0.05:
                return
            self._drawn = now
            filled = self.WIDTH * done // total
            bar = "#" * filled + "." * (self.WIDTH - filled)
            end = f"  {now - start:.1f} s\n" if finished else ""
            _write(self._stream, f"\r{label} [{bar}] {done}/{total}{end}")
        elif finished or done * 4 // total > (done - 1) * 4 // total:
            suffix = f" in {now - start:.1f} s" if finished else ""
            _write(self._stream, f"{label} {done}/{total}{suffix}\n")


# -- get ----------------------------------------------------------------------


def _get(args: argparse.Namespace, *, resolver: Resolver | None, sleep: Sleep | None) -> int:
    from . import _probe as probe

    options = probe.ProbeOptions(
        url=args.url,
        http1=args.http1,
        retries=args.retries,
        timeout=args.timeout,
        headers=tuple(args.headers),
        insecure=args.insecure,
        cacert=args.cacert,
    )
    run = functools.partial(probe.probe, options, resolver=resolver, sleep=sleep)
    try:
        result: probe.ProbeResult = _run(run, args.backend)
    except probe.ProbeError as exc:
        if args.json:
            _out(json.dumps(probe.error_json(options, exc)))
        _error("get", exc.message)
        return exc.exit_code
    if args.json:
        _out(json.dumps(result.to_json(), indent=2))
    else:
        _out("\n".join(probe.format_result(result)))
    return probe.exit_code(result)


# -- fault-server -------------------------------------------------------------


def _ok_plan(seed: int) -> FaultPlan:
    return FaultPlan(seed=seed)


def _demo_plan(seed: int) -> FaultPlan:
    from ._demo import demo_plan

    return demo_plan(seed)


def _flaky_plan(seed: int) -> FaultPlan:
    return FaultPlan(default=Weighted((8, Respond()), (2, Respond(503, retry_after=1))), seed=seed)


def _chaos_plan(seed: int) -> FaultPlan:
    return FaultPlan(
        default=Weighted(
            (60, Respond()),
            (8, Respond(503, retry_after=1)),
            (6, Refuse()),
            (5, Reset()),
            (5, ResetMidBody()),
            (6, Delay(1.0)),
            (6, SlowBody()),
            (4, Stall(10.0)),
        ),
        seed=seed,
        goaway_every=50,
    )


#: Named plans for ``fault-server --plan NAME``: a description and a factory taking the seed.
SCENARIOS: dict[str, tuple[str, Callable[[int], FaultPlan]]] = {
    "ok": ("every request gets 200", _ok_plan),
    "flaky": ("20% 503 with Retry-After: 1", _flaky_plan),
    "chaos": (
        "every fault at random (503, refused, resets, slow, stalls), GOAWAY every 50",
        _chaos_plan,
    ),
    "demo": ("the plan of httpx-resilience demo", _demo_plan),
}


def _fault_server(
    args: argparse.Namespace, *, resolver: Resolver | None, sleep: Sleep | None
) -> int:
    from ..testing import FaultServer, run_fault_server

    if not args.no_tls and not _installed("trustme"):
        _error(
            "fault-server",
            "TLS needs trustme: pip install 'httpx-resilience[demo]', or serve plain HTTP "
            "with --no-tls",
        )
        return 2
    try:
        plan = build_plan(args.plan, seed=args.seed, goaway_every=args.goaway_every)
    except ValueError as exc:
        _error("fault-server", str(exc))
        return 2
    started = time.monotonic()

    def ready(server: FaultServer) -> None:
        _out("\n".join(_ready_lines(server, plan, args.max_lifetime)))

    try:
        records = run_fault_server(
            plan,
            http2=not args.http1,
            tls=not args.no_tls,
            port=args.port,
            max_lifetime=args.max_lifetime,
            on_ready=ready,
            backend=args.backend,
        )
    except OSError as exc:
        _error(
            "fault-server", f"cannot serve on 127.0.0.1 port {args.port}: {exc.strerror or exc}"
        )
        return 1
    except (ImportError, RuntimeError) as exc:
        _error("fault-server", str(exc))
        return 1
    processed = sum(1 for record in records if record.processed)
    outcomes: dict[str, int] = {}
    for record in records:
        name = "ignored after GOAWAY" if record.outcome is None else format_outcome(record.outcome)
        outcomes[name] = outcomes.get(name, 0) + 1
    _out(
        f"stopped after {time.monotonic() - started:.1f} s: received {len(records)} requests, "
        f"processed {processed}"
        + ("" if not outcomes else "; " + ", ".join(f"{k} x{v}" for k, v in outcomes.items()))
    )
    return 0


def _ready_lines(server: Any, plan: FaultPlan, max_lifetime: float) -> list[str]:
    protocols = "HTTP/2 and HTTP/1.1" if server.http2 else "HTTP/1.1"
    lines = [f"fault server on {server.url} ({protocols}{' over TLS' if server.tls else ''})"]
    cacert = ""
    if server.tls:
        lines.append(f"CA certificate: {server.ca_path}")
        cacert = f"--cacert {server.ca_path} "
    lines.append("plan:")
    lines += [f"  {line}" for line in describe_plan(plan)]
    lines += [
        "try:",
        f"  curl {cacert}{server.url}/hello",
        f"  {PROG} get {cacert}{server.url}/hello",
        f"serving until Ctrl-C, or for {max_lifetime:g} s",
    ]
    return lines


def describe_plan(plan: FaultPlan) -> list[str]:
    """The plan in the syntax ``--plan`` takes, one route a line."""
    # FaultPlan keeps every route as InOrder or Weighted.
    routes = cast(Mapping[str, Route], plan.routes)
    lines = [f"{path}={format_route(route)}" for path, route in routes.items()]
    default = cast(Route | None, plan.default)
    lines.append("*=" + ("200" if default is None else format_route(default)))
    if plan.goaway_every is not None:
        lines.append(f"--goaway-every {plan.goaway_every}")
    lines.append(f"--seed {plan.seed}")
    return lines


def build_plan(
    specs: Sequence[str], *, seed: int | None = None, goaway_every: int | None = None
) -> FaultPlan:
    """A plan from ``--plan`` values: at most one scenario name, then routes over it."""
    scenario: str | None = None
    routes: dict[str, Route] = {}
    default: Route | None = None
    for spec in specs:
        if "=" not in spec:
            if spec not in SCENARIOS:
                known = ", ".join(SCENARIOS)
                raise ValueError(
                    f"unknown scenario {spec!r} (known: {known}), or not PATH=OUTCOMES"
                )
            if scenario is not None:
                raise ValueError(f"one scenario at a time: {scenario!r} and {spec!r}")
            scenario = spec
            continue
        path, route = parse_route(spec)
        if path is None:
            default = route
        else:
            routes[path] = route
    base = SCENARIOS[scenario or "ok"][1](0 if seed is None else seed)
    return FaultPlan(
        routes={**base.routes, **routes},
        default=default if default is not None else base.default,
        seed=base.seed,
        goaway_every=goaway_every if goaway_every is not None else base.goaway_every,
    )


def parse_route(spec: str) -> tuple[str | None, Route]:
    """``PATH=OUTCOMES`` as (path, route); the path ``*`` gives ``None``, every other path.

    >>> parse_route("/pay=refuse,201")
    ('/pay', InOrder(outcomes=(Refuse(), Respond(status=201, ...))))
    >>> parse_route("*=9*200,1*503(retry-after=1)")[1]
    Weighted(choices=((9.0, Respond(...)), (1.0, Respond(status=503, ...))))
    """
    path, _, text = spec.partition("=")
    path = path.strip()
    if path != "*" and not path.startswith("/"):
        raise ValueError(f"{spec!r}: a route is PATH=OUTCOMES, PATH starting with '/' or '*'")
    items = _split(text, spec)
    weighted: list[tuple[float, Outcome]] = []
    ordered: list[Outcome] = []
    for item in items:
        weight, star, rest = item.partition("*")
        if star and "(" not in weight:
            try:
                value = float(weight)
            except ValueError:
                raise ValueError(f"{spec!r}: not a weight: {weight!r}") from None
            weighted.append((value, parse_outcome(rest)))
        else:
            ordered.append(parse_outcome(item))
    if weighted and ordered:
        raise ValueError(f"{spec!r}: give every outcome a weight (W*OUTCOME), or none")
    try:
        route: Route = Weighted(*weighted) if weighted else InOrder(*ordered)
    except ValueError as exc:
        raise ValueError(f"{spec!r}: {exc}") from None
    return (None if path == "*" else path), route


def _split(text: str, spec: str) -> list[str]:
    """Split on commas outside parentheses."""
    items, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"{spec!r}: unbalanced ')'")
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    if depth:
        raise ValueError(f"{spec!r}: unbalanced '('")
    items.append(current.strip())
    if any(not item for item in items):
        raise ValueError(f"{spec!r}: an empty outcome")
    return items


_NAMES: dict[str, type[Any]] = {
    "respond": Respond,
    "delay": Delay,
    "slow": SlowBody,
    "slow-body": SlowBody,
    "reset": Reset,
    "reset-mid-body": ResetMidBody,
    "stall": Stall,
    "goaway": GoAway,
    "refuse": Refuse,
}
_SPELLING = {
    Respond: "respond",
    Delay: "delay",
    SlowBody: "slow",
    Reset: "reset",
    ResetMidBody: "reset-mid-body",
    Stall: "stall",
    GoAway: "goaway",
    Refuse: "refuse",
}


def _then(text: str) -> Respond:
    outcome = parse_outcome(text)
    if isinstance(outcome, Respond):
        return outcome
    raise ValueError(f"then= takes a status, such as 503 or 503(retry-after=1): {text!r}")


def _retry_after(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _scope(text: str) -> str:
    if text not in ("connection", "stream"):
        raise ValueError(f"scope is connection or stream, not {text!r}")
    return text


def _flag(text: str) -> bool:
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise ValueError(f"not true or false: {text!r}")


_CONVERT: dict[str, Callable[[str], Any]] = {
    "status": int,
    "chunks": int,
    "chunk_size": int,
    "after": int,
    "size": int,
    "last_stream_id": int,
    "error_code": int,
    "seconds": float,
    "interval": float,
    "retry_after": _retry_after,
    "body": str.encode,
    "scope": _scope,
    "coalesce": _flag,
    "then": _then,
}


def parse_outcome(text: str) -> Outcome:
    """One outcome: ``200``, ``503(retry-after=1)``, ``delay(0.5,then=503)``, ``refuse``..."""
    text = text.strip()
    name, paren, rest = text.partition("(")
    name = name.strip().lower()
    if paren and not rest.endswith(")"):
        raise ValueError(f"{text!r}: arguments go in parentheses, NAME(ARG,KEY=VALUE)")
    arguments = _split(rest[:-1], text) if paren and rest[:-1].strip() else []
    positional: list[str] = []
    keywords: dict[str, str] = {}
    if name.isdigit():
        cls: type[Any] = Respond
        positional.append(name)
    elif name in _NAMES:
        cls = _NAMES[name]
    else:
        raise ValueError(
            f"{text!r}: unknown outcome {name!r} (known: a status, {', '.join(_NAMES)})"
        )
    fields = [f.name for f in dataclasses.fields(cls) if f.init and f.name != "headers"]
    for argument in arguments:
        key, equals, value = argument.partition("=")
        if equals:
            key = key.strip().replace("-", "_")
            if key in keywords:
                raise ValueError(f"{text!r}: {key!r} given twice")
            keywords[key] = value.strip()
        elif keywords:
            raise ValueError(f"{text!r}: a positional argument after key=value")
        else:
            positional.append(argument)
    if len(positional) > len(fields):
        raise ValueError(f"{text!r}: {name} takes at most {len(fields)} arguments")
    values: dict[str, str] = dict(zip(fields, positional, strict=False))
    for key, value in keywords.items():
        if key not in fields:
            raise ValueError(f"{text!r}: {name} has no {key!r} (it has: {', '.join(fields)})")
        if key in values:
            raise ValueError(f"{text!r}: {key!r} given twice")
        values[key] = value
    try:
        converted = {key: _CONVERT[key](value) for key, value in values.items()}
        outcome: Outcome = cls(**converted)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    return outcome


def format_outcome(outcome: Outcome) -> str:
    """An outcome in the syntax ``parse_outcome`` reads."""
    arguments = []
    for field in dataclasses.fields(outcome):
        if not field.init or field.name == "headers":
            continue
        value = getattr(outcome, field.name)
        if value == field.default:
            continue
        if isinstance(outcome, Respond) and field.name == "status":
            continue
        if isinstance(value, Respond):
            text = format_outcome(value)
        elif isinstance(value, bytes):
            text = value.decode(errors="replace")
        elif isinstance(value, bool):
            text = str(value).lower()
        else:
            text = f"{value:g}" if isinstance(value, float) else str(value)
        arguments.append(f"{field.name.replace('_', '-')}={text}")
    name = str(outcome.status) if isinstance(outcome, Respond) else _SPELLING[type(outcome)]
    return f"{name}({','.join(arguments)})" if arguments else name


def format_route(route: Route) -> str:
    if isinstance(route, Weighted):
        return ",".join(f"{weight:g}*{format_outcome(o)}" for weight, o in route.choices)
    return ",".join(format_outcome(outcome) for outcome in route.outcomes)
