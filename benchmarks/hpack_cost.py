"""What a request ID costs h2's HPACK encoder, per request, by ID format.

    python benchmarks/hpack_cost.py              # every case, valgrind, 2000 requests
    python benchmarks/hpack_cost.py hex32 fixed  # some cases
    python benchmarks/hpack_cost.py --ids        # what making each ID costs (valgrind)

On HTTP/2, h2 hands every request's header list to one ``hpack.Encoder`` per
connection (pure Python). This encodes the list httpx sends through h2 (after
h2 drops ``connection``) ``n`` times with one encoder, as a connection does,
after a warm-up that brings the dynamic table to its steady state, and counts
CPU instructions with valgrind (the run with 0 requests subtracted, as in
``hotpath.counted``). The IDs are made before counting, so only the encoder
is measured; ``--ids`` counts making them.

Cases named ``hex32/...`` take today's ID apart: without Huffman coding, or
sent never-indexed (kept out of the dynamic table), which no ID format can
ask for through h2's public API, but which shows what each part costs.
"""

from __future__ import annotations

import base64
import itertools
import os
import sys
from collections.abc import Callable

import hpack
from _common import valgrind_instructions

HEADERS = [
    (b":method", b"GET"),
    (b":authority", b"api.example.com"),
    (b":scheme", b"https"),
    (b":path", b"/v1/things"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"user-agent", b"python-httpx/0.28.1"),
]
WARM_UP = 300


def _prefix_counter(width: int) -> Callable[[], str]:
    prefix = base64.b32encode(os.urandom(10)).decode().lower()[:width]
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter):x}"


def _b32(chars: int) -> Callable[[], str]:
    """``chars`` random characters of lowercase base32 (5 bits each)."""
    nbytes = (chars * 5 + 7) // 8
    return lambda: base64.b32encode(os.urandom(nbytes)).decode().lower()[:chars]


FORMATS: dict[str, Callable[[], Callable[[], str]]] = {
    "none": lambda: lambda: "",
    "fixed": lambda: lambda: "0af7651916cd43dd8448eb211c80319c",
    "hex32": lambda: lambda: os.urandom(16).hex(),
    "hex32/no-huffman": lambda: lambda: os.urandom(16).hex(),
    "hex32/never-indexed": lambda: lambda: os.urandom(16).hex(),
    "hex20": lambda: lambda: os.urandom(10).hex(),
    "hex16": lambda: lambda: os.urandom(8).hex(),
    **{f"b32-{n}": (lambda n=n: _b32(n)) for n in (8, 12, 16, 20, 26, 32, 48, 64, 128)},
    "b64url22": lambda: lambda: base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="),
    "prefix16+counter": lambda: _prefix_counter(16),
    "prefix10+counter": lambda: _prefix_counter(10),
    "uuid4": lambda: lambda: __import__("uuid").uuid4().hex,
    "uuid4-dashed": lambda: lambda: str(__import__("uuid").uuid4()),
    "hex32+traceparent": lambda: lambda: os.urandom(16).hex(),
    "fixed+traceparent": lambda: lambda: "0af7651916cd43dd8448eb211c80319c",
}


def header_lists(case: str, count: int) -> list[list[tuple[bytes, bytes]]]:
    new_id = FORMATS[case]()
    lists = []
    for _ in range(count):
        headers: list = list(HEADERS)
        if case != "none":
            value = new_id().encode()
            if case.endswith("never-indexed"):
                headers.append(hpack.NeverIndexedHeaderTuple(b"x-request-id", value))
            else:
                headers.append((b"x-request-id", value))
        if case.endswith("traceparent"):
            headers.append(
                (b"traceparent", f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01".encode())
            )
        lists.append(headers)
    return lists


def _child(case: str, n: int, count: int) -> None:
    import gc

    lists = header_lists(case, WARM_UP + n)
    huffman = not case.endswith("no-huffman")
    encoder = hpack.Encoder()
    encode = encoder.encode
    for headers in lists[:WARM_UP]:
        encode(headers, huffman=huffman)
    gc.collect()
    gc.freeze()
    for headers in lists[WARM_UP : WARM_UP + count]:
        encode(headers, huffman=huffman)


def _ids_child(case: str, count: int) -> None:
    new_id = FORMATS[case]()
    for _ in range(200):
        new_id()
    for _ in range(count):
        new_id()


def _count(args: list[str]) -> int:
    return valgrind_instructions(__file__, args)


def per_request(case: str, n: int) -> float:
    return (_count(["--child", case, str(n), str(n)]) - _count(["--child", case, str(n), "0"])) / n


def per_id(case: str, n: int) -> float:
    return (_count(["--ids-child", case, str(n)]) - _count(["--ids-child", case, "0"])) / n


def table_state(case: str, n: int = 1000) -> tuple[int, int]:
    """Dynamic-table entries and bytes after ``n`` requests."""
    encoder = hpack.Encoder()
    for headers in header_lists(case, n):
        encoder.encode(headers, huffman=not case.endswith("no-huffman"))
    table = encoder.header_table
    return len(table.dynamic_entries), table._current_size


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] == "--child":
        _child(args[1], int(args[2]), int(args[3]))
        return
    if args and args[0] == "--ids-child":
        _ids_child(args[1], int(args[2]))
        return
    if args and args[0] == "--ids":
        cases = args[1:] or [c for c in FORMATS if "/" not in c and "+t" not in c]
        for case in cases:
            print(f"{case:22} {per_id(case, 20_000):>9.0f} instructions per ID", flush=True)
        return
    n = 2000
    cases = args or list(FORMATS)
    base = None
    print(f"hpack.Encoder.encode, instructions per request (valgrind, {n} requests)")
    print(f"{'case':22} {'instr/req':>10} {'vs none':>9} {'entries':>8} {'example'}")
    for case in cases:
        value = per_request(case, n)
        if case == "none":
            base = value
        entries, _ = table_state(case)
        extra = "" if base is None else f"{value - base:+9.0f}"
        example = header_lists(case, 1)[0][-1][1].decode() if case != "none" else ""
        print(f"{case:22} {value:10.0f} {extra:>9} {entries:8d} {example}", flush=True)


if __name__ == "__main__":
    main()
