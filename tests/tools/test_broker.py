"""The embedded broker: start, answer, create topics, stop by pid; and the command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from stream.service.admin import BrokerError, create_topics, ensure_topics
from stream.settings import Settings
from stream.tools.broker import EmbeddedBroker, metadata_ok, tansu_binary

pytestmark = pytest.mark.integration


@pytest.mark.timeout(30)
def test_embedded_broker_starts_answers_and_stops():
    broker = EmbeddedBroker().start()
    try:
        assert broker.host == "127.0.0.1" and broker.running
        assert metadata_ok(broker.host, broker.port)
        created = create_topics(broker.bootstrap, ["a", "b"], partitions=3)
        assert created == ["a", "b"]
        assert create_topics(broker.bootstrap, ["a", "b"], partitions=3) == []
        with pytest.raises(BrokerError, match="has 3 partitions"):
            create_topics(broker.bootstrap, ["a"], partitions=4)
        pid = broker.process.pid
    finally:
        broker.stop()
    assert not broker.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not metadata_ok("127.0.0.1", broker.port)


@pytest.mark.timeout(30)
def test_session_broker_fixture_and_ensure_topics(broker):
    settings = Settings.from_env({"KAFKA_BOOTSTRAP": broker.bootstrap,
                                  "CHURNWATCH_TOPIC_PREFIX": "ensure.",
                                  "CHURNWATCH_PARTITIONS": "2"})
    assert sorted(ensure_topics(settings)) == sorted(
        (*settings.all_topics, "ensure.churn.group-signals", "ensure.churn.group-context",
         "ensure.telecom.ported"))
    assert ensure_topics(settings) == []


def test_tansu_bin_must_be_executable(monkeypatch, tmp_path):
    monkeypatch.setenv("TANSU_BIN", str(tmp_path / "nope"))
    with pytest.raises(BrokerError, match="TANSU_BIN"):
        tansu_binary()
    monkeypatch.delenv("TANSU_BIN")
    assert os.access(tansu_binary(), os.X_OK)


def test_taken_port_is_an_error():
    with EmbeddedBroker() as first:
        with pytest.raises(BrokerError, match="is taken"):
            EmbeddedBroker(port=first.port).start()


@pytest.mark.timeout(30)
def test_broker_command_prints_bootstrap_and_stops_on_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream", "broker", "--partitions", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP"},
    )
    try:
        line = proc.stdout.readline().decode().strip()
        assert line.startswith("KAFKA_BOOTSTRAP=127.0.0.1:")
        host, port = line.split("=", 1)[1].split(":")
        assert metadata_ok(host, int(port))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        deadline = time.monotonic() + 5
        while metadata_ok(host, int(port)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not metadata_ok(host, int(port))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()
