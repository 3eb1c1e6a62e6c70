"""The policy the issue's first example names, shared by the rendering and the traffic tests."""

from __future__ import annotations

from typing import Any

# Selects the db pods; lets in TCP 8080 from the frontends of the policy's namespace only.
FRONTEND_TO_DB_8080: dict[str, Any] = {
    "selector": "role == 'db'",
    "ingress": [
        {
            "action": "Allow",
            "protocol": "TCP",
            "source": {"selector": "role == 'frontend'"},
            "destination": {"ports": [8080]},
        }
    ],
}
