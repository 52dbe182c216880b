"""The `churnwatch` command line: light help, one way to fail on configuration, a worker
that starts from an empty directory and writes no terminal codes into a file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.cli import COMMANDS, EXIT_CONFIG, main
from stream.service.preflight import BrokerUnusable, check_brokers, probe_address
from stream.settings import Settings
from stream.tools.broker import EmbeddedBroker, free_port

REPO = Path(__file__).resolve().parents[1]
CHURNWATCH = [sys.executable, "-m", "stream"]
#: A minimal command line for each command (its required arguments).
ARGV = {
    "demo": ["demo"], "broker": ["broker"], "worker": ["worker"],
    "replay": ["replay", "."], "produce": ["produce", "."], "alerts": ["alerts", "tail"],
    "simulate": ["simulate", "--out", "world"], "evaluate": ["evaluate", "."],
    "bench": ["bench"],
}


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without churnwatch or Kafka settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHURNWATCH_", "KAFKA_"))}
    return {**env, **extra}


def test_every_command_has_a_minimal_command_line() -> None:
    assert set(ARGV) == set(COMMANDS)


def test_help_imports_neither_faust_nor_river() -> None:
    probe = (
        "import sys\n"
        "from stream.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "heavy = ('faust', 'river', 'aiokafka', 'kafka', 'numpy', 'detectors', 'mode')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=REPO, env=clean_env(), timeout=60, check=True).stdout
    assert "churnwatch" in out and "COMMAND" in out  # the help itself
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(("variable", "value", "said"), [
    ("CHURNWATCH_PARTITIONS", "abc", "CHURNWATCH_PARTITIONS: expected an integer, got 'abc'"),
    ("CHURNWATCH_ENGINE__COOLDOWN_DAYS", "a week", "CHURNWATCH_ENGINE__COOLDOWN_DAYS: expected"),
    ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL", "KAFKA_SECURITY_PROTOCOL: SASL_SSL needs"),
])
def test_every_command_rejects_a_bad_setting_the_same_way(
    command: str, variable: str, value: str, said: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    for name in list(os.environ):
        if name.startswith(("CHURNWATCH_", "KAFKA_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv(variable, value)
    if not variable.startswith("CHURNWATCH_ENGINE__"):
        # Never reached: the settings are checked first. (The detectors' overrides are
        # checked after the broker probe, which a command without a broker skips.)
        monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(ARGV[command])
    assert stopped.value.code == EXIT_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"churnwatch {command}: {err[0].split(': ', 1)[1]}"]
    assert said in err[0]
    assert not list(tmp_path.iterdir())  # nothing started, nothing written


def test_an_unreachable_broker_is_named_within_seconds_and_exposed_metrics_warned() -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    run = subprocess.run(
        [*CHURNWATCH, "worker"], capture_output=True, text=True, cwd=REPO, timeout=60,
        env=clean_env(KAFKA_BOOTSTRAP=f"127.0.0.1:{port}", CHURNWATCH_METRICS_HOST="0.0.0.0"))
    assert time.monotonic() - started < 10
    assert run.returncode == EXIT_CONFIG
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 2, run.stderr
    assert "CHURNWATCH_METRICS_HOST=0.0.0.0" in lines[0] and "beyond" in lines[0]
    assert lines[1].startswith("churnwatch worker: KAFKA_BOOTSTRAP: ")
    assert f"127.0.0.1:{port}: connection refused" in lines[1]


def test_loopback_metrics_are_not_warned_about() -> None:
    run = subprocess.run(
        [*CHURNWATCH, "worker"], capture_output=True, text=True, cwd=REPO, timeout=60,
        env=clean_env(KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}"))
    assert run.returncode == EXIT_CONFIG
    assert "METRICS" not in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_an_unknown_host_is_named() -> None:
    settings = Settings.from_env({"KAFKA_BOOTSTRAP": "no-such-host.invalid:9092"})
    with pytest.raises(BrokerUnusable, match=r"no-such-host.invalid:9092: unknown host"):
        check_brokers(settings, timeout_s=5)


@pytest.fixture()
def listener() -> Iterator[tuple[socket.socket, list[bytes]]]:
    """A loopback listener; the test decides what each connection hears."""
    server = socket.create_server(("127.0.0.1", 0))
    yield server, []
    server.close()


def serve_once(server: socket.socket, reply: bytes | None) -> threading.Thread:
    """Answer one connection with ``reply`` and keep it open (None: never answer)."""
    def handle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)
            if reply is not None:
                conn.sendall(reply)
            time.sleep(5)

    thread = threading.Thread(target=handle, daemon=True)
    thread.start()
    return thread


def test_a_silent_listener_is_not_kafka(listener: tuple[socket.socket, list[bytes]]) -> None:
    server, _ = listener
    serve_once(server, None)
    address = f"127.0.0.1:{server.getsockname()[1]}"
    started = time.monotonic()
    problem = probe_address(address, Settings.from_env({"KAFKA_BOOTSTRAP": address}), 1.0)
    assert problem is not None and "no Kafka answer in time" in problem
    assert time.monotonic() - started < 2


def test_plaintext_against_a_tls_listener_says_so(
    listener: tuple[socket.socket, list[bytes]],
) -> None:
    server, _ = listener
    serve_once(server, b"\x15\x03\x03\x00\x02\x02\x46")  # a TLS alert, as a TLS port answers
    address = f"127.0.0.1:{server.getsockname()[1]}"
    problem = probe_address(address, Settings.from_env({"KAFKA_BOOTSTRAP": address}), 2.0)
    assert problem is not None and "the listener speaks TLS" in problem
    assert "KAFKA_SECURITY_PROTOCOL is PLAINTEXT" in problem


@pytest.mark.integration
def test_tls_against_the_embedded_plaintext_listener_is_reported_within_10_s(
    broker: EmbeddedBroker,
) -> None:
    assert check_brokers(Settings.from_env({"KAFKA_BOOTSTRAP": broker.bootstrap})) \
        == broker.bootstrap  # plaintext: the probe passes
    started = time.monotonic()
    run = subprocess.run(
        [*CHURNWATCH, "worker"], capture_output=True, text=True, cwd=REPO, timeout=60,
        env=clean_env(KAFKA_BOOTSTRAP=broker.bootstrap, KAFKA_SECURITY_PROTOCOL="SSL"))
    assert time.monotonic() - started < 10
    assert run.returncode == EXIT_CONFIG
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"churnwatch worker: KAFKA_BOOTSTRAP: no broker usable: "
                           f"{broker.bootstrap}: TLS handshake failed")
    assert "probably plaintext" in line and "KAFKA_SECURITY_PROTOCOL is SSL" in line


def metric(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


@pytest.mark.integration
@pytest.mark.slow
def test_worker_starts_in_an_empty_directory_and_logs_no_terminal_codes(
    broker: EmbeddedBroker, tmp_path: Path,
) -> None:
    from tests.integration.helpers import unique_settings

    _settings, environ = unique_settings(broker.bootstrap)
    port = free_port()
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*CHURNWATCH, "worker", "--metrics-port", str(port)],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                env={**clean_env(PYTHONPATH=str(REPO)), **environ})
    try:
        deadline = time.monotonic() + 90
        while metric(port, "churnwatch_partitions_assigned") != 4.0:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        time.sleep(3)  # past Faust's end of start-up, where its spinner finishes
        assert (tmp_path / ".churnwatch" / "worker").is_dir()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert b"\x1b" not in log.read_bytes(), log.read_bytes()[-500:]


@pytest.mark.parametrize(("argv", "said"), [
    (["produce", "."], "churnwatch produce: KAFKA_BOOTSTRAP: not set"),
    (["alerts", "tail"], "churnwatch alerts: KAFKA_BOOTSTRAP: not set"),
    (["worker", "--metrics-port", "70000"],
     "churnwatch worker: CHURNWATCH_METRICS_PORT: 70000 is not a port number"),
])
def test_command_options_are_checked_with_the_settings(
    argv: list[str], said: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in list(os.environ):
        if name.startswith(("CHURNWATCH_", "KAFKA_")):
            monkeypatch.delenv(name)
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == EXIT_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(said)
