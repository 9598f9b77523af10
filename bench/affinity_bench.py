"""Conversation affinity through HAProxy: prompt-cache hit rate and time to first token.

Runs N real ``cria serve`` replicas behind HAProxy on 127.0.0.1 with deploy/haproxy/haproxy.cfg
(only its ports changed), twice per repeat, on fresh replicas each time:

  affinity     the documented config: ``balance hdr(X-Session-Id)`` + ``hash-type consistent``
  round-robin  the same config with ``balance roundrobin`` (what a plain load balancer does)

Each run is ``--users`` chat users x ``--turns`` turns, all users at once, each turn sending
the whole conversation with the user's ``X-Session-Id``. Printed per mode: the share of
prompt tokens served from cache (all turns, and turns 2+), p50 time to first token at turns
2+ and at the last turn, and how often a user's turn landed on another replica than its
previous one. Take numbers on a quiet machine (``cat /proc/loadavg``); each replica gets
``--threads`` threads, so replicas x threads should not exceed the cores.

    python bench/affinity_bench.py                      # 3 replicas, 6 users x 8 turns
    python bench/affinity_bench.py --turns 2 --tokens 8  # a quick check that it runs
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # the replica/proxy harness is the e2e tests' own

from tests.support.replicas import (  # noqa: E402
    Turn,
    chat_turn,
    documented_config,
    proxy_ports,
    render_config,
    running_haproxy,
    running_replicas,
)
from tests.support.server import real_model_env  # noqa: E402

TOPICS = ["the sea", "a city", "a forest", "the moon", "a river", "music", "a train", "winter"]
MODES = {"affinity": None, "round-robin": "roundrobin"}  # balance line: None = as documented


@dataclass
class Result:
    """One run's turns, per user."""

    turns: list[list[Turn]]

    def hit_rate(self, first_turn: int = 1) -> float:
        chosen = [t for user in self.turns for t in user[first_turn - 1 :]]
        prompt = sum(t.prompt_tokens for t in chosen)
        return sum(t.cached_tokens for t in chosen) / prompt if prompt else 0.0

    def p50_ttft(self, first_turn: int, last_turn: int | None = None) -> float:
        values = [
            t.ttft_s
            for user in self.turns
            for t in user[first_turn - 1 : last_turn]
            if t.ttft_s is not None
        ]
        return statistics.median(values) if values else float("nan")

    def switches(self) -> float:
        moves = [a.replica != b.replica for user in self.turns for a, b in itertools.pairwise(user)]
        return sum(moves) / len(moves) if moves else 0.0

    def failures(self) -> int:
        return sum(t.status != 200 for user in self.turns for t in user)


async def user_run(client: httpx.AsyncClient, index: int, args: argparse.Namespace) -> list[Turn]:
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "You are a helpful assistant. Answer in a few sentences."}
    ]
    turns = []
    for n in range(1, args.turns + 1):
        topic = TOPICS[index % len(TOPICS)]
        messages.append({"role": "user", "content": f"Tell me more about {topic} (part {n})."})
        turn = await chat_turn(
            client,
            messages,
            max_tokens=args.tokens,
            headers={"X-Session-Id": f"bench-user-{index}"},
            extra={"temperature": 0, "seed": index},
        )
        messages.append({"role": "assistant", "content": turn.text})
        turns.append(turn)
    return turns


async def chat_run(base_url: str, args: argparse.Namespace) -> Result:
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        users = await asyncio.gather(*(user_run(client, i, args) for i in range(args.users)))
    return Result(list(users))


def run_mode(mode: str, args: argparse.Namespace) -> Result:
    env = real_model_env(
        args.model,
        parallel=str(args.parallel),
        ctx_size=str(args.ctx),
        threads=str(args.threads),
        log_level="warning",
    )
    config = documented_config()
    with running_replicas(env, args.replicas) as servers:
        text = render_config(config, proxy_ports(config, servers), balance=MODES[mode])
        with running_haproxy(text) as proxy:
            return asyncio.run(chat_run(proxy.base_url, args))


def report(results: dict[str, list[Result]], args: argparse.Namespace) -> None:
    print(
        f"{args.replicas} replicas x {args.parallel} slots, {args.users} users x {args.turns} "
        f"turns, {args.tokens} tokens per reply, {args.threads} thread(s) per replica"
    )
    print(
        f"{'mode':<12} {'hit all':>8} {'hit 2+':>8} {'p50 TTFT 2+':>12} "
        f"{'p50 TTFT last':>14} {'moved':>6} {'failed':>7}"
    )
    for mode, runs in results.items():
        for run in runs:
            print(
                f"{mode:<12} {run.hit_rate():>8.1%} {run.hit_rate(2):>8.1%} "
                f"{run.p50_ttft(2) * 1000:>10.0f}ms {run.p50_ttft(args.turns) * 1000:>12.0f}ms "
                f"{run.switches():>6.0%} {run.failures():>7d}"
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: smollm2)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens per reply")
    parser.add_argument("--parallel", type=int, default=4, help="slots per replica")
    parser.add_argument("--ctx", type=int, default=2048, help="context tokens per slot")
    parser.add_argument("--threads", type=int, default=1, help="threads per replica")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if args.model is None:
        from app.models.registry import resolve_model
        from app.settings import DEFAULT_MODEL, DEFAULT_MODELS_DIR

        args.model = resolve_model(DEFAULT_MODEL, DEFAULT_MODELS_DIR)
    return args


def main() -> None:
    args = parse_args()
    results: dict[str, list[Result]] = {mode: [] for mode in MODES}
    for _ in range(args.repeat):
        for mode in MODES:  # alternating, on fresh replicas each time
            results[mode].append(run_mode(mode, args))
    report(results, args)


if __name__ == "__main__":
    main()
