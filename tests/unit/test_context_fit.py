"""Fitting a long chat into the context: oldest turns go first, the last user turn stays."""

from __future__ import annotations

from collections.abc import Mapping

from app.serving.context import fit_messages, reply_room

Message = Mapping[str, str]


def chat(turns: int, *, system: bool = True) -> list[Message]:
    messages: list[Message] = [{"role": "system", "content": "sys"}] if system else []
    for i in range(turns):
        messages.append({"role": "user", "content": f"question {i}"})
        messages.append({"role": "assistant", "content": f"answer {i}"})
    messages.append({"role": "user", "content": "last"})
    return messages


def words(messages: list[Message]) -> int:
    """A stand-in token count: 10 tokens a message."""
    return 10 * len(messages)


def content(message: Message) -> int:
    """A stand-in content count: 2 tokens (the other 8 of a message are its scaffolding)."""
    return 2


def test_a_chat_that_fits_is_untouched() -> None:
    messages = chat(3)
    fitted = fit_messages(messages, prompt_tokens=words, message_tokens=content, n_ctx=200, room=50)
    assert fitted.messages == messages
    assert fitted.dropped == 0


def test_oldest_whole_turns_go_first_and_the_system_message_stays() -> None:
    messages = chat(10)  # 22 messages: 220 "tokens"
    fitted = fit_messages(messages, prompt_tokens=words, message_tokens=content, n_ctx=150, room=50)
    assert words(fitted.messages) + 50 <= 150
    assert fitted.messages[0] == {"role": "system", "content": "sys"}
    assert fitted.messages[1]["role"] == "user"  # whole turns: never a dangling answer
    assert fitted.messages[-1] == {"role": "user", "content": "last"}
    assert fitted.messages[1:] == messages[-len(fitted.messages) + 1 :]
    # 12 messages had to go; the cut is rounded up to a block of 150 // 4 = 37 "tokens"
    assert fitted.dropped == 16


def test_the_cut_stays_put_while_the_chat_grows() -> None:
    """Later turns keep the same first kept message, so their prompt prefix is cached."""
    firsts = []
    for turns in range(10, 16):
        fitted = fit_messages(
            chat(turns), prompt_tokens=words, message_tokens=content, n_ctx=300, room=50
        )
        assert words(fitted.messages) + 50 <= 300
        firsts.append(fitted.messages[1]["content"])
    # Without the block rounding, the first kept question would move every turn.
    assert len(set(firsts)) < len(firsts) - 2


def test_the_last_user_turn_is_kept_even_with_less_room_than_asked() -> None:
    messages = chat(5)
    fitted = fit_messages(messages, prompt_tokens=words, message_tokens=content, n_ctx=40, room=30)
    assert fitted.messages == [messages[0], messages[-1]]


def test_a_history_without_a_system_message() -> None:
    messages = chat(6, system=False)
    fitted = fit_messages(messages, prompt_tokens=words, message_tokens=content, n_ctx=100, room=40)
    assert fitted.messages[0]["role"] == "user"
    assert fitted.messages == messages[-len(fitted.messages) :]
    assert words(fitted.messages) + 40 <= 100


def test_reply_room() -> None:
    assert reply_room(None, 2048) == 512
    assert reply_room(100, 2048) == 100
    assert reply_room(4000, 2048) == 512


def test_a_long_chat_is_fitted_with_a_few_renders_not_a_bisection() -> None:
    # Issue 17 row 4: 30,000 one-character turns were rendered and tokenized whole ~32
    # times. Now: one render of the chat, one count per message, then at most 1 + MAX_CHECKS
    # renders of the kept window.
    from app.serving.context import MAX_CHECKS

    renders: list[int] = []
    counts: list[int] = []

    def prompt_tokens(kept: list[Message]) -> int:
        renders.append(len(kept))
        return words(kept)

    def message_tokens(message: Message) -> int:
        counts.append(1)
        return 2

    messages = chat(15_000)
    fitted = fit_messages(
        messages, prompt_tokens=prompt_tokens, message_tokens=message_tokens, n_ctx=2048, room=512
    )
    assert words(fitted.messages) + 512 <= 2048
    assert len(renders) <= 2 + MAX_CHECKS
    assert renders[0] == len(messages)
    assert len(counts) == len(messages)


def test_an_estimate_that_undercounts_still_ends_with_a_window_that_fits() -> None:
    # The real prompt costs more than the per-message counts say (scaffolding spread
    # unevenly): the check after the estimate drops more turns until the window fits.
    def lumpy(kept: list[Message]) -> int:
        return sum(30 if m["role"] == "user" else 2 for m in kept)

    messages = chat(40)
    fitted = fit_messages(
        messages, prompt_tokens=lumpy, message_tokens=lambda m: 1, n_ctx=400, room=50
    )
    assert lumpy(fitted.messages) + 50 <= 400
    assert fitted.messages[-1] == {"role": "user", "content": "last"}
