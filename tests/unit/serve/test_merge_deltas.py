"""Deltas that piled up while the event loop was busy merge per choice, never across an end."""

from lmforge.serve.engine import ChoiceFinished, RequestDone, TextDelta, TokenInfo
from lmforge.serve.routes import merge_deltas


def tok(i: int) -> TokenInfo:
    return TokenInfo(i, -0.5)


def test_consecutive_deltas_of_one_choice_merge_in_order() -> None:
    events = [(0, TextDelta(0, "a", [tok(1)])), (0, TextDelta(0, "b", [tok(2)]))]
    assert merge_deltas(events) == [(0, TextDelta(0, "ab", [tok(1), tok(2)]))]


def test_interleaved_choices_merge_separately_and_keep_text_per_choice() -> None:
    events = [
        (0, TextDelta(0, "a", [tok(1)])),
        (0, TextDelta(1, "x", [tok(9)])),
        (0, TextDelta(0, "b", [tok(2)])),
        (1, TextDelta(0, "p", [tok(5)])),  # another prompt of the same request: its own stream
        (0, TextDelta(1, "y", [tok(8)])),
    ]
    merged = merge_deltas(events)
    assert merged == [
        (0, TextDelta(0, "ab", [tok(1), tok(2)])),
        (0, TextDelta(1, "xy", [tok(9), tok(8)])),
        (1, TextDelta(0, "p", [tok(5)])),
    ]


def test_a_finish_closes_the_choice_and_request_done_stays_last() -> None:
    finish = ChoiceFinished(0, "length", "c", [tok(3)], 3)
    events = [
        (0, TextDelta(0, "a", [tok(1)])),
        (0, TextDelta(0, "b", [tok(2)])),
        (0, finish),
        (0, RequestDone(4, 3)),
    ]
    merged = merge_deltas(events)
    assert merged == [
        (0, TextDelta(0, "ab", [tok(1), tok(2)])),
        (0, finish),
        (0, RequestDone(4, 3)),
    ]
    # Text and tokens are kept whole: what a client concatenates is unchanged.
    text = "".join(e.text for _, e in merged if isinstance(e, TextDelta | ChoiceFinished))
    assert text == "abc"
