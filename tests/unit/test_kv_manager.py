"""The KV manager: slot scoring, the host-RAM prompt cache, and the scheduler using them."""

from __future__ import annotations

import pytest

from app.engine.kv import SlotView, choose_slot
from app.engine.prompt_cache import HostPromptCache, common_prefix_len
from app.engine.types import FinishReason, SamplingParams
from tests.support.fake_backend import FakeBackend
from tests.unit.test_scheduler import Harness, prompt_of

HEADER = prompt_of(8, 200)  # what every prompt of one chat template starts with


def view(tokens: list[int], last_used: int = 0) -> SlotView:
    return SlotView(tokens, last_used)


def params(max_tokens: int = 4) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens)


# --- choose_slot: a pure function -------------------------------------------------------------
def test_the_slot_holding_most_of_the_prompt_wins() -> None:
    chat_a = HEADER + prompt_of(40, 1)
    chat_b = HEADER + prompt_of(30, 2)
    free = [view(chat_b, 1), view(chat_a, 2), view([], 0)]
    assert choose_slot(free, chat_a + prompt_of(5, 3), use_cache=True) == (1, len(chat_a))


def test_a_long_cache_is_not_wiped_for_the_shared_template_header() -> None:
    long_chat = HEADER + prompt_of(200, 1)
    new_chat = HEADER + prompt_of(10, 2)
    # Only the header matches: the empty slot is taken and the long conversation survives.
    assert choose_slot([view(long_chat, 5), view([], 0)], new_chat, use_cache=True) == (1, 0)


def test_without_a_match_or_an_empty_slot_the_least_recently_used_slot_is_taken() -> None:
    free = [view(HEADER + prompt_of(50, 1), 7), view(HEADER + prompt_of(50, 2), 3)]
    # Its conversation gives way, but the header it shares with the prompt stays.
    assert choose_slot(free, HEADER + prompt_of(9, 3), use_cache=True) == (1, len(HEADER))


def test_similarity_threshold_decides_whether_a_partial_match_counts() -> None:
    cached = prompt_of(100, 1)
    prompt = cached[:60] + [1000 + i for i in range(10)]  # reuses 60% of that cache
    assert choose_slot([view(cached), view([])], prompt, use_cache=True) == (0, 60)
    strict = choose_slot([view(cached), view([])], prompt, use_cache=True, min_similarity=0.7)
    assert strict == (1, 0)


def test_at_least_the_last_prompt_token_is_evaluated_again() -> None:
    prompt = prompt_of(20)
    assert choose_slot([view(prompt)], prompt, use_cache=True) == (0, 19)


def test_cache_off_takes_an_empty_slot_first() -> None:
    prompt = prompt_of(20)
    assert choose_slot([view(prompt, 9), view([], 1)], prompt, use_cache=False) == (1, 0)


def test_no_free_slot_is_an_error() -> None:
    with pytest.raises(ValueError, match="no free slot"):
        choose_slot([], prompt_of(3), use_cache=True)


def test_common_prefix_len() -> None:
    assert common_prefix_len([1, 2, 3, 4], [1, 2, 9]) == 2
    assert common_prefix_len([1, 2], [1, 2, 3]) == 2
    assert common_prefix_len([], [1]) == 0
    assert common_prefix_len((5, 6, 7), [5, 6, 7]) == 3


# --- HostPromptCache ----------------------------------------------------------------------------
def test_host_cache_finds_the_longest_saved_prefix() -> None:
    cache = HostPromptCache(1000)
    cache.put(prompt_of(10, 1), b"a" * 10)
    cache.put(prompt_of(20, 2), b"b" * 20)
    entry, n = cache.best([*prompt_of(20, 2), 7, 7], limit=21)
    assert entry is not None
    assert (entry.data, n) == (b"b" * 20, 20)
    assert cache.best([7777, 7778], limit=1) == (None, 0)
    assert cache.covers(prompt_of(15, 2))
    assert not cache.covers(prompt_of(21, 2))


