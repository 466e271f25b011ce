"""RedisState: the breaker, the retry budget and the rate limiter shared by a fleet through Redis.

Every update is one Lua script, run atomically by Redis on its own clock
(``TIME``), so processes on machines whose clocks disagree still agree on
when a break ends, and two processes never spend the same token or miss a
transition. A layer makes at most one call per request on the happy path.

Keys (``prefix`` first; ``{...}`` is a Redis Cluster hash tag, so the keys one
script touches live on one node)::

    {prefix}:breaker:{origin}    hash: state, generation, break end, probes, window buckets
    {prefix}:budget:{origin}     hash: tokens, when last refilled
    {prefix}:rate:{key}          the rate's theoretical arrival time (GCRA), ms on Redis' clock
    {prefix}:pause:{key}         until when the key is paused (Retry-After), ms on Redis' clock

Each key expires on its own once it holds nothing a fresh one would not.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import sniffio

from . import _checks
from ._circuit import CircuitSettings
from ._state import (
    AsyncBudgetStore,
    AsyncCircuitStore,
    AsyncRateStore,
    BudgetSettings,
    BudgetStore,
    CircuitReply,
    CircuitStore,
    Health,
    RateSettings,
    RateStore,
    StateBackend,
)

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    from redis.commands.core import AsyncScript, Script

#: Redis' clock in ms, as a float (TIME answers seconds and microseconds).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
"""

#: One origin's circuit: ``_circuit.Circuit``'s state machine on Redis' clock.
#: ARGV: op (acquire | record | release), generation (of the permit, or of
#: the successes flushed with an acquire), failed (0/1), successes to count,
#: failure_ratio, min_calls, window ms, break ms, probes, key TTL ms.
#: Answers {permit or -1, state, previous state, break left ms, tripped failures, calls};
#: states: 0 closed, 1 open, 2 half-open.
BREAKER = (
    _NOW
    + """
local key = KEYS[1]
local op = ARGV[1]
local permit = tonumber(ARGV[2])
local failed = ARGV[3] == '1'
local successes = tonumber(ARGV[4])
local ratio = tonumber(ARGV[5])
local min_calls = tonumber(ARGV[6])
local window = tonumber(ARGV[7])
local brk = tonumber(ARGV[8])
local probes = tonumber(ARGV[9])
local h = redis.call('HMGET', key, 'state', 'gen', 'until', 'probes', 'tf', 'tc', 'half')
local state = tonumber(h[1]) or 0
local gen = tonumber(h[2]) or 0
local open_until = tonumber(h[3]) or 0
local inflight = tonumber(h[4]) or 0
local tf = tonumber(h[5]) or 0
local tc = tonumber(h[6]) or 0
local half = tonumber(h[7]) or 0
local previous = state
local index = math.floor(now / (window / 10))

local function move(new)
  state = new
  gen = gen + 1
  inflight = 0
  if new == 2 then half = now end
end

local function count(calls, failures)
  local slot = index % 10
  if tonumber(redis.call('HGET', key, 's' .. slot)) ~= index then
    redis.call('HSET', key, 's' .. slot, index, 'c' .. slot, calls, 'f' .. slot, failures)
  else
    redis.call('HINCRBY', key, 'c' .. slot, calls)
    if failures > 0 then redis.call('HINCRBY', key, 'f' .. slot, failures) end
  end
end

if successes > 0 and permit == gen and state == 0 then count(successes, 0) end

local out = -1
if op == 'acquire' then
  if state == 1 and now >= open_until then move(2) end
  if state == 0 then
    out = gen
  elseif state == 2 then
    -- A probe slot held longer than a break: its process is gone.
    if inflight >= probes and now - half >= math.max(brk, 1000) then move(2) end
    if inflight < probes then
      inflight = inflight + 1
      out = gen
    end
  end
elseif op == 'record' then
  if permit == gen and state == 2 then
    if failed then
      open_until = now + brk
      move(1)
    else
      redis.call('HDEL', key, 's0', 's1', 's2', 's3', 's4', 's5', 's6', 's7', 's8', 's9')
      move(0)
    end
  elseif permit == gen and state == 0 then
    count(1, failed and 1 or 0)
    if failed then
      local v = redis.call('HMGET', key, 's0', 'c0', 'f0', 's1', 'c1', 'f1', 's2', 'c2', 'f2',
        's3', 'c3', 'f3', 's4', 'c4', 'f4', 's5', 'c5', 'f5', 's6', 'c6', 'f6', 's7', 'c7', 'f7',
        's8', 'c8', 'f8', 's9', 'c9', 'f9')
      local f, c = 0, 0
      for i = 0, 9 do
        local s = tonumber(v[i * 3 + 1])
        if s and index - 10 < s and s <= index then
          c = c + tonumber(v[i * 3 + 2])
          f = f + tonumber(v[i * 3 + 3])
        end
      end
      if c >= min_calls and f >= ratio * c then
        tf = f
        tc = c
        open_until = now + brk
        move(1)
      end
    end
  end
elseif op == 'release' then
  if permit == gen and state == 2 and inflight > 0 then inflight = inflight - 1 end
end

redis.call('HSET', key, 'state', state, 'gen', gen, 'until', open_until, 'probes', inflight,
  'tf', tf, 'tc', tc, 'half', half)
redis.call('PEXPIRE', key, math.ceil(tonumber(ARGV[10])))
local left = 0
if state == 1 then left = math.max(0, math.ceil(open_until - now)) end
return {out, state, previous, left, tf, tc}
"""
)

