"""A generated block inside a hand-written page: the text between a begin and an end marker line.

The speed table of ``docs/speed.md`` and the detection tables of ``docs/results.md`` are written by
their reports between such markers, so that the prose around them stays hand-written while every
figure comes from the results files.
"""

from __future__ import annotations

from pathlib import Path

from .atomic import atomic_write

__all__ = ["read_block", "replace_block"]


def _split(text: str, begin: str, end: str, where: Path) -> tuple[str, str, str]:
    """(before and the begin line, the block, the end line and after); ValueError without both markers."""
    before, found_begin, rest = text.partition(begin + "\n")
    block, found_end, after = rest.partition("\n" + end)
    if not (found_begin and found_end):
        raise ValueError(f"{where} lacks the generated block's markers {begin!r} ... {end!r}")
    return before + found_begin, block, found_end + after


def read_block(page: Path, begin: str, end: str) -> str:
    """The text between the markers of ``page``, as committed."""
    return _split(page.read_text(), begin, end, page)[1]


def replace_block(page: Path, begin: str, end: str, block: str) -> bool:
    """Put ``block`` between the markers of ``page`` (written whole or not at all); True if it changed."""
    text = page.read_text()
    head, _, tail = _split(text, begin, end, page)
    new = head + block + tail
    if new == text:
        return False
    with atomic_write(page, "w", encoding="utf-8") as f:
        f.write(new)
    return True
