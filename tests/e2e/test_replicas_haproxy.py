"""Three real ``cria serve`` replicas behind a real HAProxy running deploy/haproxy/haproxy.cfg.

Only the config's ports change. Six chat users (four send ``X-Session-Id``, one OpenAI's
``prompt_cache_key``, one ``user``) take turns, each turn carrying the whole conversation:
- every conversation stays on one replica (HAProxy's ``X-Cria-Replica``), the server echoes
  the user's key in ``X-Session-Id``, every later turn is served from the prompt cache, and
  each replica's /metrics counts exactly the cached tokens its users were told about;
- SIGTERM to a replica while its streams run: they finish (or end with the drain's error
  event), a request sent to it while it drains is retried on another replica, its users' next
  turns move to the others while every other user stays where it was, it exits 0, and no
  request fails;
- SIGKILL to another: the health check marks it DOWN within what its settings allow, and
  the next turns of every user succeed on the last replica.
HAProxy missing is a failure, not a skip: ``make test`` installs it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_api_metrics import samples
from tests.support.replicas import (
    Proxy,
    Turn,
    chat_turn,
    check_timing,
    documented_config,
    proxy_ports,
    render_config,
    replica_names,
    running_haproxy,
    running_replicas,
)
from tests.support.server import ServerProcess, real_model_env

TOPICS = ["the sea", "a city", "a forest", "the moon", "a river", "music"]
MODES = ["header", "header", "header", "header", "prompt_cache_key", "user"]
SHORT, LONG = 8, 40  # max_tokens of a turn / of the turns running when the drain starts
SCHEDULING_SLACK_S = 3.0  # a busy machine may run HAProxy's check timer a little late


@dataclass
class User:
    """One chat user: a key, how it sends it, and the conversation so far."""

    index: int
    mode: str
    messages: list[dict[str, str]] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"conversation-{self.index}"

    def routing(self) -> tuple[dict[str, str], dict[str, Any]]:
        if self.mode == "header":
            return {"X-Session-Id": self.key}, {}
        return {}, {self.mode: self.key}

    async def turn(
        self, client: httpx.AsyncClient, max_tokens: int = SHORT, on_first: Any = None
    ) -> Turn:
        n = len(self.turns) + 1
        self.messages.append(
            {"role": "user", "content": f"Turn {n}: a line about {TOPICS[self.index]}."}
        )
        headers, extra = self.routing()
        turn = await chat_turn(
            client,
            self.messages,
            max_tokens=max_tokens,
            headers=headers,
            extra=extra,
            on_first_token=on_first,
        )
        self.messages.append({"role": "assistant", "content": turn.text})
        self.turns.append(turn)
        return turn


@pytest.fixture(scope="module")
def replicas(model_path: Path) -> Iterator[list[ServerProcess]]:
    env = real_model_env(model_path, parallel="4", ctx_size="512", shutdown_timeout="30")
    with running_replicas(env, 3) as servers:
        yield servers


@pytest.fixture(scope="module")
def proxy(replicas: list[ServerProcess]) -> Iterator[Proxy]:
    config = documented_config()
    with running_haproxy(render_config(config, proxy_ports(config, replicas))) as running:
        yield running


def assert_served(turn: Turn, user: User, endings: tuple[str, ...] = ("stop", "length")) -> None:
    assert turn.status == 200, (user.key, turn)
    assert turn.echoed_key == user.key
    assert turn.events[-1] == "[DONE]"
    assert turn.ending in endings, (user.key, turn.ending)


async def rounds(client: httpx.AsyncClient, users: list[User], count: int) -> None:
    for _ in range(count):
        await asyncio.gather(*(user.turn(client) for user in users))


def cached_tokens_by_replica(users: list[User]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for user in users:
        for turn in user.turns:
            assert turn.replica is not None
            totals[turn.replica] = totals.get(turn.replica, 0) + turn.cached_tokens
    return totals


def check_affinity(users: list[User], by_name: dict[str, ServerProcess]) -> dict[str, str]:
    """Each user on one replica, every later turn cached; each replica's /metrics agrees."""
    home = {}
    for user in users:
        for turn in user.turns:
            assert_served(turn, user)
        assert len({turn.replica for turn in user.turns}) == 1, [t.replica for t in user.turns]
        assert all(turn.cached_tokens > 0 for turn in user.turns[1:]), user.key
        assert user.turns[0].replica is not None
        home[user.key] = user.turns[0].replica
    for name, cached in cached_tokens_by_replica(users).items():
        metrics = samples(httpx.get(f"{by_name[name].base_url}/metrics", timeout=10).text)
        assert metrics["cria_prompt_tokens_cached_total"] == cached, name
    return home


