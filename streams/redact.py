"""Redaction of secrets from text that goes into events and logs.

Owns: the patterns treated as secrets (URL passwords, ``password=``/``token=``-style
assignments, bearer tokens, common API-key shapes) and the length cap of error
messages. Invariant: ``redact`` is applied to every handler error message before it
is written to an event or a log line.
"""

from __future__ import annotations

import re

MAX_MESSAGE_CHARS = 2000
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"([a-z][a-z0-9+.-]*://[^:@/\s]*):[^@/\s]*@", re.I), r"\1:***@"),
    (
        re.compile(
            r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|auth)"
            r"(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"
        ),
        r"\1\2***",
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[a-z0-9._~+/=-]{8,}"), r"\1 ***"),
    (re.compile(r"\b(sk|pk|rk|xox[abp])-[A-Za-z0-9_-]{10,}"), r"\1-***"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "AKIA***"),
)


def redact(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Return ``text`` with secrets masked, cut to ``limit`` characters."""
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
