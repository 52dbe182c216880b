"""Logs name positions, never people: redaction of message keys, values and numbers.

Faust, mode and aiokafka log message keys and values at debug level (every changelog
send carries a subscriber's state, MSISDN included), and an exception's text can quote a
subscriber id. :func:`install` makes every log record of the process pass
:func:`redact` when it is created, whatever handler later writes it (Faust's worker
replaces the handlers when it starts). What is redacted:

- bytes literals (``b'...'``, how keys and raw values appear in repr);
- ``key=...`` and ``value=...`` and their ``k=``/``v=`` forms;
- any run of 7 or more digits, with an optional ``+``: phone numbers, account numbers
  (not an offset: after ``@`` or the word ``offset``).

Topic names, partitions, offsets and event ids stay: they are how an operator finds the
message in question.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["RedactingFilter", "install", "redact", "stack"]

_BYTES = re.compile(r"""\bb(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")
# key=/value= up to the next separator; a quoted or bracketed value whole.
_ASSIGNED = re.compile(
    r"""\b(key|value|k|v)=(?:b?'(?:[^'\\]|\\.)*'|b?"(?:[^"\\]|\\.)*"|\{[^}]*\}?|\[[^\]]*\]?|[^\s,)>]*)""")
# Offsets stay (``@123456789``, ``offset 123456789``): they are positions, not people.
_DIGITS = re.compile(r"(?<![\d@+])(?<!offset=)(?<!offset )(?<!offsets )\+?\d{7,}")
_formatter = logging.Formatter()


def redact(text: str) -> str:
    """``text`` with keys, values and long digit runs replaced.

    >>> redact("send key=b's-00042' value=b'{\\"msisdn\\": \\"13912345678\\"}' to t[3]")
    'send key=<redacted> value=<redacted> to t[3]'
    >>> redact("KeyError: '13912345678'; offset 123456789 of churn.calls[2]@23456789")
    "KeyError: '<number>'; offset 123456789 of churn.calls[2]@23456789"
    >>> redact("msisdn +8613912345678, s8613912345678")
    'msisdn <number>, s<number>'
    """
    text = _ASSIGNED.sub(lambda m: f"{m.group(1)}=<redacted>", text)
    text = _BYTES.sub("b'<redacted>'", text)
    return _DIGITS.sub("<number>", text)


def stack(exc: BaseException) -> str:
    """An exception's type and stack for a log line, without its text: the text of a
    ``KeyError`` or ``ValueError`` often quotes the subscriber id or number at fault.

    >>> def profile(sid):
    ...     return {}[sid]
    >>> try:
    ...     profile("s-" + "00042")
    ... except KeyError as exc:
    ...     text = stack(exc)
    >>> text.splitlines()[0], "s-00042" in text, "return {}[sid]" in text
    ('KeyError', False, True)
    """
    return f"{type(exc).__name__}\n" + "".join(traceback.format_tb(exc.__traceback__))


def redact_record(record: logging.LogRecord) -> None:
    """Format ``record``'s message, exception and stack now, redacted, in place."""
    try:
        message = record.getMessage()
    except Exception:  # arguments that do not fit the format: keep the format alone
        message = str(record.msg)
    record.msg = redact(message)
    record.args = ()  # a tuple: formatters such as mode's wrap anything else in one
    if record.exc_info:
        record.exc_text = redact(_formatter.formatException(record.exc_info))
        # The formatter uses exc_text; exc_info is dropped so that no handler formats the
        # unredacted exception again.
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record (see :func:`redact`) and keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


_installed: list[Callable[..., logging.LogRecord]] = []


def install() -> None:
    """Redact every log record of this process when it is created (idempotent).

    A record factory rather than a filter on handlers: Faust's worker sets up its own
    handlers after this runs, and a filter on a logger does not apply to its children.
    Records below a logger's level are never created, so this costs nothing there.
    """
    if _installed:
        return
    previous = logging.getLogRecordFactory()
    redacting = RedactingFilter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redacting.filter(record)
        return record

    _installed.append(previous)
    logging.setLogRecordFactory(factory)


def uninstall() -> None:
    """Restore the record factory :func:`install` replaced (tests)."""
    if _installed:
        logging.setLogRecordFactory(_installed.pop())
