"""The fault plan without a network: outcomes, routes, seeded draws."""

from __future__ import annotations

import math
import random
import re
from collections import Counter

import pytest

import httpx_resilience.testing as testing
from httpx_resilience.testing import (
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
from httpx_resilience.testing._plan import Chooser


def test_testing_module_exports_are_sorted_and_complete() -> None:
    exported = testing.__all__
    # isort-style, as ruff keeps it: CONSTANTS, then Classes, then functions.
    assert exported == sorted(
        exported, key=lambda name: (not name.isupper(), not name[0].isupper(), name)
    )
    public = {name for name in vars(testing) if not name.startswith("_")}
    assert public == set(exported)


def test_respond_normalises_headers_and_retry_after() -> None:
    respond = Respond(503, headers={"X-Why": "busy"}, retry_after=2)
    assert respond.headers == (("x-why", "busy"), ("retry-after", "2"))
    assert Respond(headers=[("A", "1"), ("a", "2")]).headers == (("a", "1"), ("a", "2"))
    # Normalised outcomes are hashable, so they can be compared and counted.
    assert hash(respond) == hash(Respond(503, headers=[("x-why", "busy")], retry_after=2))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Respond(99), "status"),
        (lambda: Respond(101), "status"),
        (lambda: Delay(-1), "seconds"),
        (lambda: SlowBody(chunk_size=0), "chunk_size"),
        (lambda: SlowBody(interval=-0.1), "interval"),
        (lambda: ResetMidBody(after=10, size=10), "larger"),
        (lambda: Stall(-1), "seconds"),
        (lambda: GoAway(last_stream_id=2**31), "last_stream_id"),
        (lambda: InOrder(), "at least one"),
        (lambda: Weighted(), "at least one"),
        (lambda: Weighted((0, Respond())), "positive"),
        (lambda: Weighted((-1, Respond()), (1, Refuse())), ">= 0"),
        (lambda: Weighted((math.inf, Respond()), (1, Refuse())), "finite"),
        (lambda: Weighted((math.nan, Respond())), "finite"),
        (lambda: Delay(math.nan), "Delay.seconds must be >= 0, got nan"),
        (lambda: Stall(math.nan), "Stall.seconds"),
        (lambda: SlowBody(status=100), "SlowBody.status"),
        (lambda: GoAway(error_code=2**32), "GoAway.error_code"),
        (lambda: GoAway(error_code=-1), "GoAway.error_code"),
        (lambda: FaultPlan(routes={"x": Respond()}), "start with"),
        (lambda: FaultPlan(goaway_every=0), "goaway_every"),
    ],
)
def test_invalid_settings_fail_at_construction(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


@pytest.mark.parametrize(
    "value", [0, 120, "120", "Wed, 21 Oct 2026 07:28:00 GMT", "Sun, 06 Nov 1994 08:49:37 +0000"]
)
def test_retry_after_takes_seconds_or_an_http_date(value: int | str) -> None:
    assert Respond(503, retry_after=value).headers == (("retry-after", str(value)),)


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        -1,
        "-1",
        "1.5",
        " 1",
        True,
        "Wed, 21 Oct 2026 07:28:00 -0000",  # no zone: not an HTTP-date
        "Wed, 21 Oct 2026 07:28:00 GMT\r\nX-Evil: 1",
        "٣",  # a digit, but not an ASCII one
    ],
)
def test_retry_after_refuses_what_is_not_a_retry_after(value: object) -> None:
    with pytest.raises(ValueError, match=r"retry_after must be seconds .* or an HTTP-date"):
        Respond(503, retry_after=value)  # type: ignore[arg-type]


def test_any_well_formed_header_value_goes_through_headers() -> None:
    # A test of a client's parsing may want a Retry-After no server should send.
    respond = Respond(503, headers={"Retry-After": "abc", "X-Latin-1": "café", "X-Empty": ""})
    assert respond.headers == (("retry-after", "abc"), ("x-latin-1", "café"), ("x-empty", ""))


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Bad Name": "x"}, "not a header name: 'bad name'"),
        ({"": "x"}, "not a header name: ''"),
        ({":status": "200"}, "not a header name"),
        ({"X-Split": "a\r\nX-Evil: 1"}, "the value of 'x-split' is not a header value"),
        ({"X-Nul": "a\x00b"}, "not a header value"),
        ({"X-Padded": " a"}, "not a header value"),
        ({"X-Euro": "€"}, "not a header value"),
    ],
)
def test_headers_refuse_what_http_cannot_carry(headers: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=rf"^Respond\.headers: .*{re.escape(message)}"):
        Respond(headers=headers)


def test_routes_accept_an_outcome_a_list_or_a_route() -> None:
    plan = FaultPlan(
        routes={
            "/one": Refuse(),
            "/list": [Respond(503), Respond()],
            "/w": Weighted((1, Reset())),
        },
        default=Stall(1),
    )
    assert plan.routes["/one"] == InOrder(Refuse())
    assert plan.routes["/list"] == InOrder(Respond(503), Respond())
    assert plan.default == InOrder(Stall(1))
    with pytest.raises(TypeError, match="outcome"):
        FaultPlan(routes={"/bad": "503"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="fault outcome"):
        InOrder(503)  # type: ignore[arg-type]


def test_in_order_serves_each_then_repeats_the_last() -> None:
    chooser = Chooser(FaultPlan(routes={"/a": [Respond(503), Refuse(), Respond(200)]}))
    got = [chooser.next("/a") for _ in range(5)]
    assert got == [Respond(503), Refuse(), Respond(), Respond(), Respond()]


def test_paths_count_separately_and_the_default_is_one_route() -> None:
    plan = FaultPlan(routes={"/a": [Respond(503), Respond()]}, default=[Refuse(), Respond()])
    chooser = Chooser(plan)
    assert chooser.next("/a") == Respond(503)
    assert chooser.next("/x") == Refuse()
    assert chooser.next("/y") == Respond()  # the default's second request
    assert chooser.next("/a") == Respond()
    assert chooser.next("/a?q=1") == Respond()  # no exact route: the default
    # Without a default, unplanned paths get the built-in answer.
    assert Chooser(FaultPlan()).next("/anything") == Respond()


def test_weighted_draws_repeat_with_the_seed() -> None:
    route = Weighted((8, Respond()), (1, Refuse()), (1, Reset()))

    def draws(seed: int, noise: bool = False) -> list[Outcome]:
        chooser = Chooser(FaultPlan(routes={"/w": route}, default=route, seed=seed))
        got = []
        for _ in range(200):
            if noise:
                chooser.next("/other")  # traffic elsewhere must not change /w's draws
            got.append(chooser.next("/w"))
        return got

    assert draws(7) == draws(7) == draws(7, noise=True)
    assert draws(7) != draws(8)
    counts = Counter(type(o).__name__ for o in draws(7))
    assert counts["Respond"] > counts["Refuse"] > 0
    assert counts["Reset"] > 0


def test_weighted_ignores_the_index_and_uses_the_generator() -> None:
    route = Weighted((1, Respond(500)), (1, Respond(200)))
    first = [route.choose(0, random.Random(1)) for _ in range(3)]
    assert len(set(first)) == 1  # same generator state, same draw
    assert Weighted((0, Refuse()), (1, Respond())).choose(0, random.Random()) == Respond()
