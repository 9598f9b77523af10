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


def test_a_chat_that_fits_is_untouched() -> None:
    messages = chat(3)
    fitted = fit_messages(messages, prompt_tokens=words, n_ctx=200, room=50)
    assert fitted.messages == messages
    assert fitted.dropped == 0


def test_oldest_whole_turns_go_first_and_the_system_message_stays() -> None:
    messages = chat(10)  # 22 messages: 220 "tokens"
    fitted = fit_messages(messages, prompt_tokens=words, n_ctx=150, room=50)
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
        fitted = fit_messages(chat(turns), prompt_tokens=words, n_ctx=300, room=50)
        assert words(fitted.messages) + 50 <= 300
        firsts.append(fitted.messages[1]["content"])
    # Without the block rounding, the first kept question would move every turn.
    assert len(set(firsts)) < len(firsts) - 2


def test_the_last_user_turn_is_kept_even_with_less_room_than_asked() -> None:
    messages = chat(5)
    fitted = fit_messages(messages, prompt_tokens=words, n_ctx=40, room=30)
    assert fitted.messages == [messages[0], messages[-1]]


def test_a_history_without_a_system_message() -> None:
    messages = chat(6, system=False)
    fitted = fit_messages(messages, prompt_tokens=words, n_ctx=100, room=40)
    assert fitted.messages[0]["role"] == "user"
    assert fitted.messages == messages[-len(fitted.messages) :]
    assert words(fitted.messages) + 40 <= 100


def test_reply_room() -> None:
    assert reply_room(None, 2048) == 512
    assert reply_room(100, 2048) == 100
    assert reply_room(4000, 2048) == 512
