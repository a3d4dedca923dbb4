"""The public REST contract of DESIGN.md, checked against the app's OpenAPI document."""

from __future__ import annotations

import json
from pathlib import Path

from dqpulse.config import Settings
from service.app import create_app

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = {
    "/api/v1/datasets": ["get"],
    "/api/v1/datasets/{name}": ["get"],
    "/api/v1/datasets/{name}/metrics": ["get"],
    "/api/v1/datasets/{name}/metrics/{metric}": ["get"],
    "/api/v1/datasets/{name}/schema": ["get"],
    "/api/v1/incidents": ["get"],
    "/api/v1/incidents/{incident_id}": ["get"],
    "/api/v1/incidents/{incident_id}/acknowledge": ["post"],
    "/api/v1/incidents/{incident_id}/resolve": ["post"],
    "/api/v1/incidents/{incident_id}/feedback": ["post"],
    "/api/v1/incidents/{incident_id}/root-cause": ["get"],
    "/api/v1/lineage": ["get"],
    "/api/v1/lineage/openlineage": ["post"],
    "/healthz": ["get"],
    "/readyz": ["get"],
}


def _schema() -> dict:
    return create_app(Settings(database_url="sqlite://")).openapi()


def test_every_contract_route_is_served():
    paths = _schema()["paths"]
    for path, methods in CONTRACT.items():
        assert path in paths, path
        for method in methods:
            assert method in paths[path], f"{method.upper()} {path}"


def test_metric_points_have_the_contract_fields():
    schema = _schema()["components"]["schemas"]
    assert {"window_start", "value", "score", "anomalous"} <= set(schema["PointRead"]["properties"])
    incidents = _schema()["paths"]["/api/v1/incidents"]["get"]
    incident_query = {p["name"] for p in incidents["parameters"]}
    assert {"dataset", "status", "kind", "since", "limit", "cursor"} <= incident_query
    series_query = {p["name"] for p in
                    _schema()["paths"]["/api/v1/datasets/{name}/metrics/{metric}"]["get"]
                    ["parameters"]}
    assert {"field", "start", "end", "step"} <= series_query


def test_docs_openapi_json_is_current():
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert committed == json.loads(json.dumps(_schema(), sort_keys=True)), \
        "docs/openapi.json is stale: run scripts/openapi"