#: One origin's retry budget: ``_budget.BudgetBook``'s bucket on Redis' clock.
#: ARGV: tokens to deposit, tokens to take (0: none), max_tokens,
#: min_per_second, key TTL ms. Answers 1 when the tokens were there, else 0.
BUDGET = (
    _NOW
    + """
local key = KEYS[1]
local deposit = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local rate = tonumber(ARGV[4])
local h = redis.call('HMGET', key, 'tokens', 'at')
local tokens = tonumber(h[1]) or max
local at = tonumber(h[2]) or now
if now > at then tokens = math.min(max, tokens + (now - at) / 1000 * rate) end
tokens = math.min(max, tokens + deposit)
local ok = 1
if cost > 0 then
  if tokens < cost then ok = 0 else tokens = tokens - cost end
end
redis.call('HSET', key, 'tokens', string.format('%.17g', tokens),
  'at', string.format('%.17g', now))
redis.call('PEXPIRE', key, math.ceil(tonumber(ARGV[5])))
return ok
"""
)

#: One key's rate: GCRA (a token bucket kept as one timestamp, the
#: theoretical arrival time), and its pause. ARGV: op (acquire | pause), then
#: for acquire the interval between requests in ms (0: no rate) and the
#: burst; for pause its length in ms. An acquire answers 0 when the request
#: may go (and counts it), else the ms to wait, as a string.
RATE = (
    _NOW
    + """
local key, pause_key = KEYS[1], KEYS[2]
if ARGV[1] == 'pause' then
  local ms = tonumber(ARGV[2])
  local paused = tonumber(redis.call('GET', pause_key))
  if not paused or paused < now + ms then
    redis.call('SET', pause_key, string.format('%.3f', now + ms), 'PX', math.ceil(ms) + 1)
  end
  return 0
end
local paused = tonumber(redis.call('GET', pause_key))
if paused and paused > now then return string.format('%.3f', math.max(paused - now, 0.001)) end
local interval = tonumber(ARGV[2])
if interval <= 0 then return 0 end
local tat = tonumber(redis.call('GET', key))
if not tat or tat < now then tat = now end
local next_tat = tat + interval
local allow_at = next_tat - tonumber(ARGV[3]) * interval
if now < allow_at then return string.format('%.3f', math.max(allow_at - now, 0.001)) end
redis.call('SET', key, string.format('%.3f', next_tat), 'PX', math.ceil(next_tat - now) + 1)
return 0
"""
)

_SCRIPTS = (BREAKER, BUDGET, RATE)
_STATES = ("closed", "open", "half_open")


