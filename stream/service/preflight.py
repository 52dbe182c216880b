"""A pre-flight probe of the Kafka brokers, before any Kafka client or Faust starts.

Kafka clients meet a wrong address or a security mismatch badly: aiokafka's bootstrap
retries a refused address for about half a minute and then raises a long traceback, and a
TLS client against a plaintext listener waits forever (the listener reads the TLS hello as
the start of a request that never completes). The probe opens one connection per address
with a deadline, does the TLS handshake when the settings ask for TLS, and exchanges one
``ApiVersions`` request, which every Kafka broker answers before authentication. With SASL
it then authenticates as the clients will (``SaslHandshake`` and ``SaslAuthenticate``:
PLAIN, or the SCRAM exchange of RFC 5802), so wrong credentials are one line naming the
variables instead of a client retrying in silence. It reports the first address that
works, or one line per address with the likely cause.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import ssl
import struct
import time
from typing import Any

#: The whole probe's deadline, seconds: a broker answers ApiVersions in milliseconds, and
#: with the start of the command the verdict comes within 10 s.
DEFAULT_TIMEOUT_S = 4.0
_API_VERSIONS = 18
_SASL_HANDSHAKE = 17
_SASL_AUTHENTICATE = 36
#: Kafka error codes of the SASL exchange.
_UNSUPPORTED_SASL_MECHANISM = 33
_SASL_AUTHENTICATION_FAILED = 58
#: A probe problem that begins with a setting's name is that setting's, the same at every
#: address (the SASL credentials, mechanism or protocol): reported at once, alone.
SETTING = "KAFKA_"
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
        if problem.startswith(SETTING):
            raise BrokerUnusable(f"{problem} (broker {address})")
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
        problem = _api_versions(sock, protocol)
        if problem is None and protocol.startswith("SASL_"):
            problem = _authenticate(sock, settings)
        return problem
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
    try:  # the rest of the answer, so that a SASL exchange can follow on this connection
        _read(sock, size - 4)
    except (TimeoutError, ConnectionError, OSError):
        pass
    return None


def _request(api_key: int, version: int, body: bytes) -> bytes:
    """A size-prefixed request (header v1, client id ``churnwatch``)."""
    client_id = b"churnwatch"
    head = struct.pack(">hhih", api_key, version, _CORRELATION_ID, len(client_id)) + client_id
    return struct.pack(">i", len(head) + len(body)) + head + body


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send ``request``; the response body after its correlation id."""
    sock.sendall(request)
    head = _read(sock, 8)
    if len(head) < 8:
        raise ConnectionError("closed")
    size, correlation = struct.unpack(">ii", head)
    if correlation != _CORRELATION_ID or not 4 <= size < 1 << 20:
        raise ConnectionError("not a Kafka answer")
    body = _read(sock, size - 4)
    if len(body) < size - 4:
        raise ConnectionError("closed")
    return body


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def _authenticate(sock: socket.socket, settings: Any) -> str | None:
    """None if the broker takes the settings' SASL credentials; else the cause, starting
    with the variable to check (:data:`SETTING`) when the broker refuses the settings."""
    mechanism = str(settings.sasl_mechanism or "").upper()
    user = str(settings.sasl_username or "")
    password = str(settings.sasl_password_text or "")
    try:
        try:
            body = _exchange(sock, _request(_SASL_HANDSHAKE, 1, _string(mechanism)))
        except ConnectionError:
            return (f"KAFKA_SASL_MECHANISM: the broker closed the connection when asked "
                    f"for {mechanism} (a mechanism it does not take?)")
        (error,) = struct.unpack(">h", body[:2])
        if error == _UNSUPPORTED_SASL_MECHANISM:
            offered = [m for m in _strings(body[2:]) if m.upper() != mechanism]
            if not offered:  # (a listener without SASL may echo the mechanism asked for)
                return (f"KAFKA_SECURITY_PROTOCOL: the listener takes no SASL, but "
                        f"KAFKA_SECURITY_PROTOCOL is {settings.security_protocol}")
            return (f"KAFKA_SASL_MECHANISM: the broker does not take {mechanism} (it "
                    f"offers {', '.join(offered)})")
        if error:
            return f"the SASL handshake failed (Kafka error {error})"
        if mechanism == "PLAIN":
            ok, _ = _sasl_step(sock, b"\0" + user.encode() + b"\0" + password.encode())
            return None if ok else _refused(mechanism)
        return _scram(sock, mechanism, user, password,
                      base64.b64encode(os.urandom(24)).decode())
    except TimeoutError:
        return "no answer to the SASL handshake in time (does the listener take SASL?)"
    except (ConnectionError, OSError, struct.error) as exc:
        return (f"the SASL exchange failed ({_cause(exc)}): does the listener take SASL? "
                f"KAFKA_SECURITY_PROTOCOL is {settings.security_protocol}")


def _refused(mechanism: str) -> str:
    return (f"KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD: the broker refused them "
            f"({mechanism} authentication failed)")


def _strings(data: bytes) -> list[str]:
    """A Kafka array of strings."""
    (count,) = struct.unpack(">i", data[:4])
    out, at = [], 4
    for _ in range(max(0, count)):
        (n,) = struct.unpack(">h", data[at:at + 2])
        out.append(data[at + 2:at + 2 + n].decode(errors="replace"))
        at += 2 + n
    return out


def _sasl_step(sock: socket.socket, auth: bytes) -> tuple[bool, bytes]:
    """One ``SaslAuthenticate`` v0 round: (accepted, the server's bytes)."""
    body = _exchange(sock, _request(_SASL_AUTHENTICATE, 0, struct.pack(">i", len(auth)) + auth))
    error, n = struct.unpack(">hh", body[:4])
    at = 4 + max(0, n)
    (size,) = struct.unpack(">i", body[at:at + 4])
    return error == 0, body[at + 4:at + 4 + max(0, size)]


def _scram(sock: socket.socket, mechanism: str, user: str, password: str,
           nonce: str) -> str | None:
    """The SCRAM exchange (RFC 5802) with ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``, the
    client's ``nonce`` given."""
    digest = "sha256" if mechanism.endswith("256") else "sha512"
    name = user.replace("=", "=3D").replace(",", "=2C")
    first_bare = f"n={name},r={nonce}"
    ok, server_first = _sasl_step(sock, ("n,," + first_bare).encode())
    if not ok:
        return _refused(mechanism)
    fields = dict(item.split("=", 1) for item in server_first.decode().split(",") if "=" in item)
    if not fields.get("r", "").startswith(nonce) or "s" not in fields or "i" not in fields:
        return f"the broker's SCRAM answer is not valid ({mechanism})"
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), base64.b64decode(fields["s"]),
                                 int(fields["i"]))
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    stored_key = hashlib.new(digest, client_key).digest()
    final_bare = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first.decode()},{final_bare}".encode()
    signature = hmac.new(stored_key, auth_message, digest).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    ok, server_final = _sasl_step(
        sock, f"{final_bare},p={base64.b64encode(proof).decode()}".encode())
    if not ok or server_final.startswith(b"e="):
        return _refused(mechanism)
    server_key = hmac.new(salted, b"Server Key", digest).digest()
    expected = base64.b64encode(hmac.new(server_key, auth_message, digest).digest())
    if server_final != b"v=" + expected:
        return f"the broker's SCRAM signature does not match ({mechanism}): not the broker?"
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
