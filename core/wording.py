"""Small helpers for messages written in English: counted nouns and lists."""

from __future__ import annotations

from collections.abc import Iterable


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """'1 epoch', '2 epochs', '0 epochs' ('1 process', '2 processes' with plural_form='processes')."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


def english_list(items: Iterable[str], conjunction: str = "and") -> str:
    """'a', 'a and b', 'a, b and c' (or 'a, b or c' with conjunction='or'); '' for no items."""
    words = [str(item) for item in items]
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} {conjunction} {words[-1]}"
