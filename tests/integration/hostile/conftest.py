"""The web test helpers (cookie-keeping client, registered paho nodes) for the hostile-input tests."""

from tests.integration.web.conftest import client, nodes

__all__ = ["client", "nodes"]
