"""Every RPMsg test runs twice: on the C fast path (``ampipc._vring``) and on the pure-Python reference.

The choice travels in the environment (``AMPIPC_RPMSG_PURE``), so the child processes a test spawns
take the same path as the test itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ampipc.rpmsg.virtqueue import PURE_PATH_ENV


@pytest.fixture(autouse=True, params=["fast", "pure"])
def rpmsg_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(PURE_PATH_ENV, "1" if request.param == "pure" else "0")
    yield str(request.param)
