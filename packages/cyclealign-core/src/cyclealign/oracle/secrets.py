"""API keys: read from the environment or a key file (never from the config), and kept out of every text.

:func:`redact` scrubs every key an oracle of this process holds, the values of
environment variables named like keys (``*_API_KEY``, ``*_TOKEN``, ``*_SECRET``),
and any ``Authorization`` / ``api-key`` header value or ``Bearer`` token even
when the key is unknown to us (a provider that echoes a request in its error).
:func:`install_redaction` makes every log record pass it, with its traceback and
exception chain (``exc_info`` is formatted, scrubbed and kept as text), whatever
logger or handler it reaches (installed on import); :func:`redact_uncaught` does
the same for the tracebacks of uncaught exceptions (the CLI installs it).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from cyclealign.errors import OracleSetupError

_SECRETS: set[str] = set()
_MIN_LEN = 4  # shorter "keys" would scrub ordinary words
_ENV_NAME = re.compile(r"(API_?KEY|_KEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)
_ENV_MIN_LEN = 8  # an environment value is scrubbed only when it looks like a key, not a flag
# a header (or a field) carrying a credential, as it appears in repr'd requests, JSON and plain text
_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|api_key|apikey|x-goog-api-key)"
    r"([\"']?\s*[:=]\s*[\"']?)((?:bearer|basic|token)\s+)?([^\s\"',;}\]]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=-]{6,})")
_KEY_SHAPED = re.compile(r"\bsk-[A-Za-z0-9_-]{16,}")  # OpenAI / Anthropic style keys, wherever they appear


def remember(secret: str | None) -> None:
    """Scrub ``secret`` from everything :func:`redact` and the guarded loggers see from now on."""
    if secret and len(secret) >= _MIN_LEN:
        _SECRETS.add(secret)
    install_redaction()


def _env_secrets() -> set[str]:
    return {v for k, v in os.environ.items() if _ENV_NAME.search(k) and len(v) >= _ENV_MIN_LEN}


def redact(text: str, secret: str | None = None) -> str:
    """``text`` with ``secret``, every known key and every credential-shaped value replaced by ``***``."""
    for s in sorted({secret, *_SECRETS, *_env_secrets()} - {None}, key=len, reverse=True):
        if s and len(s) >= _MIN_LEN:
            text = text.replace(s, "***")
    text = _HEADER.sub(lambda m: f"{m[1]}{m[2]}{m[3] or ''}***", text)
    text = _BEARER.sub(lambda m: f"{m[1]}***", text)
    return _KEY_SHAPED.sub("sk-***", text)


def _formatted_exception(exc_info: Any) -> str:
    """The traceback as ``logging.Formatter.formatException`` writes it, chained causes included."""
    return "".join(traceback.format_exception(*exc_info)).rstrip("\n")


def scrub_record(record: logging.LogRecord) -> logging.LogRecord:
    """The record's message, traceback and stack with every secret replaced (idempotent)."""
    try:
        message = record.getMessage()
    except Exception:  # bad arguments: logging reports that itself when the record is emitted
        return record
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[0] is not None:
        # handlers append ``exc_text`` when it is set; rich and others render ``exc_info``: keep text only
        record.exc_text = redact(_formatted_exception(record.exc_info))
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record)
        return True


_FILTER = _RedactingFilter()
_LOCK = threading.Lock()
_installed: dict[str, Any] = {}


def install_redaction() -> None:
    """Make every log record (any logger, any handler) pass :func:`redact`; idempotent.

    Records are scrubbed when they are made (a record factory), so a handler that a
    library or a user adds later sees only clean text.
    """
    with _LOCK:
        if logging.getLogRecordFactory() is not _installed.get("factory"):
            base = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                return scrub_record(base(*args, **kwargs))

            logging.setLogRecordFactory(factory)
            _installed["factory"] = factory


def redact_uncaught() -> None:
    """An uncaught exception's traceback is printed redacted (the CLI's last boundary); idempotent."""
    install_redaction()
    if sys.excepthook is _installed.get("excepthook"):
        return
    previous = sys.excepthook

    def excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if issubclass(kind, KeyboardInterrupt):
            previous(kind, value, tb)
            return
        sys.stderr.write(redact(_formatted_exception((kind, value, tb))) + "\n")

    sys.excepthook = _installed["excepthook"] = excepthook


def guard_loggers(*names: str) -> None:
    """Install the key-scrubbing filter on these loggers (idempotent), and the process-wide redaction."""
    install_redaction()
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
        from cyclealign.user_files import read_text

        path = Path(key_file).expanduser()
        lines = read_text(path, f"{where}.api_key_file", OracleSetupError).strip().splitlines()
        key = lines[0].strip() if lines else ""
        if not key:
            raise OracleSetupError(f"{where}.api_key_file: {path} is empty")
        remember(key)
        return key
    env = key_env or default_env
    if env is None:
        return None
    return os.environ.get(env) or None  # an empty variable counts as unset


install_redaction()
