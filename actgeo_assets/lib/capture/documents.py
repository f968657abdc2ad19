"""The documents a corpus is made of (:class:`Document`), numbered in corpus order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """One text of the corpus. ``doc_id`` is its index in the corpus order; ``source`` says what the text
    is; ``pile_analogue`` the part of the Pile it stands in for (None: none, or not known); ``work`` the
    work it is (a part) of where the corpus says so, e.g. ``"Paradise Lost"`` (None: not named)."""

    doc_id: int
    text: str
    source: str
    pile_analogue: str | None = None
    work: str | None = None


def documents_from(
    texts: Iterable[tuple[str, str] | tuple[str, str, str | None] | tuple[str, str, str | None, str | None]],
) -> list[Document]:
    """Documents of ``(text, source[, pile_analogue[, work]])``, blank texts left out, numbered in order."""
    out = []
    for text, source, *rest in texts:
        if isinstance(text, str) and text.strip():
            out.append(Document(doc_id=len(out), text=text, source=str(source),
                                pile_analogue=rest[0] if rest else None,
                                work=rest[1] if len(rest) > 1 else None))
    return out
