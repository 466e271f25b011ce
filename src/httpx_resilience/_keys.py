"""The ``request.extensions`` and ``response.extensions`` keys the layers share.

Plain strings in one place: a layer that reads what another one left (the
retry layer asking the breaker, the tracing layer recording the request ID)
imports the key from here, not the other layer.
"""

#: The per-request options: ``extensions={"resilience": {...}}``.
OPTIONS = "resilience"

#: The request ID sent (request and response). The retry log and the tracing
#: layer record it from the request, so ``RequestIdTransport(sensitive=True)``
#: leaves it off the request.
REQUEST_ID = "request_id"
#: The header the request ID travels in, lower case (request).
REQUEST_ID_HEADER = "request_id_header"

#: What the retry layer did (response): a ``RetryHistory``.
RETRY = "retry"
#: What the hedging layer did (response): a ``HedgeHistory``.
HEDGING = "hedging"
#: How long each phase of the attempt took (response): a ``Timings``.
TIMINGS = "timings"

#: The retry layer lends its budget book to the layers inside it (request):
#: hedging draws on the same tokens.
BUDGET = "httpx_resilience.budget"
#: After a failed call the breaker leaves itself here (request), so that the
#: retry layer around it can ask ``retry_in(url)`` before it waits, instead of
#: waiting only to meet an open circuit.
CIRCUIT = "httpx_resilience.circuit_breaker"
#: What one logical request carries from one attempt to the next (request):
#: the tracing layer's attempt count. The retry layer (and httpx, on a
#: redirect) sends the same extensions again.
ATTEMPTS = "httpx_resilience.attempts"
