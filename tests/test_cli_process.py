"""The console script as a shell runs it: closed pipes, signals, exit codes.

Each test starts ``httpx-resilience`` in a process of its own, the way a
user's shell does (SIGINT as a foreground job gets it, unless it says
otherwise), and checks what a user would see: the exit code and stderr.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from httpx_resilience.testing import FaultPlan, Stall

from .test_cli import serving

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and pipes")

SCRIPT = Path(sys.executable).with_name("httpx-resilience")
# Sets SIGINT as a shell would leave it for the command (and closes stdout
# for `>&-`), then runs it.
LAUNCH = (
    "import os, signal, sys; signal.signal(signal.SIGINT, getattr(signal, sys.argv[1])); "
    "sys.argv[2] == 'close' and os.close(1); os.execv(sys.argv[3], sys.argv[3:])"
)


def cli(*args: str, sigint: str = "SIG_DFL", stdout: str = "keep") -> list[str]:
    """The console script with ``args``; ``sigint="SIG_IGN"`` as ``&`` in a script starts it."""
    launch = [sys.executable, "-c", LAUNCH, sigint, stdout]
    if SCRIPT.exists():
        return [*launch, str(SCRIPT), *args]
    return [*launch, sys.executable, "-m", "httpx_resilience", *args]


@contextmanager
def running(*args: str, sigint: str = "SIG_DFL") -> Iterator[subprocess.Popen[str]]:
    """The console script, running; killed if the test leaves it running."""
    with subprocess.Popen(
        cli(*args, sigint=sigint), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()


def environment(*, unbuffered: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def closed_pipe() -> Iterator[int]:
    """The write end of a pipe whose reader has gone, as ``| head -1`` leaves it."""
    read, write = os.pipe()
    os.close(read)
    try:
        yield write
    finally:
        os.close(write)


def run_into_closed_pipe(args: list[str], *, unbuffered: bool = False) -> tuple[int, str]:
    with closed_pipe() as stdout:
        done = subprocess.run(
            cli(*args),
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(unbuffered=unbuffered),
            timeout=60,
            check=False,
        )
    return done.returncode, done.stderr


# -- a reader that went away: quiet, and the exit code the command had --------


@pytest.mark.parametrize("unbuffered", [False, True])
@pytest.mark.parametrize("json", [False, True])
def test_get_into_a_closed_pipe(unbuffered: bool, json: bool) -> None:
    with serving(tls=False) as server:
        args = ["get", *(["--json"] if json else []), f"{server.url}/x"]
        code, err = run_into_closed_pipe(args, unbuffered=unbuffered)
    assert (code, err) == (0, "")


def test_a_failed_get_into_a_closed_pipe_keeps_its_exit_code(closed_port: int) -> None:
    code, err = run_into_closed_pipe(
        ["get", "--json", "--retries", "0", f"http://127.0.0.1:{closed_port}/"]
    )
    assert code == 3
    assert err == (
        f"httpx-resilience get: connection refused by 127.0.0.1:{closed_port}: "
        "nothing listens there\n"
    )


@pytest.mark.parametrize("unbuffered", [False, True])
@pytest.mark.parametrize("args", [[], ["get", "--help"]])
def test_help_and_about_into_a_closed_pipe(args: list[str], unbuffered: bool) -> None:
    # Buffered, argparse's output waits for the flush at exit: that flush fails too.
    assert run_into_closed_pipe(args, unbuffered=unbuffered) == (0, "")


@pytest.mark.parametrize("failing", [False, True])
def test_a_closed_stdout(failing: bool, closed_port: int) -> None:
    """``httpx-resilience >&-``: Python has no sys.stdout at all then."""
    args = ["get", "--retries", "0", f"http://127.0.0.1:{closed_port}/"] if failing else []
    code = 3 if failing else 0
    done = subprocess.run(
        cli(*args, stdout="close"), stderr=subprocess.PIPE, text=True, timeout=60, check=False
    )
    assert done.returncode == code
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == (code != 0)


def test_demo_into_a_closed_pipe() -> None:
    code, err = run_into_closed_pipe(["demo", "--requests", "10", "--concurrency", "5"])
    assert code == 0
    # Only the progress, which goes to stderr.
    assert all(
        line.startswith(("bare httpx", "resilient_transport()")) for line in err.splitlines()
    )
    assert err.splitlines()[-1].startswith("resilient_transport()  10/10 in ")


# -- signals --------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_on_get_is_one_line(backend: str) -> None:
    with (
        serving(FaultPlan(default=Stall(10)), tls=False) as server,
        running("get", "--backend", backend, f"{server.url}/x") as process,
    ):
        deadline = time.monotonic() + 30
        while not server.received and time.monotonic() < deadline:
            time.sleep(0.01)  # until the request is in, and stalled
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    assert (process.returncode, out, err) == (130, "", "httpx-resilience get: interrupted\n")


def banner(process: subprocess.Popen[str]) -> list[str]:
    """What a fault server printed, up to "serving until ..."."""
    assert process.stdout is not None
    lines: list[str] = []
    while not lines or not lines[-1].startswith("serving until"):
        line = process.stdout.readline()
        assert line, f"no banner: {lines}"
        lines.append(line)
    return lines


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_fault_server_stops_cleanly_on_a_signal(signum: signal.Signals) -> None:
    with running("fault-server", "--max-lifetime", "30", "--plan", "/x=503") as process:
        lines = banner(process)
        url = lines[0].split()[3]
        cacert = lines[1].removeprefix("CA certificate: ").strip()
        assert os.path.exists(cacert)
        verify = ssl.create_default_context(cafile=cacert)
        with httpx.Client(verify=verify) as client:
            assert client.get(f"{url}/x").status_code == 503
        process.send_signal(signum)
        out, err = process.communicate(timeout=10)
    assert (process.returncode, err) == (0, "")
    assert out.splitlines()[-1].endswith("received 1 requests, processed 1; 503 x1")
    assert not os.path.exists(cacert)


def test_fault_server_started_ignoring_sigint_keeps_ignoring_it() -> None:
    # `fault-server &` in a script: Ctrl-C at the terminal is not meant for it.
    with running("fault-server", "--max-lifetime", "30", "--no-tls", sigint="SIG_IGN") as process:
        url = banner(process)[0].split()[3]
        process.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=0.3)
        with httpx.Client() as client:
            assert client.get(f"{url}/x").status_code == 200
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert (process.returncode, err) == (0, "")
    assert out.splitlines()[-1].endswith("received 1 requests, processed 1; 200 x1")
