"""IdempotencyKeyTransport: which requests get a key, and that it is kept."""

from __future__ import annotations

import uuid

import pytest

from .fakes import Script
from .flavour import IdempotencyKeyTransport, httpx, new_idempotency_key

pytestmark = pytest.mark.anyio

URL = "https://api.example.com/orders"


# Each test of this block runs again for a sync client: its twin follows the block.
# unasync: begin
async def _async_sent_headers(
    method: str, headers: dict[str, str], **options: object
) -> httpx.Headers:
    script = Script([200])
    transport = IdempotencyKeyTransport(script.transport(), **options)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport) as client:
        await client.request(method, URL, headers=headers)
    return script.requests[0].headers


async def test_post_and_patch_get_a_uuid4_key() -> None:
    for method in ("POST", "PATCH"):
        headers = await _async_sent_headers(method, {})
        assert uuid.UUID(headers["Idempotency-Key"]).version == 4


async def test_other_methods_and_existing_keys_are_left_alone() -> None:
    assert "Idempotency-Key" not in await _async_sent_headers("GET", {})
    assert "Idempotency-Key" not in await _async_sent_headers("PUT", {})
    headers = await _async_sent_headers("POST", {"idempotency-key": "mine"})
    assert headers.get_list("Idempotency-Key") == ["mine"]


async def test_header_methods_and_key_factory_are_configurable() -> None:
    headers = await _async_sent_headers(
        "delete", {}, header="X-Dedup", methods=["delete"], new_key=lambda: "fixed"
    )
    assert headers["X-Dedup"] == "fixed"
    assert "Idempotency-Key" not in headers


# unasync: end
# unasync: generated from the block above by scripts/generate.py; do not edit
def _sent_headers(method: str, headers: dict[str, str], **options: object) -> httpx.Headers:
    script = Script([200])
    transport = IdempotencyKeyTransport(script.transport(), **options)  # type: ignore[arg-type]
    with httpx.Client(transport=transport) as client:
        client.request(method, URL, headers=headers)
    return script.requests[0].headers


def test_sync_post_and_patch_get_a_uuid4_key() -> None:
    for method in ("POST", "PATCH"):
        headers = _sent_headers(method, {})
        assert uuid.UUID(headers["Idempotency-Key"]).version == 4


def test_sync_other_methods_and_existing_keys_are_left_alone() -> None:
    assert "Idempotency-Key" not in _sent_headers("GET", {})
    assert "Idempotency-Key" not in _sent_headers("PUT", {})
    headers = _sent_headers("POST", {"idempotency-key": "mine"})
    assert headers.get_list("Idempotency-Key") == ["mine"]


def test_sync_header_methods_and_key_factory_are_configurable() -> None:
    headers = _sent_headers(
        "delete", {}, header="X-Dedup", methods=["delete"], new_key=lambda: "fixed"
    )
    assert headers["X-Dedup"] == "fixed"
    assert "Idempotency-Key" not in headers


# unasync: generated end


def test_keys_are_distinct_and_bad_header_rejected() -> None:
    assert len({new_idempotency_key() for _ in range(100)}) == 100
    with pytest.raises(ValueError, match="header"):
        IdempotencyKeyTransport(httpx.MockTransport(lambda r: httpx.Response(200)), header="")