def test_host_cache_is_bounded_by_bytes_least_recently_used_first_out() -> None:
    cache = HostPromptCache(100)
    cache.put(prompt_of(5, 1), b"x" * 40)
    cache.put(prompt_of(5, 2), b"y" * 40)
    first, _ = cache.best(prompt_of(5, 1), limit=4)
    assert first is not None
    cache.record_restore(first, 4)  # a restore refreshes the first entry
    cache.put(prompt_of(5, 3), b"z" * 40)  # over 100 bytes: the untouched second one goes
    assert len(cache) == 2
    assert cache.bytes_used == 80
    assert cache.best(prompt_of(5, 2), limit=4) == (None, 0)
    cache.put(prompt_of(5, 4), b"w" * 101)  # larger than the whole cache: not kept
    assert len(cache) == 2


def test_a_lookup_the_caller_turns_down_does_not_refresh_the_entry() -> None:
    cache = HostPromptCache(100)
    cache.put(prompt_of(5, 1), b"x" * 40)
    cache.put(prompt_of(5, 2), b"y" * 40)
    cache.best(prompt_of(5, 1), limit=4)  # found, but not restored
    cache.put(prompt_of(5, 3), b"z" * 40)  # the oldest entry goes: still the first one
    assert cache.best(prompt_of(5, 1), limit=4) == (None, 0)
    assert cache.best(prompt_of(5, 2), limit=4)[1] == 4


def test_host_cache_drops_an_entry_that_a_longer_save_extends() -> None:
    cache = HostPromptCache(1000)
    cache.put(prompt_of(10, 1), b"a" * 10)
    cache.put(prompt_of(10, 1) + prompt_of(5, 2), b"b" * 15)
    assert len(cache) == 1
    assert cache.bytes_used == 15


# --- the scheduler with the KV manager ----------------------------------------------------------
def test_an_evicted_conversation_is_restored_from_host_ram_with_the_same_output() -> None:
    texts = {}
    for host in (True, False):
        backend = FakeBackend(n_slots=1, n_ctx_slot=256, n_batch=64)
        h = Harness(backend, host_cache=HostPromptCache(1 << 20) if host else None)
        chat_a = HEADER + prompt_of(40, 1)
        h.submit("a1", chat_a, params())
        h.run()
        h.submit("b1", HEADER + prompt_of(30, 2), params())  # evicts chat A from the one slot
        h.run()
        h.submit("a2", chat_a + h.tokens("a1") + prompt_of(6, 3), params())
        h.run()
        final = h.final("a2")
        assert final is not None
        assert final.usage is not None
        if host:
            assert backend.saves == [0, 0]  # chat A when B came, chat B when A came back
            assert backend.loads == [0]
            # chat A's prompt and the 3 reply tokens that were fed came back from RAM
            assert final.usage.cached_prompt_tokens == len(chat_a) + 3
            stats = h.sched.stats().host_cache
            assert stats is not None
            assert (stats.hits, stats.restored_tokens) == (1, len(chat_a) + 3)
        else:
            # B's cache shares only the template header: that much is kept
            assert final.usage.cached_prompt_tokens == len(HEADER)
        texts[host] = h.text("a2")
    assert texts[True] == texts[False]


SYSTEM = prompt_of(32, 300)  # a system prompt every chat of an application starts with


def test_a_new_chat_copies_the_shared_system_prompt_and_the_old_chat_keeps_its_slot() -> None:
    texts = {}
    for cache in (True, False):
        backend = FakeBackend(n_slots=2, n_ctx_slot=256, n_batch=64)
        h = Harness(backend, host_cache=HostPromptCache(1 << 20) if cache else None)
        old = SYSTEM + prompt_of(60, 1)  # shares 32 of 96 cells: below the similarity rule
        h.submit("old", old, params())
        h.run()
        new = SYSTEM + prompt_of(10, 2)
        h.submit("new", new, params())
        h.run()
        final = h.final("new")
        assert final is not None
        assert final.usage is not None
        if cache:
            # The empty slot got the system prompt's cells from the other slot (a copy,
            # not a prefill: the one save is the copy reading slot 0), and the old chat stayed.
            assert final.usage.cached_prompt_tokens == len(SYSTEM)
            assert backend.saves == [0]
            assert backend.loads == [1]
            assert backend.kv[0][: len(old)] == old
        texts[cache] = h.text("new")
        h.submit("old2", old + h.tokens("old")[:-1] + prompt_of(3, 3), params())
        h.run()
        again = h.final("old2")
        assert again is not None
        assert again.usage is not None
        if cache:
            assert again.usage.cached_prompt_tokens == len(old) + 3  # its slot was kept
    assert texts[True] == texts[False]  # the copied cells are the same as prefilled ones


