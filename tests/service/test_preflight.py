"""The pre-flight probe's SASL step: the exchange against a scripted broker (the SCRAM
example of RFC 7677), and wrong credentials against a Tansu that requires authentication.

The embedded broker (Tansu 0.6) takes SCRAM-SHA-256/512 with ``--authentication``, but its
users can only be created through an authenticated connection to a broker keeping them
(its in-memory store starts empty): so against it only refusals are tested, and a
successful exchange against the scripted broker."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from stream.cli import EXIT_CONFIG
from stream.service import preflight
from stream.service.preflight import BrokerUnusable, check_brokers

REPO = Path(__file__).resolve().parents[2]
#: RFC 7677, section 3: SCRAM-SHA-256 of user "user", password "pencil".
CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


class ScriptedBroker:
    """A socket whose every request gets the next scripted response body."""

    def __init__(self, bodies: list[bytes]) -> None:
        self.bodies = list(bodies)
        self.requests: list[bytes] = []
        self.pending = b""

    def sendall(self, data: bytes) -> None:
        self.requests.append(data)
        body = struct.pack(">i", preflight._CORRELATION_ID) + self.bodies.pop(0)
        self.pending += struct.pack(">i", len(body)) + body

    def recv(self, n: int) -> bytes:
        out, self.pending = self.pending[:n], self.pending[n:]
        return out


def _authenticated(error: int, auth: bytes) -> bytes:
    """A ``SaslAuthenticate`` v0 response body."""
    return struct.pack(">hh", error, -1) + struct.pack(">i", len(auth)) + auth


def _auth_bytes(request: bytes) -> bytes:
    """The auth bytes of a ``SaslAuthenticate`` v0 request (after the v1 header)."""
    header = 4 + 2 + 2 + 4 + 2 + len(b"churnwatch")
    (size,) = struct.unpack(">i", request[header:header + 4])
    return request[header + 4:header + 4 + size]


def test_the_scram_exchange_is_rfc_7677s() -> None:
    sock = ScriptedBroker([_authenticated(0, SERVER_FIRST), _authenticated(0, SERVER_FINAL)])
    assert preflight._scram(sock, "SCRAM-SHA-256", "user", "pencil", CLIENT_NONCE) is None
    assert _auth_bytes(sock.requests[0]) == f"n,,n=user,r={CLIENT_NONCE}".encode()
    assert _auth_bytes(sock.requests[1]) == CLIENT_FINAL


def test_a_refused_proof_names_the_credentials() -> None:
    sock = ScriptedBroker([_authenticated(0, SERVER_FIRST), _authenticated(58, b"")])
    assert preflight._scram(sock, "SCRAM-SHA-256", "user", "wrong", CLIENT_NONCE) == (
        "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD: the broker refused them (SCRAM-SHA-256 "
        "authentication failed)")


def test_a_server_signature_that_does_not_match_is_not_taken() -> None:
    forged = SERVER_FINAL[:-6] + b"AAAAA="
    sock = ScriptedBroker([_authenticated(0, SERVER_FIRST), _authenticated(0, forged)])
    problem = preflight._scram(sock, "SCRAM-SHA-256", "user", "pencil", CLIENT_NONCE)
    assert problem is not None and "signature does not match" in problem


def _settings(mechanism: str = "SCRAM-SHA-512", bootstrap: str = "") -> NS:
    return NS(bootstrap=bootstrap, security_protocol="SASL_PLAINTEXT", uses_tls=False,
              sasl_mechanism=mechanism, sasl_username="churnwatch",
              sasl_password_text="not-the-password")


def _handshake(error: int, *mechanisms: str) -> bytes:
    body = struct.pack(">hi", error, len(mechanisms))
    for m in mechanisms:
        body += struct.pack(">h", len(m)) + m.encode()
    return body


@pytest.mark.parametrize(("mechanism", "script", "expected"), [
    ("SCRAM-SHA-512", [_handshake(0, "SCRAM-SHA-512"), _authenticated(58, b"")],
     "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD: the broker refused them (SCRAM-SHA-512"),
    ("PLAIN", [_handshake(0, "PLAIN"), _authenticated(58, b"")],
     "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD: the broker refused them (PLAIN"),
    ("PLAIN", [_handshake(33, "SCRAM-SHA-512")],
     "KAFKA_SASL_MECHANISM: the broker does not take PLAIN (it offers SCRAM-SHA-512)"),
    ("PLAIN", [_handshake(33, "PLAIN")], "KAFKA_SECURITY_PROTOCOL: the listener takes no SASL"),
])
def test_each_refusal_names_the_setting_to_check(
        mechanism: str, script: list[bytes], expected: str) -> None:
    sock = ScriptedBroker(script)
    problem = preflight._authenticate(sock, _settings(mechanism))  # type: ignore[arg-type]
    assert problem is not None and problem.startswith(expected), problem
    if mechanism == "PLAIN" and len(sock.requests) == 2:
        assert _auth_bytes(sock.requests[1]) == b"\0churnwatch\0not-the-password"


@pytest.fixture()
def authenticating_broker() -> Iterator[str]:
    """A Tansu that requires SASL (SCRAM) of every client; its address."""
    from stream.tools.broker import free_port, tansu_binary

    port = free_port("127.0.0.1")
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--authentication"], env={**os.environ, "RUST_LOG": "off"},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.integration
def test_wrong_sasl_credentials_stop_a_worker_within_seconds_with_one_line(
        authenticating_broker: str) -> None:
    with pytest.raises(BrokerUnusable, match="^KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD: "):
        check_brokers(_settings("SCRAM-SHA-256", authenticating_broker))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURNWATCH_", "KAFKA_"))}
    env.update(KAFKA_BOOTSTRAP=authenticating_broker, KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
               KAFKA_SASL_MECHANISM="SCRAM-SHA-512", KAFKA_SASL_USERNAME="churnwatch",
               KAFKA_SASL_PASSWORD="not-the-password")
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "stream", "worker"], capture_output=True,
                         text=True, cwd=REPO, timeout=60, env=env)
    assert time.monotonic() - started < 10
    assert run.returncode == EXIT_CONFIG
    (line,) = run.stderr.strip().splitlines()
    assert line == (f"churnwatch worker: KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD: the broker "
                    f"refused them (SCRAM-SHA-512 authentication failed) "
                    f"(broker {authenticating_broker})")
    assert "not-the-password" not in run.stderr
