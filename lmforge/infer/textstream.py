"""Incremental detokenisation for streaming, with stop strings.

Decoding one token at a time is wrong for byte-level BPE (a character may span tokens) and for
decoders that look at neighbours (leading-space rules), so each step decodes a short window of
recent tokens and emits only the new suffix (the prefix-offset scheme of vLLM's detokenizer). Text
that could be the beginning of a stop string is held back until it is known not to be one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

_INCOMPLETE = "\ufffd"  # what a decoder yields for a cut UTF-8 sequence


class Decoder(Protocol):
    def decode(self, ids: Sequence[int]) -> str: ...


class TextStream:
    """Turns a growing list of token ids into text deltas; stops at the first stop string.

    `text` is everything decoded so far (cut before a stop string once one appeared); `push`
    returns the part of it that is now safe to show.
    """

    def __init__(self, tokenizer: Decoder, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self.text = ""
        self.stopped = False
        self._prefix = 0  # ids[_prefix:_read] were decoded last time, as context
        self._read = 0  # ids before this are already part of `text`
        self._emitted = 0  # characters of `text` already returned

    def push(self, token_id: int) -> str:
        """Add one token; returns the new text that may be shown (possibly empty)."""
        if self.stopped:
            return ""
        self.ids.append(token_id)
        decode = self.tokenizer.decode
        before = decode(self.ids[self._prefix : self._read])
        after = decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith(_INCOMPLETE):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self.ids)
        return self._release(final=False)

    def flush(self) -> str:
        """At the end: decode what is still pending (even an incomplete character) and release
        the held-back text."""
        if not self.stopped and self._read < len(self.ids):
            before = self.tokenizer.decode(self.ids[self._prefix : self._read])
            after = self.tokenizer.decode(self.ids[self._prefix :])
            self.text += after[len(before) :]
            self._prefix = self._read = len(self.ids)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stop and not self.stopped:
            cut = self._find_stop()
            if cut is not None:
                self.text = self.text[:cut]
                self.stopped = True
        end = len(self.text)
        if not (final or self.stopped):
            end -= self._held_back()
        delta = self.text[self._emitted : end]
        self._emitted = max(self._emitted, end)
        return delta

    def _find_stop(self) -> int | None:
        # Nothing before `_emitted` can start a stop string: such a start would have been held back.
        hits = [i for s in self.stop if (i := self.text.find(s, self._emitted)) >= 0]
        return min(hits) if hits else None

    def _held_back(self) -> int:
        """Length of the longest tail of `text` that is a proper prefix of some stop string."""
        tail = self.text[self._emitted :]
        best = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(tail)), best, -1):
                if tail.endswith(s[:k]):
                    best = k
                    break
        return best