def test_a_long_conversation_is_not_copied_for_a_short_shared_header() -> None:
    backend = FakeBackend(n_slots=2, n_ctx_slot=1024, n_batch=256)
    h = Harness(backend, host_cache=HostPromptCache(1 << 22))
    h.submit("long", HEADER + prompt_of(600, 1), params())  # 612 cells vs 8 saved tokens
    h.run()
    h.submit("new", HEADER + prompt_of(10, 2), params())
    h.run()
    final = h.final("new")
    assert final is not None
    assert final.usage is not None
    assert final.usage.cached_prompt_tokens == 0
    assert backend.saves == []
    assert backend.loads == []


def test_cancelled_stream_keeps_its_cache_for_the_next_turn() -> None:
    backend = FakeBackend(n_slots=1, n_ctx_slot=128)
    h = Harness(backend)
    prompt = prompt_of(20)
    h.submit("t1", prompt, params(20))
    for _ in range(5):
        h.sched.step()
    h.sched.abort("t1")
    h.run()
    final = h.final("t1")
    assert final is not None
    assert final.finish_reason is FinishReason.CANCELLED
    fed = h.tokens("t1")[:-1]  # the last sampled token was never fed
    h.submit("t2", prompt + fed + prompt_of(4, 9), params(2))
    h.run()
    nxt = h.final("t2")
    assert nxt is not None
    assert nxt.usage is not None
    assert nxt.usage.cached_prompt_tokens == len(prompt) + len(fed)


def test_an_error_drops_the_cache() -> None:
    backend = FakeBackend(n_slots=1)
    h = Harness(backend)
    h.submit("a", prompt_of(6), params(3))
    h.sched.step()

    def broken(_: int) -> int:
        raise RuntimeError("sampler exploded")

    backend.samplers[0].sample = broken  # type: ignore[method-assign]
    h.run()
    final = h.final("a")
    assert final is not None
    assert final.finish_reason is FinishReason.ERROR
    assert backend.kv[0] == []
    assert h.sched.kv.slots[0].tokens == []


def test_a_conversation_after_a_long_shared_system_prompt_is_saved_when_its_slot_is_taken() -> None:
    backend = FakeBackend(n_slots=1, n_ctx_slot=256, n_batch=64)
    h = Harness(backend, host_cache=HostPromptCache(1 << 20))
    system = [1000 + i for i in range(30)]
    chat_a = [*system, *[2000 + i for i in range(20)]]
    h.submit("a1", chat_a, params())
    h.run()
    # B shares the 30-token system prompt: it reuses the slot's prefix, so A's turn is lost.
    h.submit("b1", [*system, *[3000 + i for i in range(10)]], params())
    h.run()
    b = h.final("b1")
    assert b is not None
    assert b.usage is not None
    assert b.usage.cached_prompt_tokens == 30
    h.submit("a2", [*chat_a, *h.tokens("a1"), 4000, 4001], params())
    h.run()
    a2 = h.final("a2")
    assert a2 is not None
    assert a2.usage is not None
    assert a2.usage.cached_prompt_tokens == len(chat_a) + 3  # restored from host RAM


def test_a_saved_conversation_is_not_restored_for_a_stranger_sharing_the_header() -> None:
    backend = FakeBackend(n_slots=1, n_ctx_slot=256, n_batch=64)
    cache = HostPromptCache(1 << 20)
    h = Harness(backend, host_cache=cache)
    header = [1000 + i for i in range(8)]
    h.submit("a", [*header, *[2000 + i for i in range(60)]], params())
    h.run()
    h.submit("b", [*header, *[3000 + i for i in range(60)]], params())  # evicts A (saved)
    h.run()
    h.submit("c", [*header, *[5000 + i for i in range(10)]], params())  # shares only the header
    h.run()
    assert cache.hits == 0
    assert backend.loads == []
