"""The worker pipe's packing (events, errors) and the crash policy."""

from __future__ import annotations

from app.engine import ipc
from app.engine.restart import CrashPolicy
from app.engine.types import FinishReason, TokenEvent, TokenLogprob, Usage
from app.errors import ContextLengthExceeded, EngineError, InvalidRequest, Overloaded


def test_plain_events_travel_as_tuples_and_come_back_equal() -> None:
    plain = TokenEvent("r1", "hi", 42)
    assert ipc.pack_event(plain) == ("hi", 42)
    assert ipc.unpack_event("r1", ipc.pack_event(plain)) == plain


def test_final_and_logprob_events_travel_whole() -> None:
    final = TokenEvent("r1", "!", 7, FinishReason.STOP, Usage(3, 0, 2))
    logged = TokenEvent("r1", "a", 5, logprob=TokenLogprob(b"a", -0.5))
    for event in (final, logged):
        assert ipc.pack_event(event) is event
        assert ipc.unpack_event("r1", event) == event


def test_a_step_item_says_whether_the_request_ended() -> None:
    events = [
        TokenEvent("r", "a", 1),
        TokenEvent("r", "", None, FinishReason.LENGTH, Usage(1, 0, 1)),
    ]
    rid, packed, final = ipc.pack_step("r", events)
    assert (rid, final) == ("r", True)
    assert [ipc.unpack_event("r", p) for p in packed] == events
    assert ipc.pack_step("r", events[:1])[2] is False


def test_errors_come_back_as_their_class_with_their_fields() -> None:
    too_long = ipc.unpack_error(ipc.pack_error(ContextLengthExceeded(90, 64, param="prompt")))
    assert isinstance(too_long, ContextLengthExceeded)
    assert (too_long.prompt_tokens, too_long.limit, too_long.param) == (90, 64, "prompt")
    busy = ipc.unpack_error(ipc.pack_error(Overloaded(5, 4, retry_after_s=3)))
    assert isinstance(busy, Overloaded)
    assert busy.retry_after_s == 3
    assert "limit 4" in busy.message
    bad = ipc.unpack_error(ipc.pack_error(InvalidRequest("no", param="x")))
    assert type(bad) is InvalidRequest
    assert bad.param == "x"


def test_unknown_errors_become_engine_errors() -> None:
    other = ipc.unpack_error(ipc.pack_error(ValueError("boom")))
    assert type(other) is EngineError
    assert "ValueError: boom" in other.message
    forged = ipc.unpack_error(("print", "x", None, {}))
    assert type(forged) is EngineError


def test_crash_policy_backs_off_then_gives_up_within_the_window() -> None:
    policy = CrashPolicy(max_crashes=3, window_s=60, first_delay_s=0.5, max_delay_s=8)
    assert policy.crashed(0.0) == 0.5
    assert policy.crashed(1.0) == 1.0
    assert policy.crashed(2.0) is None
    assert policy.recent == 3


def test_crashes_outside_the_window_are_forgotten() -> None:
    policy = CrashPolicy(max_crashes=2, window_s=10, first_delay_s=1, max_delay_s=8)
    assert policy.crashed(0.0) == 1
    assert policy.crashed(100.0) == 1
    assert policy.crashed(200.0) == 1