class RedisState(StateBackend):
    """Shared state in Redis: every process using the same ``prefix`` shares it.

    >>> state = RedisState("redis://127.0.0.1:6379/0", prefix="billing")  # doctest: +SKIP
    >>> transport = resilient_transport(circuit_breaker=True, state=state)  # doctest: +SKIP

    Shared per origin (or rate-limit key): the circuit breaker's state,
    window and probes; the retry budget's tokens (deposits are counted
    locally and settled when a retry takes tokens); the rate limiter's rate
    and the pauses servers ask for with ``Retry-After``.

    Redis down or slow never fails a request: each call waits at most
    ``timeout`` seconds; after a failure the layers decide on their own local
    state (as with ``MemoryState``) and ask Redis again after
    ``retry_after`` seconds; one warning per outage goes to the
    ``httpx_resilience`` logger. Needs the ``redis`` package
    (``pip install 'httpx-resilience[redis]'``).

    One object serves async and sync clients: it opens a ``redis.Redis``
    client for sync calls and a ``redis.asyncio.Redis`` client per event loop
    for asyncio, lazily; under trio (which redis-py does not support) async
    calls go to the sync client in a worker thread. Pass ``client=`` and
    ``async_client=`` to bring your own (their timeouts are then yours). Close
    it with ``close()`` or ``await aclose()`` when done.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "httpx-resilience",
        timeout: float = 0.1,
        retry_after: float = 1.0,
        client: redis.Redis | None = None,
        async_client: redis.asyncio.Redis | None = None,
    ) -> None:
        try:
            import redis as _redis  # noqa: F401 - only to fail here, with the remedy
        except ImportError as exc:
            raise ImportError(
                "RedisState needs the redis package: pip install 'httpx-resilience[redis]'"
            ) from exc
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty str, got {prefix!r}")
        self.url = url
        self.prefix = prefix
        self.timeout = _checks.number("timeout", timeout, above_minimum=True)
        self.retry_after = _checks.number("retry_after", retry_after)
        self.health = Health(f"redis {_safe_url(url)}", self.retry_after)
        self._client = client
        self._scripts: list[Script] | None = None
        self._async_client = async_client
        # Per event loop, when no async client was given: a client is bound to its loop.
        self._loop_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[redis.asyncio.Redis, list[AsyncScript]]
        ] = weakref.WeakKeyDictionary()
        self._given_scripts: list[AsyncScript] | None = None
        # Worker threads for trio's calls, apart from anyio's default pool.
        self._threads = anyio.CapacityLimiter(16)
        self._caller = Caller(self)
        self._async_caller = AsyncCaller(self)

    def __repr__(self) -> str:
        return f"RedisState({_safe_url(self.url)!r}, prefix={self.prefix!r})"

    def key(self, kind: str, name: str) -> str:
        """The Redis key of one layer's state for one origin or rate-limit key."""
        return f"{self.prefix}:{kind}:{{{name}}}"

    def circuits(self, policy: CircuitSettings) -> tuple[AsyncCircuitStore, CircuitStore]:
        return AsyncRedisCircuits(self, policy), RedisCircuits(self, policy)

    def budgets(self, budget: BudgetSettings) -> tuple[AsyncBudgetStore, BudgetStore]:
        return AsyncRedisBudgets(self, budget), RedisBudgets(self, budget)

    def rates(self, policy: RateSettings) -> tuple[AsyncRateStore, RateStore]:
        return AsyncRedisRates(self, policy), RedisRates(self, policy)

    # --- clients ------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.retry import Retry

        # One immediate retry on a broken connection (a pooled one Redis
        # closed when it restarted), never on a timeout: a slow Redis costs
        # one timeout per call at most, never redis-py's backoff of seconds.
        return {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        }

    def sync_scripts(self) -> tuple[redis.Redis, list[Script]]:
        """The sync client and its scripts, made on first use."""
        if self._scripts is None:
            import redis as redis_module

            if self._client is None:
                self._client = redis_module.Redis.from_url(self.url, **self._options())
            self._scripts = [self._client.register_script(text) for text in _SCRIPTS]
        assert self._client is not None
        return self._client, self._scripts

    def async_scripts(self) -> tuple[redis.asyncio.Redis, list[AsyncScript]]:
        """The asyncio client of the running loop and its scripts, made on first use."""
        if self._async_client is not None:
            if self._given_scripts is None:
                self._given_scripts = [
                    self._async_client.register_script(text) for text in _SCRIPTS
                ]
            return self._async_client, self._given_scripts
        loop = asyncio.get_running_loop()
        entry = self._loop_clients.get(loop)
        if entry is None:
            import redis.asyncio as redis_asyncio

            client = redis_asyncio.Redis.from_url(self.url, **self._options())
            entry = client, [client.register_script(text) for text in _SCRIPTS]
            self._loop_clients[loop] = entry
        return entry

    def close(self) -> None:
        """Close the sync client's connections (a client given as ``client=`` too)."""
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Close the running loop's asyncio client and the sync client."""
        with contextlib.suppress(RuntimeError):  # under trio: no asyncio loop
            entry = self._loop_clients.pop(asyncio.get_running_loop(), None)
            if entry is not None:
                await entry[0].aclose()
        if self._async_client is not None:
            await self._async_client.aclose()
        self.close()


