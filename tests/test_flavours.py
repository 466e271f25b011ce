"""httpx and httpx2 side by side: each flavour of the library with its own client, one process."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import httpcore
import httpx
import pytest

import httpx_resilience

from .fakes import FakeSleep
from .servers import Reply, ScriptedApp, ServerThread

pytestmark = pytest.mark.anyio

httpx2 = pytest.importorskip("httpx2", reason="httpx2 needs Python 3.11+")
flavour2 = pytest.importorskip("httpx_resilience.httpx2")

GENERATED = Path(flavour2.__file__).parent


def test_both_flavours_have_the_same_public_names() -> None:
    assert flavour2.__all__ == httpx_resilience.__all__


def test_the_httpx2_flavour_never_imports_httpx() -> None:
    # Not run under alias_httpx(), an import of httpx or httpcore there would
    # quietly bind the httpx2 flavour to the wrong classes.
    imports = re.compile(r"^\s*(?:import|from)\s+(httpx|httpcore)\b(?!2)", re.MULTILINE)
    offenders = [p.name for p in GENERATED.glob("*.py") if imports.search(p.read_text())]
    assert offenders == []


def test_shared_parts_are_the_same_objects() -> None:
    """What holds no httpx is not copied: one request-ID binding, one Timings class."""
    assert flavour2.request_id is httpx_resilience.request_id
    assert flavour2.Timings is httpx_resilience.Timings
    assert flavour2.RetryBudget is httpx_resilience.RetryBudget
    assert flavour2.RetryPolicy is not httpx_resilience.RetryPolicy  # it names httpx errors


def test_errors_are_the_flavours_own() -> None:
    assert issubclass(flavour2.CircuitOpenError, httpx2.TransportError)
    assert issubclass(flavour2.DeadlineExceeded, httpx2.TimeoutException)
    assert not issubclass(flavour2.CircuitOpenError, httpx.TransportError)
    assert issubclass(httpx_resilience.DeadlineExceeded, httpx.TimeoutException)


@pytest.mark.parametrize(
    ("layers", "transport", "module"),
    [
        (httpx_resilience, lambda: httpx2.AsyncHTTPTransport(), "httpx_resilience.httpx2"),
        (httpx_resilience, lambda: httpx2.HTTPTransport(), "httpx_resilience.httpx2"),
        (flavour2, lambda: httpx.AsyncHTTPTransport(), "httpx_resilience"),
        (flavour2, lambda: httpx_resilience.HTTPTransport(), "httpx_resilience"),
    ],
)
def test_a_transport_of_the_other_flavour_is_refused_naming_the_module(
    layers: object, transport: object, module: str
) -> None:
    for layer in ("RetryTransport", "RequestIdTransport", "TracingTransport"):
        with pytest.raises(TypeError, match=rf"import the layers from {re.escape(module)}$"):
            getattr(layers, layer)(transport())  # type: ignore[operator]


def test_a_policy_of_the_other_flavour_is_refused_naming_both_modules() -> None:
    with pytest.raises(TypeError, match=r"from httpx_resilience\.httpx2, which serves the other"):
        httpx_resilience.RetryTransport(
            httpx.MockTransport(lambda r: None), flavour2.RetryPolicy()
        )
    with pytest.raises(TypeError, match=r"from httpx_resilience, which serves the other"):
        flavour2.RetryTransport(
            httpx2.MockTransport(lambda r: None), httpx_resilience.RetryPolicy()
        )


async def test_an_httpx_and_an_httpx2_client_retry_side_by_side(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    """One event loop, two flavours, each its own stack; no process-wide aliasing."""
    for name in ("httpx", "httpx2"):
        app.script(f"{unique_path}/{name}", [Reply(503), Reply(503), Reply(200, body=b"done")])
    sleeps = {"httpx": FakeSleep(), "httpx2": FakeSleep()}
    responses: dict[str, object] = {}

    async def call(name: str, module: object, layers: object) -> None:
        transport = layers.resilient_transport(  # type: ignore[attr-defined]
            verify=servers.ssl_context, sleep=sleeps[name], tracing=False
        )
        async with module.AsyncClient(transport=transport) as client:  # type: ignore[attr-defined]
            responses[name] = await client.get(f"{servers.tls_url}{unique_path}/{name}")

    with httpx_resilience.request_id("both-flavours"):
        async with anyio.create_task_group() as group:
            group.start_soon(call, "httpx", httpx, httpx_resilience)
            group.start_soon(call, "httpx2", httpx2, flavour2)

    assert isinstance(responses["httpx"], httpx.Response)
    assert isinstance(responses["httpx2"], httpx2.Response)
    for name, response in responses.items():
        assert response.status_code == 200  # type: ignore[attr-defined]
        assert response.http_version == "HTTP/2"  # type: ignore[attr-defined]
        timings = response.extensions["timings"]  # type: ignore[attr-defined]
        assert isinstance(timings, httpx_resilience.Timings)  # one class, shared
        received = app.received(f"{unique_path}/{name}")
        assert [r.headers["x-request-id"] for r in received] == ["both-flavours"] * 3
        assert len(sleeps[name].calls) == 2
    # Nothing was aliased: httpx is httpx, httpcore is httpcore.
    assert (httpx.__name__, httpcore.__name__) == ("httpx", "httpcore")


async def test_errors_come_as_the_clients_own(closed_port: int) -> None:
    transport = flavour2.resilient_transport(retry=False, tracing=False)
    async with httpx2.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx2.ConnectError):
            await client.get(f"http://127.0.0.1:{closed_port}/")
