"""Shared fixtures. ``broker``: one embedded Tansu broker for the whole session.

The suite starts its own broker (nothing is skipped for want of one); each test keeps to
its own topics with a unique ``CHURNWATCH_TOPIC_PREFIX`` and app id.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stream.tools.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running
