"""IPC transports for the engine worker: step messages of N streams, child -> parent.

Measures what the worker design pays per engine step: one message carrying every stream's
token events of that step (the shape ``app.engine.worker`` sends), pickled, written, read
and unpickled. Prints messages/s and µs per step for multiprocessing's Pipe (spawn context)
and, when ``pyzmq`` is importable, a zmq PAIR socket over ipc://.

    .venv/bin/python bench/ipc_bench.py --streams 8 --steps 20000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import tempfile
import time
from multiprocessing.connection import Connection
from typing import Any


def _step(streams: int, i: int) -> tuple[str, list[tuple[str, list[tuple[str, int]], bool]]]:
    return ("e", [(f"req-{s:04d}", [(" word", 1000 + i % 500)], False) for s in range(streams)])


def _pipe_child(conn: Connection, streams: int, steps: int) -> None:
    for i in range(steps):
        conn.send(_step(streams, i))
    conn.send(("end", []))
    conn.close()


def bench_pipe(streams: int, steps: int) -> float:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_pipe_child, args=(child, streams, steps))
    proc.start()
    child.close()
    first = parent.recv()  # the child is up: time from here
    t0 = time.perf_counter()
    n = 1
    assert first[0] == "e"
    while parent.recv()[0] != "end":
        n += 1
    elapsed = time.perf_counter() - t0
    proc.join()
    return elapsed / n


def _zmq_child(address: str, streams: int, steps: int) -> None:
    import zmq

    sock = zmq.Context().socket(zmq.PAIR)
    sock.connect(address)
    for i in range(steps):
        sock.send(pickle.dumps(_step(streams, i), protocol=5))
    sock.send(pickle.dumps(("end", []), protocol=5))
    sock.close(linger=1000)


def bench_zmq(streams: int, steps: int) -> float | None:
    try:
        import zmq
    except ImportError:
        return None
    address = f"ipc://{tempfile.mkdtemp()}/bench.sock"
    sock: Any = zmq.Context().socket(zmq.PAIR)
    sock.bind(address)
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_zmq_child, args=(address, streams, steps))
    proc.start()
    pickle.loads(sock.recv())
    t0 = time.perf_counter()
    n = 1
    while pickle.loads(sock.recv())[0] != "end":
        n += 1
    elapsed = time.perf_counter() - t0
    proc.join()
    sock.close()
    return elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20000)
    args = parser.parse_args()
    size = len(pickle.dumps(_step(args.streams, 0)))
    print(f"load {os.getloadavg()[0]:.2f}; {args.streams} streams, {size} bytes per step message")
    for name, fn in (("multiprocessing Pipe", bench_pipe), ("pyzmq PAIR ipc", bench_zmq)):
        per = fn(args.streams, args.steps)
        if per is None:
            print(f"{name:22s} not installed")
            continue
        print(f"{name:22s} {1 / per:10.0f} messages/s  {per * 1e6:7.1f} µs per step")


if __name__ == "__main__":
    main()
