"""A fault-injecting HTTP/1.1 and HTTP/2 server for tests and demos.

>>> from httpx_resilience.testing import FaultPlan, FaultServer, Refuse, Respond
>>> plan = FaultPlan(routes={"/pay": [Refuse(), Respond(201)]})
>>> async with FaultServer(plan) as server:  # doctest: +SKIP
...     async with httpx.AsyncClient(http2=True, verify=server.ssl_context) as client:
...         await client.post(f"{server.url}/pay", json={})

TLS needs ``trustme`` (the ``demo`` extra); it is imported only when a TLS
server starts. See ``docs/fault-server.md``.
"""

from ._plan import (
    Delay,
    FaultPlan,
    GoAway,
    InOrder,
    Outcome,
    Refuse,
    Reset,
    ResetMidBody,
    Respond,
    SlowBody,
    Stall,
    Weighted,
)
from ._server import FaultServer, GoAwaySent, Received, run_fault_server

__all__ = [
    "Delay",
    "FaultPlan",
    "FaultServer",
    "GoAway",
    "GoAwaySent",
    "InOrder",
    "Outcome",
    "Received",
    "Refuse",
    "Reset",
    "ResetMidBody",
    "Respond",
    "SlowBody",
    "Stall",
    "Weighted",
    "run_fault_server",
]
