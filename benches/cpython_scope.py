"""CPython's asynccontextmanager on the same work as benches/vs_cpython.rs:
a trivial enter/exit around a trivial body, N scopes in one asyncio loop.
Prints the best of 3 runs in ns per scope."""
import asyncio
import sys
import time
from contextlib import asynccontextmanager

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000


class Resource:
    def __init__(self):
        self.value = 0
        self.exits = 0


@asynccontextmanager
async def managed(r):
    r.value += 1
    try:
        yield r
    finally:
        r.exits += 1


async def scopes(n):
    r = Resource()
    for _ in range(n):
        async with managed(r) as v:
            v.value *= 1
    assert r.exits == n


def main():
    best = min(timed() for _ in range(3))
    print(f"{best * 1e9 / N:.1f}")


def timed():
    start = time.perf_counter()
    asyncio.run(scopes(N))
    return time.perf_counter() - start


main()
