"""API keys: read from the environment or a key file (never from the config), and kept out of every text.

Every key an oracle of this process holds is remembered, so :func:`redact` can
scrub it from error messages and :func:`guard_loggers` from log records of the
HTTP libraries, whatever their level.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cyclealign.errors import OracleSetupError

_SECRETS: set[str] = set()


def remember(secret: str | None) -> None:
    """Scrub ``secret`` from everything :func:`redact` and the guarded loggers see from now on."""
    if secret and len(secret) >= 4:
        _SECRETS.add(secret)


def redact(text: str, secret: str | None = None) -> str:
    """``text`` with ``secret`` and every remembered key replaced by ``***``."""
    for s in {secret, *_SECRETS}:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            message = record.getMessage()
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, None
        return True


_FILTER = _RedactingFilter()


def guard_loggers(*names: str) -> None:
    """Install the key-scrubbing filter on these loggers (idempotent)."""
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def read_api_key(
    key_file: str | Path | None, key_env: str | None, default_env: str | None, *, where: str = "oracle.options"
) -> str | None:
    """The key from ``key_file`` (its first line), else from the variable ``key_env`` (or ``default_env``).

    A plugin passes its own options; ``where`` is the config path they live under, for the messages.
    """
    if key_file is not None:
        path = Path(key_file).expanduser()
        if not path.is_file():
            raise OracleSetupError(f"{where}.api_key_file: {path} does not exist")
        lines = path.read_text().strip().splitlines()
        key = lines[0].strip() if lines else ""
        if not key:
            raise OracleSetupError(f"{where}.api_key_file: {path} is empty")
        return key
    env = key_env or default_env
    if env is None:
        return None
    return os.environ.get(env) or None  # an empty variable counts as unset
