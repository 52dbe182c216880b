"""SASL/SCRAM and TLS: the environment variables reach both kinds of Kafka client.

``Settings.from_env`` feeds two places: ``kafka_client_kwargs()`` (kafka-python and
aiokafka clients: produce, alerts tail, bench, the example consumer's settings) and
``stream.service.app.broker_credentials`` (the Faust worker). Both are checked here, down to what
Faust hands aiokafka, and the TLS context is used for a real handshake on loopback with
certificates made for the test. No Kafka with SASL runs here (the embedded broker has
neither SASL nor TLS), so the SCRAM exchange itself is not exercised.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.settings import Settings, SettingsError

BOOTSTRAP = "kafka-1.example.internal:9093,kafka-2.example.internal:9093"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for localhost and a client certificate, from openssl."""
    if not shutil.which("openssl"):
        pytest.fail("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=churnwatch-test-ca")
    for name, ext in (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}


def scram_env(pki: dict[str, Path], **extra: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP": BOOTSTRAP,
        "KAFKA_SASL_MECHANISM": "scram-sha-512",
        "KAFKA_SASL_USERNAME": "churnwatch",
        "KAFKA_SASL_PASSWORD": "s3cret-pw",
        "KAFKA_SSL_CAFILE": str(pki["ca_pem"]),
        **extra,
    }


def faust_auth(settings: Settings) -> dict[str, object]:
    """What the Faust worker built from ``settings`` passes to aiokafka."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from stream.service.app import create_app

    app = create_app(settings)  # builds the app; connects to nothing
    return dict(credentials_to_aiokafka_auth(app.conf.broker_credentials))


def test_scram_over_tls_reaches_both_clients(pki: dict[str, Path]) -> None:
    settings = Settings.from_env(scram_env(pki))
    assert settings.security_protocol == "SASL_SSL"  # derived: SASL + a CA file
    assert settings.sasl_mechanism == "SCRAM-SHA-512"

    kwargs = settings.kafka_client_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "churnwatch"
    assert kwargs["sasl_plain_password"] == "s3cret-pw"
    ctx = kwargs["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName",
                                                            "churnwatch-test-ca"),),)]

    auth = faust_auth(settings)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == "churnwatch"
    assert auth["sasl_plain_password"] == "s3cret-pw"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    assert auth["ssl_context"].get_ca_certs() == ctx.get_ca_certs()


def test_the_clients_accept_the_keyword_arguments(pki: dict[str, Path]) -> None:
    """kafka-python and aiokafka know the kwargs by these names (checked on their
    signatures and default configs: constructing kafka-python's client would connect)."""
    import inspect

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from kafka import KafkaConsumer, KafkaProducer

    kwargs = Settings.from_env(scram_env(pki)).kafka_client_kwargs()
    assert set(kwargs) == {"security_protocol", "sasl_mechanism", "sasl_plain_username",
                           "sasl_plain_password", "ssl_context"}
    for cls in (AIOKafkaConsumer, AIOKafkaProducer):
        assert set(kwargs) <= set(inspect.signature(cls).parameters), cls
    for cls in (KafkaConsumer, KafkaProducer):
        assert set(kwargs) <= set(cls.DEFAULT_CONFIG), cls


def test_scram_sha_256_without_tls(pki: dict[str, Path]) -> None:
    env = scram_env(pki, KAFKA_SASL_MECHANISM="SCRAM-SHA-256")
    del env["KAFKA_SSL_CAFILE"]
    settings = Settings.from_env(env)
    assert settings.security_protocol == "SASL_PLAINTEXT"
    kwargs = settings.kafka_client_kwargs()
    assert "ssl_context" not in kwargs and kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    auth = faust_auth(settings)
    assert auth["security_protocol"] == "SASL_PLAINTEXT"
    assert auth["ssl_context"] is None
    assert auth["sasl_mechanism"] == "SCRAM-SHA-256"


def test_mutual_tls_without_sasl(pki: dict[str, Path]) -> None:
    settings = Settings.from_env({
        "KAFKA_BOOTSTRAP": BOOTSTRAP,
        "KAFKA_SSL_CAFILE": str(pki["ca_pem"]),
        "KAFKA_SSL_CERTFILE": str(pki["client_pem"]),
        "KAFKA_SSL_KEYFILE": str(pki["client_key"]),
    })
    assert settings.security_protocol == "SSL"
    kwargs = settings.kafka_client_kwargs()
    assert kwargs["security_protocol"] == "SSL" and "sasl_mechanism" not in kwargs
    auth = faust_auth(settings)
    assert auth["security_protocol"] == "SSL"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)


def test_explicit_protocol_wins_over_the_derived_one(pki: dict[str, Path]) -> None:
    env = scram_env(pki, KAFKA_SECURITY_PROTOCOL="sasl_ssl")
    del env["KAFKA_SSL_CAFILE"]  # TLS with the system's CAs
    settings = Settings.from_env(env)
    assert settings.security_protocol == "SASL_SSL"
    assert isinstance(settings.kafka_client_kwargs()["ssl_context"], ssl.SSLContext)