async def drain_mid_run(
    client: httpx.AsyncClient, users: list[User], victim: ServerProcess, victim_name: str
) -> tuple[Turn, bool]:
    """One round where the victim's users stream long replies; SIGTERM at their first token,
    then (once its /health says draining) one more request for a conversation it holds.

    Also returns whether the victim's streams were still running when that request was sent
    (then the victim itself must have refused it; otherwise it may have exited already).
    """
    home_users = [u for u in users if u.turns[-1].replica == victim_name]
    signalled = asyncio.Event()

    def terminate() -> None:
        if not signalled.is_set():
            victim.process.send_signal(signal.SIGTERM)
            signalled.set()

    streams = [
        asyncio.create_task(u.turn(client, LONG, terminate) if u in home_users else u.turn(client))
        for u in users
    ]
    victim_streams = [task for task, u in zip(streams, users, strict=True) if u in home_users]
    await signalled.wait()
    async with httpx.AsyncClient(base_url=victim.base_url, timeout=10) as direct:
        # The drain starts a moment after the signal; no event to wait on but /health.
        while (await direct.get("/health")).status_code == 200:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    while_streaming = not all(task.done() for task in victim_streams)
    headers, extra = home_users[0].routing()
    question = [{"role": "user", "content": "A new question while it drains."}]
    late = await chat_turn(client, question, max_tokens=SHORT, headers=headers, extra=extra)
    await asyncio.gather(*streams)
    return late, while_streaming


async def test_conversations_stay_put_and_survive_a_drain_and_a_crash(
    replicas: list[ServerProcess], proxy: Proxy
) -> None:
    config = documented_config()
    by_name = dict(zip(replica_names(config), replicas, strict=True))
    users = [User(i, mode) for i, mode in enumerate(MODES)]
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=120) as client:
        await rounds(client, users, 3)
        home = check_affinity(users, by_name)

        victim_name = home[users[0].key]
        victim = by_name[victim_name]
        late, while_streaming = await drain_mid_run(client, users, victim, victim_name)
        for user in users:
            turn = user.turns[-1]
            assert_served(turn, user, ("stop", "length", "server_shutting_down"))
            assert turn.replica == home[user.key]  # running streams were not cut or moved
        assert late.status == 200
        assert late.replica != victim_name
        assert victim.process.wait(timeout=60) == 0
        if while_streaming:  # it reached the victim, which refused it: HAProxy retried it
            assert "POST /{api_version}/chat/completions 503" in victim.log()
        await rounds(client, users, 1)
        for user in users:
            assert_served(user.turns[-1], user)
            moved = user.turns[-1].replica
            if home[user.key] == victim_name:
                assert moved != victim_name
            else:
                assert moved == home[user.key]  # consistent hashing: only its users moved
            home[user.key] = moved or ""
        proxy.wait_for(victim_name, "DOWN", timeout_s=10)

        crashed_name = next(name for name in home.values() if name != victim_name)
        crashed = by_name[crashed_name]
        inter, fall, check_timeout = check_timing(config)
        crashed.process.kill()
        allowed = (fall + 1) * inter + check_timeout + SCHEDULING_SLACK_S
        down_after = proxy.wait_for(crashed_name, "DOWN", timeout_s=allowed)
        assert down_after <= allowed
        await rounds(client, users, 1)
        survivor = {user.turns[-1].replica for user in users}
        assert len(survivor) == 1
        assert survivor.isdisjoint({victim_name, crashed_name})
        for user in users:
            assert_served(user.turns[-1], user)
    assert proxy.process.poll() is None, proxy.log()
