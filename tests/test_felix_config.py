"""felix's settings: environment over file over FelixConfiguration node over default."""

from __future__ import annotations

import pytest

from datastore.errors import ValidationFailed
from datastore.models import FelixConfiguration
from felix.config import datastore_values, effective


def config(name: str, **spec: object) -> FelixConfiguration:
    return FelixConfiguration.model_validate({"metadata": {"name": name}, "spec": spec})


def test_precedence() -> None:
    stored = {
        "a": config("default", routeRefreshInterval="1m", healthPort=9001, prometheusMetricsEnabled=True),
        "b": config("node.n1", healthPort=9002),
        "c": config("node.other", healthPort=9003),
    }
    from_datastore = datastore_values(stored, "n1")
    assert from_datastore == {
        "route_refresh_interval": 60.0,
        "health_port": 9002,
        "prometheus_metrics_enabled": True,
    }
    settings = effective({}, {}, from_datastore)
    assert (settings.route_refresh_interval, settings.health_port) == (60.0, 9002)
    settings = effective({}, {"healthPort": 9100}, from_datastore)
    assert settings.health_port == 9100
    settings = effective(
        {"FELIX_HEALTHPORT": "9200", "FELIX_PROMETHEUSMETRICSENABLED": "false"},
        {"healthPort": 9100},
        from_datastore,
    )
    assert settings.health_port == 9200 and settings.prometheus_metrics_enabled is False
    assert effective({}, {}, {}).route_refresh_interval == 90.0


def test_bad_values_name_the_variable() -> None:
    with pytest.raises(ValidationFailed, match="FELIX_HEALTHPORT"):
        effective({"FELIX_HEALTHPORT": "http"}, {}, {})
    with pytest.raises(ValidationFailed, match="FELIX_LOGSEVERITYSCREEN"):
        effective({"FELIX_LOGSEVERITYSCREEN": "Loud"}, {}, {})
