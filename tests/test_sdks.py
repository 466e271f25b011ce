"""The openai and anthropic SDKs (httpx2 clients) through httpx_resilience.httpx2."""

from __future__ import annotations

import json

import pytest

from .fakes import FakeSleep
from .servers import Reply, ScriptedApp, ServerThread

pytestmark = pytest.mark.anyio

openai = pytest.importorskip("openai", reason="the openai SDK needs Python 3.11+ (httpx2)")
anthropic = pytest.importorskip("anthropic", reason="the anthropic SDK needs httpx2")
resilience = pytest.importorskip("httpx_resilience.httpx2")

CHAT_COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-test",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hello"},
            "finish_reason": "stop",
        }
    ],
}
MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-test",
    "content": [{"type": "text", "text": "hello"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 1, "output_tokens": 1},
}


def _script(app: ScriptedApp, path: str, body: dict[str, object]) -> None:
    """503, 503, then the answer: what an overloaded API does."""
    json_headers = {"content-type": "application/json"}
    app.script(
        path,
        [
            Reply(503, headers=json_headers, body=b'{"error": {"message": "overloaded"}}'),
            Reply(503, headers=json_headers, body=b'{"error": {"message": "overloaded"}}'),
            Reply(200, headers=json_headers, body=json.dumps(body).encode()),
        ],
    )


def _transport(servers: ServerThread, sleep: FakeSleep) -> object:
    """Our retries, one request ID and one idempotency key per call; the SDK retries none."""
    return resilience.resilient_transport(
        verify=servers.ssl_context, idempotency_keys=True, sleep=sleep, tracing=False
    )


def _assert_one_call_three_attempts(app: ScriptedApp, path: str, sleep: FakeSleep) -> None:
    received = app.received(path)
    assert len(received) == 3
    assert len({r.headers["x-request-id"] for r in received}) == 1
    assert len({r.headers["idempotency-key"] for r in received}) == 1
    assert len(sleep.calls) == 2


async def test_openai_chat_completion_through_503s(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    _script(app, f"{unique_path}/chat/completions", CHAT_COMPLETION)
    sleep = FakeSleep()
    http_client = openai.DefaultAsyncHttpxClient(transport=_transport(servers, sleep))
    async with openai.AsyncOpenAI(
        api_key="test",
        base_url=f"{servers.tls_url}{unique_path}",
        max_retries=0,
        http_client=http_client,
    ) as client:
        completion = await client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}]
        )
    assert completion.choices[0].message.content == "hello"
    _assert_one_call_three_attempts(app, f"{unique_path}/chat/completions", sleep)


async def test_anthropic_message_through_503s(
    servers: ServerThread, app: ScriptedApp, unique_path: str
) -> None:
    _script(app, f"{unique_path}/v1/messages", MESSAGE)
    sleep = FakeSleep()
    http_client = anthropic.DefaultAsyncHttpxClient(transport=_transport(servers, sleep))
    async with anthropic.AsyncAnthropic(
        api_key="test",
        base_url=f"{servers.tls_url}{unique_path}",
        max_retries=0,
        http_client=http_client,
    ) as client:
        message = await client.messages.create(
            model="claude-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert message.content[0].text == "hello"
    _assert_one_call_three_attempts(app, f"{unique_path}/v1/messages", sleep)


def test_anthropic_refuses_httpx_objects_but_takes_ours() -> None:
    """The httpx2 flavour's transports are httpx2 objects through and through."""
    import httpx_resilience

    with pytest.raises(TypeError, match="this SDK uses `httpx2`"):
        anthropic.DefaultAsyncHttpxClient(transport=httpx_resilience.resilient_transport())
    anthropic.DefaultAsyncHttpxClient(transport=resilience.resilient_transport())
