"""Stop strings across token boundaries: held back while partial, never emitted."""

from __future__ import annotations

import itertools

import pytest

from app.engine.stops import StopMatcher


def run(stops: list[str], deltas: list[str]) -> tuple[list[str], bool]:
    """Push deltas until a stop; return what was emitted (flush included) and whether it stopped."""
    matcher = StopMatcher(stops)
    out = []
    for delta in deltas:
        text, stopped = matcher.push(delta)
        out.append(text)
        if stopped:
            return out, True
    out.append(matcher.flush())
    return out, False


def test_no_stop_strings_pass_text_through() -> None:
    assert run([], ["a", "b"]) == (["a", "b", ""], False)


def test_stop_split_over_three_tokens_is_never_emitted() -> None:
    out, stopped = run(["<|end|>"], ["Hello <", "|en", "d|", ">more"])
    assert stopped
    assert out == ["Hello ", "", "", ""]
    assert "".join(out) == "Hello "


def test_partial_match_is_held_then_released_when_it_diverges() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.push("go ST") == ("go ", False)
    assert matcher.held == "ST"
    assert matcher.push("ART") == ("START", False)
    assert matcher.held == ""


def test_held_text_is_flushed_at_the_end_when_no_stop_matched() -> None:
    out, stopped = run(["###"], ["a", "#", "#"])
    assert not stopped
    assert out == ["a", "", "", "##"]


def test_stop_at_the_very_start_emits_nothing() -> None:
    out, stopped = run(["\n\n"], ["\n", "\nrest"])
    assert stopped
    assert "".join(out) == ""


def test_text_after_the_stop_in_the_same_delta_is_dropped() -> None:
    assert run(["."], ["One. Two."]) == (["One"], True)


def test_pushes_after_a_stop_emit_nothing() -> None:
    matcher = StopMatcher(["x"])
    assert matcher.push("ax") == ("a", True)
    assert matcher.push("more") == ("", True)
    assert matcher.flush() == ""


def test_overlapping_stops_first_to_complete_wins() -> None:
    # "bc" completes (at index 3) before "abcd" could; result is the same for any split.
    text = "xabcd"
    for cut1, cut2 in itertools.combinations(range(1, len(text)), 2):
        deltas = [text[:cut1], text[cut1:cut2], text[cut2:]]
        out, stopped = run(["abcd", "bc"], deltas)
        assert stopped
        assert "".join(out) == "xa"


def test_same_end_prefers_the_longer_stop() -> None:
    assert "".join(run(["b", "ab"], ["xab"])[0]) == "x"
    assert "".join(run(["b", "ab"], ["xa", "b"])[0]) == "x"


def test_stop_that_is_a_prefix_of_another() -> None:
    out, stopped = run(["User:", "User"], ["Hi Us", "er: x"])
    assert stopped
    assert "".join(out) == "Hi "


def test_repeated_prefix_characters_keep_the_longest_partial() -> None:
    matcher = StopMatcher(["aab"])
    assert matcher.push("xaaa") == ("xa", False)
    assert matcher.held == "aa"
    assert matcher.push("b") == ("", True)


@pytest.mark.parametrize("stop", ["é!", "世界", "👋👋"])
def test_multibyte_stop_strings(stop: str) -> None:
    text = f"hi {stop} there"
    for cut in range(1, len(text)):
        out, stopped = run([stop], [text[:cut], text[cut:]])
        assert stopped
        assert "".join(out) == "hi "


def test_empty_and_duplicate_stops_are_ignored() -> None:
    assert run(["", "z", "z"], ["abc"]) == (["abc", ""], False)


def test_the_matched_stop_string_is_reported() -> None:
    matcher = StopMatcher(["END", "</a>"])
    assert matcher.matched is None
    assert matcher.push("x </") == ("x ", False)
    assert matcher.matched is None
    assert matcher.push("a> END") == ("", True)
    assert matcher.matched == "</a>"


def test_no_match_reports_no_stop_string() -> None:
    matcher = StopMatcher(["END"])
    matcher.push("the EN")
    assert matcher.flush() == "EN"
    assert matcher.matched is None


def reference(stops: list[str], deltas: list[str]) -> str:
    """What a stream should emit: the text up to the stop that completes first (earliest
    end; on a tie, earliest start), computed on the whole text at once."""
    text = "".join(deltas)
    best: tuple[int, int] | None = None
    for stop in filter(None, stops):
        start = text.find(stop)
        if start >= 0 and (best is None or (start + len(stop), start) < best):
            best = (start + len(stop), start)
    return text if best is None else text[: best[1]]


@pytest.mark.parametrize(
    ("stops", "deltas"),
    [
        (["abcd", "bc"], ["a", "b", "c", "d"]),
        (["aab", "ab"], ["aa", "ab"]),
        (["xyz", "yzw", "z"], ["xy", "zw"]),
        (["aaaa"], ["aaa", "b", "aaaa"]),
        (["abab", "bab"], ["ab", "a", "b"]),
        (["he", "she", "his", "hers"], ["ushers"]),
    ],
)
def test_the_automaton_agrees_with_matching_on_the_whole_text(
    stops: list[str], deltas: list[str]
) -> None:
    out, _ = run(stops, deltas)
    assert "".join(out) == reference(stops, deltas)


def test_every_split_of_random_texts_agrees_with_the_reference() -> None:
    import random

    rng = random.Random(17)
    for _ in range(400):
        stops = ["".join(rng.choices("ab", k=rng.randint(1, 4))) for _ in range(rng.randint(1, 3))]
        text = "".join(rng.choices("abc", k=rng.randint(0, 12)))
        cuts = sorted(rng.sample(range(len(text) + 1), min(3, len(text) + 1)))
        deltas = [text[i:j] for i, j in itertools.pairwise([0, *cuts, len(text)])]
        out, _ = run(stops, deltas)
        assert "".join(out) == reference(stops, deltas), (stops, deltas)


def test_long_stop_strings_cost_linear_time_per_token() -> None:
    # Issue 17 row 8: 64 stop strings of 16 KB that share a long prefix with the text made
    # each token rescan the held text against every stop (0.15 s per token). The automaton
    # feeds each character once: 4,000 one-character tokens that keep a partial match alive
    # take milliseconds; 2 s is a bound any busy machine meets, the old matcher took minutes.
    import time

    stops = ["a" * 16_000 + chr(0x100 + i) for i in range(64)]
    matcher = StopMatcher(stops)
    started = time.perf_counter()
    for _ in range(4000):
        assert matcher.push("a") == ("", False)
    assert time.perf_counter() - started < 2.0
    assert len(matcher.held) == 4000
