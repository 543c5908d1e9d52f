"""Hiding secrets in text: config keys that name a secret and credentials inside URIs.

Standard library only, so that the command line can hide a secret in the line that
refuses an override before it imports anything heavy.
"""

from __future__ import annotations

import re

# a key is secret-looking when it contains one of these words...
_SECRET_WORDS = re.compile(
    r"(password|passwd|passphrase|secret|token|credential|apikey|accesskey|privatekey)", re.I
)
# ...or has one of these as a whole part (api_key, db.key, basic-auth; not monkey, author)
_SECRET_PARTS = frozenset({"key", "pwd", "auth", "pass"})
# user:password@ (or token@) inside any URI-looking text
_URI_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^/@:\s]*)(:[^/@\s]*)?@"
)
# key=value pairs inside free text (CLI overrides in tags)
_SECRET_ASSIGNMENT = re.compile(r"(?P<key>[\w.\-]+)=(?P<value>\S+)")


def is_secret_key(key: str) -> bool:
    """Whether a (dotted) config key names a secret: password, token, key, credentials..."""
    leaf = str(key).rsplit(".", 1)[-1]
    if _SECRET_WORDS.search(leaf.replace("_", "").replace("-", "")):
        return True
    parts = re.split(r"[_\-]|(?<=[a-z])(?=[A-Z])", leaf)
    return any(part.lower() in _SECRET_PARTS for part in parts)


def redact_uri(text: str) -> str:
    """Hide the password (or token) in ``scheme://user:password@host`` forms."""

    def _sub(m: re.Match[str]) -> str:
        user = m.group("user")
        if m.group(3) is None:  # scheme://token@host: the user part itself is the secret
            return f"{m.group('scheme')}***@"
        return f"{m.group('scheme')}{user}:***@"

    return _URI_CREDENTIALS.sub(_sub, text)


def redact_text(text: str) -> str:
    """Redact ``key=value`` pairs with secret-looking keys and credentials in URIs."""

    def _sub(m: re.Match[str]) -> str:
        if is_secret_key(m.group("key")):
            return f"{m.group('key')}=***"
        return m.group(0)

    return redact_uri(_SECRET_ASSIGNMENT.sub(_sub, text))
