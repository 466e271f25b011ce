"""redact_url: what url.full may show."""

from __future__ import annotations

import pytest

from .flavour import SENSITIVE_QUERY_PARAMETERS, httpx
from .flavour._redact import redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.example.com/v1/things", "https://api.example.com/v1/things"),
        ("https://api.example.com/p?color=blue&n=2", "https://api.example.com/p?color=blue&n=2"),
        ("https://user:secret@api.example.com/", "https://REDACTED:REDACTED@api.example.com/"),
        ("https://user@api.example.com/", "https://REDACTED:REDACTED@api.example.com/"),
        (
            "https://bucket.s3.amazonaws.com/f?X-Amz-Signature=ab12&X-Amz-Date=20250101T000000Z",
            "https://bucket.s3.amazonaws.com/f?X-Amz-Signature=REDACTED&X-Amz-Date=20250101T000000Z",
        ),
        # Repeated keys, a key without a value, an empty value, and a fragment.
        (
            "https://h.example/p?sig=1&sig=2&sig&token=&keep=1#part",
            "https://h.example/p?sig=REDACTED&sig=REDACTED&sig&token=REDACTED&keep=1#part",
        ),
        # The key's spelling on the wire does not matter; its case does.
        (
            "https://h.example/p?X%2DGoog%2DSignature=zz",
            "https://h.example/p?X%2DGoog%2DSignature=REDACTED",
        ),
        ("https://h.example/p?SIG=visible", "https://h.example/p?SIG=visible"),
        # Values stay as sent, percent-encoding included.
        ("https://h.example/p?q=a%20b&sig=c%2Fd", "https://h.example/p?q=a%20b&sig=REDACTED"),
        ("http://[::1]:8080/p?token=t", "http://[::1]:8080/p?token=REDACTED"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(httpx.URL(url)) == expected


def test_keys_can_be_replaced() -> None:
    url = httpx.URL("https://h.example/p?session=s&sig=1")
    assert redact_url(url, ["session"]) == "https://h.example/p?session=REDACTED&sig=1"
    assert redact_url(url, ()) == "https://h.example/p?session=s&sig=1"
    extended = SENSITIVE_QUERY_PARAMETERS | {"session"}
    assert redact_url(url, extended) == "https://h.example/p?session=REDACTED&sig=REDACTED"


def test_semantic_conventions_list_is_covered() -> None:
    semconv = {"X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "sig"}
    assert semconv | {"X-Goog-Signature", "AWSAccessKeyId", "Signature"} <= (
        SENSITIVE_QUERY_PARAMETERS
    )
