"""Test doubles for the side effects layers take: sleep and clocks."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence

from .flavour import httpx


class FakeSleep:
    """Records the waits asked for and moves a virtual clock instead of sleeping.

    One object serves as ``sleep=`` (awaited) and ``sync_sleep=`` (called):
    the wait is recorded when it is asked for, and nothing is waited.
    """

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.now = 0.0

    def __call__(self, seconds: float) -> _Done:
        self.calls.append(seconds)
        self.now += seconds
        return _Done()

    def clock(self) -> float:
        return self.now


class _Done:
    """An awaitable that is done at once."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield


Outcome = int | tuple[int, dict[str, str]] | Exception | Callable[[httpx.Request], httpx.Response]


class Script:
    """A MockTransport handler that plays outcomes in order and records requests.

    An outcome is a status, a ``(status, headers)`` pair, an exception to
    raise, or a function of the request. The last one repeats.
    """

    def __init__(self, outcomes: Sequence[Outcome]) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []

    # Sync, so that it serves async and sync clients alike (MockTransport
    # awaits only what is awaitable).
    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(request.read() if self._replayable(request) else b"")
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, Exception):
            raise type(outcome)(str(outcome))
        if isinstance(outcome, int):
            return httpx.Response(outcome)
        if isinstance(outcome, tuple):
            return httpx.Response(outcome[0], headers=outcome[1])
        return outcome(request)

    @staticmethod
    def _replayable(request: httpx.Request) -> bool:
        return isinstance(request.stream, httpx.ByteStream)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


class TrackedStream(httpx.AsyncByteStream):
    """A response body that remembers whether it was read or closed."""

    def __init__(self, body: bytes = b"") -> None:
        self.body = body
        self.read = False
        self.closed = False

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        self.read = True
        yield self.body

    async def aclose(self) -> None:
        self.closed = True
