"""NATS subject and name rules the fleet front door relies on (pure functions).

Subjects are dot-separated tokens; ``*`` matches one token, ``>`` the rest
(last token only). Consumer (durable) names may not hold ``.``, ``*``, ``>``
or whitespace. nats-server 2.9 (Debian 12's) gives a consumer one filter
subject, so a node that listens on several subjects has one durable per
subject: :func:`consumer_names`.
"""

from __future__ import annotations

import re
import socket

__all__ = [
    "check_name",
    "check_subject",
    "consumer_names",
    "default_node_name",
    "subject_matches",
]

_BAD_NAME = re.compile(r"[.*>\s/\\]")
_TOKEN_CHARS = re.compile(r"[^.*>\s]+")


def check_subject(subject: str, *, wildcards: bool = True, what: str = "subject") -> str:
    """``subject`` if well formed, else ValueError naming the problem."""
    if not subject or subject != subject.strip() or any(c.isspace() for c in subject):
        raise ValueError(f"{what} {subject!r}: empty or holds whitespace")
    tokens = subject.split(".")
    for i, tok in enumerate(tokens):
        if tok in ("*", ">"):
            if not wildcards:
                raise ValueError(f"{what} {subject!r}: wildcards are not allowed here")
            if tok == ">" and i != len(tokens) - 1:
                raise ValueError(f"{what} {subject!r}: '>' may only be the last token")
        elif not _TOKEN_CHARS.fullmatch(tok):
            raise ValueError(f"{what} {subject!r}: empty token or a wildcard inside a token")
    return subject


def check_name(name: str, what: str = "name") -> str:
    """A stream or consumer name: no ``.``, ``*``, ``>``, slashes or whitespace."""
    if not name or _BAD_NAME.search(name):
        raise ValueError(f"{what} {name!r}: must be non-empty without '.', '*', '>', '/' or spaces")
    return name


def subject_matches(filter_subject: str, subject: str) -> bool:
    """Whether a literal ``subject`` is one that ``filter_subject`` selects."""
    f = filter_subject.split(".")
    s = subject.split(".")
    for i, tok in enumerate(f):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(f) == len(s)


def _token(subject: str) -> str:
    return subject.replace(".", "_").replace("*", "any").replace(">", "all")


def consumer_names(durable: str, subjects: list[str]) -> list[str]:
    """One consumer name per subject: ``durable`` itself for a single subject, else
    ``durable-<subject with . as _>`` (``*`` -> ``any``, ``>`` -> ``all``)."""
    if len(subjects) == 1:
        return [durable]
    names = [f"{durable}-{_token(s)}" for s in subjects]
    if len(set(names)) != len(names):
        raise ValueError(f"subjects {subjects} give the same consumer name twice")
    return names


def default_node_name() -> str:
    """The host name as a consumer name (dots of a FQDN become ``-``)."""
    return re.sub(r"[.*>\s/\\]", "-", socket.gethostname()) or "ringbridge"
