"""A pre-flight probe of the Kafka brokers, before any Kafka client or Faust starts.

Kafka clients meet a wrong address or a security mismatch badly: aiokafka's bootstrap
retries a refused address for about half a minute and then raises a long traceback, and a
TLS client against a plaintext listener waits forever (the listener reads the TLS hello as
the start of a request that never completes). The probe opens one connection per address
with a deadline, does the TLS handshake when the settings ask for TLS, and exchanges one
``ApiVersions`` request, which every Kafka broker answers before authentication. It reports
the first address that works, or one line per address with the likely cause.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from typing import Any

#: The whole probe's deadline, seconds: a broker answers ApiVersions in milliseconds, and
#: with the start of the command the verdict comes within 10 s.
DEFAULT_TIMEOUT_S = 4.0
_API_VERSIONS = 18
_CORRELATION_ID = 0x0C0FFEE
#: First byte of a TLS alert or handshake record (a Kafka response starts with its size).
_TLS_RECORD_TYPES = (b"\x15", b"\x16")


class BrokerUnusable(Exception):
    """No broker address answered as Kafka with these settings; the message says why."""


def api_versions_request() -> bytes:
    """A size-prefixed ``ApiVersions`` v0 request (header v1, client id ``churnwatch``).

    >>> api_versions_request().hex()
    '000000140012000000c0ffee000a636875726e7761746368'
    """
    client_id = b"churnwatch"
    body = struct.pack(">hhih", _API_VERSIONS, 0, _CORRELATION_ID, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def check_brokers(settings: Any, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """The first of ``settings.bootstrap``'s addresses that answers ``ApiVersions``.

    Raises :class:`BrokerUnusable` naming each address and the likely cause otherwise.
    """
    addresses: list[str] = [a.strip() for a in str(settings.bootstrap).split(",") if a.strip()]
    deadline = time.monotonic() + timeout_s
    problems: list[str] = []
    for i, address in enumerate(addresses):
        share = max(0.5, (deadline - time.monotonic()) / (len(addresses) - i))
        problem = probe_address(address, settings, share)
        if problem is None:
            return address
        problems.append(f"{address}: {problem}")
    raise BrokerUnusable("KAFKA_BOOTSTRAP: no broker usable: " + "; ".join(problems))


def probe_address(address: str, settings: Any, timeout_s: float) -> str | None:
    """None if ``address`` answers as a Kafka broker under ``settings``; else the cause."""
    host, _, port_text = address.rpartition(":")
    started = time.monotonic()
    try:
        raw = socket.create_connection((host, int(port_text)), timeout=timeout_s)
    except socket.gaierror:
        return "unknown host (check the address)"
    except ConnectionRefusedError:
        return "connection refused (nothing listens there: wrong address or port, or " \
               "the broker is down)"
    except TimeoutError:
        return f"no connection within {timeout_s:.1f} s (wrong address, a firewall, or " \
               "the broker is down)"
    except OSError as exc:
        return f"cannot connect ({exc.strerror or exc})"
    protocol = settings.security_protocol
    sock: socket.socket = raw
    try:
        raw.settimeout(max(0.2, timeout_s - (time.monotonic() - started)))
        if settings.uses_tls:
            try:
                sock = settings.ssl_context().wrap_socket(raw, server_hostname=host)
            except ssl.SSLCertVerificationError as exc:
                return (f"the broker's certificate is not trusted ({exc.verify_message}): "
                        "check KAFKA_SSL_CAFILE")
            except (TimeoutError, ssl.SSLError, ConnectionError, OSError) as exc:
                return (f"TLS handshake failed ({_cause(exc)}): the listener is probably "
                        f"plaintext, but KAFKA_SECURITY_PROTOCOL is {protocol}")
        return _api_versions(sock, protocol)
    finally:
        sock.close()


def _api_versions(sock: socket.socket, protocol: str) -> str | None:
    try:
        sock.sendall(api_versions_request())
        head = _read(sock, 8)
    except TimeoutError:
        return "no Kafka answer in time (not a Kafka listener?)"
    except (ConnectionError, OSError) as exc:
        return f"the connection failed ({_cause(exc)}): not a Kafka listener?"
    if head[:1] in _TLS_RECORD_TYPES:
        return (f"the listener speaks TLS, but KAFKA_SECURITY_PROTOCOL is {protocol} "
                "(use SSL or SASL_SSL)")
    if len(head) < 8:
        return "the connection closed before a Kafka answer (not a Kafka listener, or " \
               "one that wants TLS?)"
    size, correlation = struct.unpack(">ii", head)
    if correlation != _CORRELATION_ID or not 0 < size < 1 << 20:
        return "the answer is not Kafka's (not a Kafka listener?)"
    return None


def _read(sock: socket.socket, n: int) -> bytes:
    """Up to ``n`` bytes; fewer at the end of the stream or on a TLS record's first byte
    (a TLS listener's alert is shorter than a Kafka response header)."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
        if data[:1] in _TLS_RECORD_TYPES:
            break
    return data


def _cause(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return type(exc).__name__
