"""Trigger headers: which names are kept, how two sources merge, how names match.

Names keep the case they were written in, for display, and match case-insensitively
(HTTP semantics). Pure: no I/O; the AMQP adapter turns field values into text first.
"""

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
"""RFC 9110's connection-specific headers, and Content-Length (as FO)."""

CREDENTIAL_WORDS: Final = frozenset(
    {
        "auth",
        "authorization",
        "apikey",
        "bearer",
        "cookie",
        "credential",
        "credentials",
        "jwt",
        "passphrase",
        "passwd",
        "password",
        "pwd",
        "secret",
        "session",
        "signature",
        "token",
    }
)
"""A name with one of these words (split on `-`, `_`, `.`) looks like a credential."""

KEY_QUALIFIERS: Final = frozenset(
    {"access", "api", "client", "encryption", "private", "signing", "webhook"}
)
"""`<qualifier>-key` (X-Api-Key, X-Webhook-Key, ...) is a credential; Idempotency-Key
and other `-key` names are not."""

TRANSPORT_PREFIXES: Final = (
    "x-death",
    "x-delivery-",
    "x-dead-letter-",
    "x-first-death-",
    "x-last-death-",
    "x-original-",
    "x-received-from",
    "x-shovelled",
    "x-flow-",
)
"""Headers RabbitMQ, its plugins or this service write on a message in transit."""

_WORDS: Final = re.compile(r"[-_.\s]+")


def excluded(name: str) -> bool:
    """Whether a header called `name` is never stored.

    It looks like a credential, is hop-by-hop, or was written by the transport.
    """
    lowered = name.strip().lower()
    if not lowered or lowered in HOP_BY_HOP or lowered.startswith(TRANSPORT_PREFIXES):
        return True
    words = [word for word in _WORDS.split(lowered) if word]
    if CREDENTIAL_WORDS.intersection(words):
        return True
    return any(
        word == "key" and previous in KEY_QUALIFIERS
        for previous, word in itertools.pairwise(words)
    )


def capture(headers: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
    """The headers worth storing, names as written; a name's first spelling wins."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in pairs:
        folded = name.lower()
        if folded in seen or excluded(name):
            continue
        seen.add(folded)
        found[name] = value
    return found


def merge(winner: Mapping[str, str], other: Mapping[str, str]) -> dict[str, str]:
    """Both sets of headers; on a name both have (in any case), `winner`'s entry."""
    taken = {name.lower() for name in winner}
    merged = {name: value for name, value in other.items() if name.lower() not in taken}
    merged.update(winner)
    return merged


def find(headers: Mapping[str, str], name: str) -> str | None:
    """The value of the header `name`, matched case-insensitively; None if absent."""
    found = headers.get(name)
    if found is not None:
        return found
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def without(headers: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """`headers` less those called any of `names`, in any case."""
    dropped = {name.lower() for name in names}
    return {k: v for k, v in headers.items() if k.lower() not in dropped}


class HeaderMap(Mapping[str, str]):
    """Read-only headers: iterated with the names as written, found in any case."""

    __slots__ = ("_folded", "_headers")

    def __init__(self, headers: Mapping[str, str] | None = None) -> None:
        self._headers = dict(headers or {})
        self._folded: dict[str, str] = {}
        for name, value in self._headers.items():
            self._folded.setdefault(name.lower(), value)

    def __getitem__(self, name: str) -> str:
        return self._folded[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._folded

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)

    def __repr__(self) -> str:
        return f"HeaderMap({self._headers!r})"
