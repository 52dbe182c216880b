"""Run one Faust worker of the service until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any


def run_worker(settings: Any, loglevel: str = "warning") -> int:
    """Run one worker until SIGTERM/SIGINT; the exit code."""
    import faust

    from stream.service.app import create_app
    from stream.service.metrics import serve
    from stream.service.redaction import install

    # Before anything logs: Faust and aiokafka log keys and values at debug level.
    install()
    # Faust creates the data directory but not its parents.
    Path(settings.datadir).mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    parts = app.churnwatch
    server = None
    if settings.metrics_port:
        server = serve(parts.registry, settings.metrics_host, settings.metrics_port)
    logging.getLogger(__name__).info(
        "worker %s on %s (metrics %s:%s)", settings.app_id, settings.bootstrap,
        settings.metrics_host, settings.metrics_port,
    )
    worker = faust.Worker(
        app,
        loglevel=loglevel.upper(),
        quiet=True,
        redirect_stdouts=False,
        override_logging=True,
    )
    if not getattr(worker.stdout, "isatty", lambda: False)():
        # Faust's start-up spinner writes cursor escape codes (ESC[?25h) even into a file.
        worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        if server is not None:
            server.shutdown()
    return 0