@pytest.mark.parametrize(("change", "variable"), [
    ({"KAFKA_SASL_PASSWORD": ""}, "KAFKA_SASL_MECHANISM"),  # all three or none
    ({"KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
    ({"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "KAFKA_SECURITY_PROTOCOL"),
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
    ({"KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "KAFKA_SSL_CAFILE"),
    ({"KAFKA_SSL_KEYFILE": "KEY"}, "KAFKA_SSL_KEYFILE"),  # a key needs a certificate
    ({"KAFKA_BOOTSTRAP": ""}, "KAFKA_BOOTSTRAP"),  # the embedded broker has no SASL/TLS
])
def test_unusable_security_settings_name_the_variable(
    pki: dict[str, Path], change: dict[str, str], variable: str
) -> None:
    env = scram_env(pki, **change)
    if env.get("KAFKA_SSL_KEYFILE") == "KEY":
        env["KAFKA_SSL_KEYFILE"] = str(pki["client_key"])
    with pytest.raises(SettingsError, match=f"^{variable}:"):
        Settings.from_env(env)


def test_the_password_stays_out_of_reprs(pki: dict[str, Path]) -> None:
    from stream.service.app import broker_credentials

    settings = Settings.from_env(scram_env(pki))
    assert "s3cret-pw" not in repr(settings)
    assert "s3cret-pw" not in repr(broker_credentials(settings))


@pytest.fixture()
def tls_server(pki: dict[str, Path]) -> Iterator[tuple[int, list[str]]]:
    """A loopback TLS server (certificate for localhost, signed by the test CA) that
    requires a client certificate from the same CA; yields its port and the client
    common names it saw."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca_pem"]))
    server_ctx.load_cert_chain(str(pki["server_pem"]), str(pki["server_key"]))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    seen: list[str] = []

    def serve() -> None:
        for _ in range(2):
            try:
                conn, _addr = listener.accept()
            except OSError:
                return
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    subject = dict(x[0] for x in tls.getpeercert()["subject"])
                    seen.append(subject["commonName"])
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                seen.append("refused")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        listener.close()
        thread.join(10)


def test_the_tls_context_completes_a_mutual_handshake(
    pki: dict[str, Path], tls_server: tuple[int, list[str]]
) -> None:
    port, seen = tls_server
    settings = Settings.from_env({
        "KAFKA_BOOTSTRAP": f"localhost:{port}",
        "KAFKA_SSL_CAFILE": str(pki["ca_pem"]),
        "KAFKA_SSL_CERTFILE": str(pki["client_pem"]),
        "KAFKA_SSL_KEYFILE": str(pki["client_key"]),
    })
    ctx = settings.ssl_context()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.recv(2) == b"ok"
    # The same CA without a client certificate: the server refuses it.
    bare = Settings.from_env({"KAFKA_BOOTSTRAP": f"localhost:{port}",
                              "KAFKA_SSL_CAFILE": str(pki["ca_pem"])}).ssl_context()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with bare.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.recv(2)  # TLS 1.3 reports the refused certificate on first read
        except (ssl.SSLError, OSError):
            pass
    for _ in range(100):
        if len(seen) == 2:
            break
        threading.Event().wait(0.05)
    assert seen == ["client", "refused"]


def test_sasl_protocols_without_sasl_settings_are_refused(pki: dict[str, Path]) -> None:
    for protocol in ("SASL_SSL", "SASL_PLAINTEXT"):
        with pytest.raises(SettingsError, match=f"^KAFKA_SECURITY_PROTOCOL: {protocol} needs "
                                                "KAFKA_SASL_MECHANISM"):
            Settings.from_env({"KAFKA_BOOTSTRAP": BOOTSTRAP, "KAFKA_SECURITY_PROTOCOL": protocol,
                               "KAFKA_SSL_CAFILE": str(pki["ca_pem"])})


def test_tls_files_with_a_plaintext_protocol_are_refused(pki: dict[str, Path]) -> None:
    with pytest.raises(SettingsError, match="^KAFKA_SECURITY_PROTOCOL: TLS files are set"):
        Settings.from_env({"KAFKA_BOOTSTRAP": BOOTSTRAP, "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
                           "KAFKA_SSL_CAFILE": str(pki["ca_pem"])})


@pytest.mark.parametrize(("variable", "said"), [
    ("KAFKA_SSL_CAFILE", "is not a PEM CA certificate bundle"),
    ("KAFKA_SSL_CERTFILE", "is not a PEM certificate"),
    ("KAFKA_SSL_KEYFILE", "is not a PEM private key"),
])
def test_files_that_are_not_pem_are_refused_with_one_line(
    pki: dict[str, Path], tmp_path: Path, variable: str, said: str
) -> None:
    not_pem = tmp_path / "der.bin"
    subprocess.run(["openssl", "x509", "-in", str(pki["client_pem"]), "-outform", "DER",
                    "-out", str(not_pem)], check=True, capture_output=True, timeout=60)
    env = {"KAFKA_BOOTSTRAP": BOOTSTRAP, "KAFKA_SSL_CAFILE": str(pki["ca_pem"]),
           "KAFKA_SSL_CERTFILE": str(pki["client_pem"]),
           "KAFKA_SSL_KEYFILE": str(pki["client_key"]), variable: str(not_pem)}
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    message = str(refused.value)
    assert message.startswith(f"{variable}: {not_pem}") and said in message
    assert "\n" not in message


def test_a_key_that_does_not_match_the_certificate_is_refused(pki: dict[str, Path]) -> None:
    with pytest.raises(SettingsError, match="^KAFKA_SSL_KEYFILE: .* is not the private key of"):
        Settings.from_env({"KAFKA_BOOTSTRAP": BOOTSTRAP, "KAFKA_SSL_CAFILE": str(pki["ca_pem"]),
                           "KAFKA_SSL_CERTFILE": str(pki["client_pem"]),
                           "KAFKA_SSL_KEYFILE": str(pki["server_key"])})


def test_the_password_is_a_secret(pki: dict[str, Path]) -> None:
    from pydantic import SecretStr

    settings = Settings.from_env(scram_env(pki))
    assert isinstance(settings.sasl_password, SecretStr)
    assert "s3cret-pw" not in str(settings) and "s3cret-pw" not in str(settings.model_dump())
    assert settings.sasl_password_text == "s3cret-pw"