class Caller:
    """Runs one script with the sync client; ``None`` when Redis did not answer."""

    __slots__ = ("_health", "_state")

    def __init__(self, state: RedisState) -> None:
        self._state = state
        self._health = state.health

    def call(self, script: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
        health = self._health
        if not health.up:
            return None
        try:
            client, scripts = self._state.sync_scripts()
            reply = scripts[script](keys, args, client)
        except Exception as exc:  # whatever the client raises, the request goes on
            health.failed(exc)
            return None
        health.answered()
        return reply


class AsyncCaller:
    """Runs one script for an async client: asyncio's client, or trio's sync one in a thread."""

    __slots__ = ("_health", "_state")

    def __init__(self, state: RedisState) -> None:
        self._state = state
        self._health = state.health

    async def call(self, script: int, keys: Sequence[str], args: Sequence[Any]) -> Any:
        health = self._health
        if not health.up:
            return None
        try:
            if sniffio.current_async_library() == "asyncio":
                client, scripts = self._state.async_scripts()
                reply = await scripts[script](keys, args, client)
            else:
                return await anyio.to_thread.run_sync(
                    self._state._caller.call,
                    script,
                    keys,
                    args,
                    abandon_on_cancel=True,
                    limiter=self._state._threads,
                )
        except Exception as exc:  # whatever the client raises, the request goes on
            health.failed(exc)
            return None
        health.answered()
        return reply


# --- the stores: one class per layer and call style --------------------------


class _CircuitArgs:
    def __init__(self, state: RedisState, policy: CircuitSettings) -> None:
        self._state = state
        window = policy.window * 1000
        brk = policy.break_duration * 1000
        self._policy_args = (
            repr(policy.failure_ratio),
            policy.min_calls,
            repr(window),
            repr(brk),
            policy.probes,
            # The key outlives its window and its break, then a fresh one is the same.
            repr(max(window, brk) * 2 + 60_000),
        )


class _BudgetArgs:
    def __init__(self, state: RedisState, budget: BudgetSettings) -> None:
        self._state = state
        rate = budget.min_per_second
        # A bucket refilled to the brim holds nothing a fresh one would not.
        ttl = budget.max_tokens / rate * 1000 + 60_000 if rate else 86_400_000
        self._budget_args = (repr(budget.max_tokens), repr(rate), repr(ttl))


class _RateArgs:
    def __init__(self, state: RedisState, policy: RateSettings) -> None:
        self._state = state
        self._rate_args = (repr(policy.interval * 1000), policy.burst)


def _circuit_reply(reply: Sequence[int]) -> CircuitReply:
    permit, state, previous, left, failures, calls = (int(value) for value in reply)
    return CircuitReply(
        None if permit < 0 else permit,
        _STATES[state],
        _STATES[previous],
        left / 1000,
        (failures, calls),
    )


def _wait(reply: Any) -> float:
    """Seconds to wait from a rate script's answer (0: go)."""
    return 0.0 if reply == 0 else float(reply) / 1000


# unasync: begin
class AsyncRedisCircuits(_CircuitArgs):
    """A breaker's circuits in Redis."""

    async def acquire(self, key: str, successes: int, generation: int) -> CircuitReply | None:
        reply = await self._state._async_caller.call(
            0,
            (self._state.key("breaker", key),),
            ("acquire", generation, 0, successes, *self._policy_args),
        )
        return None if reply is None else _circuit_reply(reply)

    async def record(self, key: str, permit: int, failed: bool) -> CircuitReply | None:
        reply = await self._state._async_caller.call(
            0,
            (self._state.key("breaker", key),),
            ("record", permit, int(failed), 0, *self._policy_args),
        )
        return None if reply is None else _circuit_reply(reply)

    async def release(self, key: str, permit: int) -> None:
        await self._state._async_caller.call(
            0, (self._state.key("breaker", key),), ("release", permit, 0, 0, *self._policy_args)
        )


class AsyncRedisBudgets(_BudgetArgs):
    """A retry budget's buckets in Redis."""

    async def settle(self, key: str, deposit: float, cost: float) -> bool | None:
        reply = await self._state._async_caller.call(
            1, (self._state.key("budget", key),), (repr(deposit), repr(cost), *self._budget_args)
        )
        return None if reply is None else bool(reply)


class AsyncRedisRates(_RateArgs):
    """A rate limiter's rates and pauses in Redis."""

    async def acquire(self, key: str) -> float | None:
        reply = await self._state._async_caller.call(
            2,
            (self._state.key("rate", key), self._state.key("pause", key)),
            ("acquire", *self._rate_args),
        )
        return None if reply is None else _wait(reply)

    async def pause(self, key: str, seconds: float) -> None:
        await self._state._async_caller.call(
            2,
            (self._state.key("rate", key), self._state.key("pause", key)),
            ("pause", repr(math.ceil(seconds * 1000))),
        )


# unasync: end
# unasync: generated from the block above by scripts/generate.py; do not edit
class RedisCircuits(_CircuitArgs):
    """A breaker's circuits in Redis."""

    def acquire(self, key: str, successes: int, generation: int) -> CircuitReply | None:
        reply = self._state._caller.call(
            0,
            (self._state.key("breaker", key),),
            ("acquire", generation, 0, successes, *self._policy_args),
        )
        return None if reply is None else _circuit_reply(reply)

    def record(self, key: str, permit: int, failed: bool) -> CircuitReply | None:
        reply = self._state._caller.call(
            0,
            (self._state.key("breaker", key),),
            ("record", permit, int(failed), 0, *self._policy_args),
        )
        return None if reply is None else _circuit_reply(reply)

    def release(self, key: str, permit: int) -> None:
        self._state._caller.call(
            0, (self._state.key("breaker", key),), ("release", permit, 0, 0, *self._policy_args)
        )


class RedisBudgets(_BudgetArgs):
    """A retry budget's buckets in Redis."""

    def settle(self, key: str, deposit: float, cost: float) -> bool | None:
        reply = self._state._caller.call(
            1, (self._state.key("budget", key),), (repr(deposit), repr(cost), *self._budget_args)
        )
        return None if reply is None else bool(reply)


class RedisRates(_RateArgs):
    """A rate limiter's rates and pauses in Redis."""

    def acquire(self, key: str) -> float | None:
        reply = self._state._caller.call(
            2,
            (self._state.key("rate", key), self._state.key("pause", key)),
            ("acquire", *self._rate_args),
        )
        return None if reply is None else _wait(reply)

    def pause(self, key: str, seconds: float) -> None:
        self._state._caller.call(
            2,
            (self._state.key("rate", key), self._state.key("pause", key)),
            ("pause", repr(math.ceil(seconds * 1000))),
        )


# unasync: generated end


def _safe_url(url: str) -> str:
    """The URL without its password, for logs and reprs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.partition(":")[0]
    return f"{scheme}://{user + '@' if user else ''}{host}"
