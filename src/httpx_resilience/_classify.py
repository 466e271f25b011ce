"""What a failure proves about a request: pure decisions on httpx's and httpcore's errors.

Whether the server provably never processed it (safe to re-send whatever
the method), whether it may be re-sent at once, and whether the server broke
the protocol. No I/O; the retry layer and the breaker ask.
"""

from __future__ import annotations

import traceback

import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import httpcore
import httpx

from ._h2watch import BACK_OFF_CODES, AboveLastStream


def unprocessed_reason(exc: BaseException) -> str | None:
    """Why an HTTP/2 failure proves the server never processed the request.

    ``"GOAWAY"``: the stream was above the ``last_stream_id`` of the
    server's GOAWAY (``HTTPTransport`` reports these).
    ``"REFUSED_STREAM"``: the server reset the stream with REFUSED_STREAM,
    which RFC 9113 §8.7 says it does only for streams it did not process
    (also what our GOAWAY guard answers for streams above ``last_stream_id``).
    ``"STREAM_LIMIT"``: h2 refused to open the stream, so no byte left.
    ``"CONNECTION_CLOSED"``: the connection was closed before the request
    headers could be sent. ``None``: the request may have been processed.

    The evidence is httpcore's exception, which httpx chains as ``__cause__``
    and which carries h2's event or exception as its argument (or, after a
    GOAWAY, h2's exception as its ``__context__``).
    """
    cause = exc.__cause__
    if not isinstance(exc, httpx.ProtocolError) or not isinstance(cause, httpcore.ProtocolError):
        return None
    detail = cause.args[0] if cause.args else None
    if isinstance(detail, h2.events.ConnectionTerminated):
        # httpcore reports the GOAWAY that closed the connection; what h2
        # refused for this request is the exception it was handling.
        detail = cause.__context__
    if isinstance(detail, AboveLastStream):
        return "GOAWAY"
    if isinstance(detail, h2.events.StreamReset):
        refused = detail.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
        return "REFUSED_STREAM" if refused else None
    if isinstance(detail, h2.exceptions.TooManyStreamsError):
        return "STREAM_LIMIT"
    # h2 says which input its connection state machine refused; only a
    # refused SEND_HEADERS proves nothing of this request was sent.
    if isinstance(detail, h2.exceptions.ProtocolError) and str(detail).startswith(
        "Invalid input ConnectionInputs.SEND_HEADERS in state"
    ):
        return "CONNECTION_CLOSED"
    return None


def server_broke_protocol(exc: BaseException) -> bool:
    """Whether a ``LocalProtocolError`` is the client refusing a step because of the server.

    httpcore raises every error of h2 as ``LocalProtocolError``, also when
    the server broke the protocol: h2 refused its frames, or the server's
    error closed the connection or stream under a request still sending or
    reading, and h2's state machine refused the next step ("Invalid input
    ConnectionInputs.SEND_DATA in state ConnectionState.CLOSED"). That is
    the server's fault, as a ``RemoteProtocolError`` is, and another
    attempt may well succeed. A request the caller built wrong (a header
    h11 or h2 refuses: ``Illegal header value``, a ``TE`` header) fails
    before anything is sent, and would fail again: ``False``.
    """
    cause = exc.__cause__
    if not isinstance(exc, httpx.LocalProtocolError) or not isinstance(
        cause, httpcore.LocalProtocolError
    ):
        return False
    detail = cause.args[0] if cause.args else None
    if not isinstance(detail, h2.exceptions.ProtocolError):
        return False  # h11 refused the caller's request itself
    if isinstance(detail, h2.exceptions.StreamClosedError) or str(detail).startswith(
        "Invalid input "
    ):
        return True  # the server closed or reset what the request still used
    # Otherwise h2 refused either the server's frames or the request's
    # headers; only the former come out of its receive_data().
    return any(
        frame.f_code.co_name == "receive_data"
        and frame.f_globals.get("__name__") == h2.connection.__name__
        for frame, _ in traceback.walk_tb(detail.__traceback__)
    )


def resend_at_once(exc: BaseException) -> bool:
    """Whether a failure the server provably never processed may be re-sent at once.

    Yes for ``REFUSED_STREAM`` and for a stream above the ``last_stream_id``
    of a GOAWAY sent in good order; not after a GOAWAY saying
    ``ENHANCE_YOUR_CALM`` (the server is overloaded) or ``INTERNAL_ERROR``:
    those requests are still safe to re-send, whatever their method, but
    only after the retry policy's wait and within its budget.
    """
    if unprocessed_reason(exc) is None:
        return False
    cause = exc.__cause__
    detail = cause.args[0] if cause is not None and cause.args else None
    if isinstance(detail, (AboveLastStream, h2.events.ConnectionTerminated)):
        return detail.error_code not in BACK_OFF_CODES
    return True
