"""docker-compose.yml and the Kubernetes manifests agree with the code they run: every
command line parses with the CLI's own parser, every ``DQPULSE_*`` variable is a setting,
every scrape target and probe points at the port its process serves, the model shipped
in the ConfigMap validates, and migrate runs before apply before anything reads the model."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from dqpulse.config import Settings
from dqpulse.spec import expand_secrets, parse_spec
from workers.cli import build_parser
from workers.probes import PORT_OFFSETS

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {f"DQPULSE_{name.upper()}" for name in Settings.model_fields}
DEFAULTS = Settings.model_construct()


def _load_all(path: Path) -> list[Any]:
    return [doc for doc in YAML(typ="safe").load_all(path.read_text()) if doc]


def _parses(argv: list[str], where: str) -> Any:
    assert argv and argv[0] == "dqpulse", f"{where}: runs {argv!r}, not the dqpulse CLI"
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{where}: `{' '.join(argv)}` is not a valid dqpulse command line")


def _served_port(args: Any, env: dict[str, str]) -> int | None:
    """The port the process started with ``args`` and ``env`` serves /metrics (and its
    probes) on, as the code computes it."""
    if args.command == "api":
        return int(args.port or env.get("DQPULSE_API_PORT", DEFAULTS.api_port))
    if args.command == "worker":
        base = int(env.get("DQPULSE_WORKER_METRICS_PORT", DEFAULTS.worker_metrics_port))
        return base + PORT_OFFSETS[args.role] if base else None
    return None


# ---- docker compose ----------------------------------------------------------------------

def _compose() -> dict[str, Any]:
    [doc] = _load_all(ROOT / "docker-compose.yml")
    return doc  # type: ignore[no-any-return]


def _dqpulse_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in _compose()["services"].items()
            if (svc.get("command") or [""])[0] == "dqpulse"}


def test_compose_commands_and_variables_are_the_clis_and_the_settings() -> None:
    services = _dqpulse_services()
    roles = {name: _parses(list(svc["command"]), f"docker-compose.yml: {name}")
             for name, svc in services.items()}
    assert {"migrate", "apply", "api"} <= {a.command for a in roles.values()}
    assert {"ingest", "score", "notify"} <= {a.role for a in roles.values()
                                            if a.command == "worker"}
    for name, svc in services.items():
        unknown = {k for k in svc.get("environment", {}) if k.startswith("DQPULSE_")} - SETTINGS
        assert not unknown, f"docker-compose.yml: {name}: not settings: {sorted(unknown)}"


def test_compose_runs_migrate_then_apply_before_the_processes_that_read_the_model() -> None:
    services = _dqpulse_services()
    by_command = {_parses(list(s["command"]), n).command: n for n, s in services.items()}
    migrate, apply = by_command["migrate"], by_command["apply"]
    assert services[apply]["depends_on"][migrate]["condition"] == \
        "service_completed_successfully"
    for name, svc in services.items():
        if name in (migrate, apply):
            continue
        assert svc["depends_on"][apply]["condition"] == "service_completed_successfully", name
    # apply reads the file it is given, mounted from the config folder
    args = _parses(list(services[apply]["command"]), apply)
    mounts = [_mount_target(v) for v in services[apply].get("volumes", [])]
    assert any(args.file.startswith(m.rstrip("/") + "/") for m in mounts), (args.file, mounts)


def _mount_target(volume: str) -> str:
    """``SOURCE:TARGET[:MODE]``, where SOURCE may hold ``${VAR:-default}``."""
    parts = volume.rsplit(":", 2)
    return parts[-2] if parts[-1] in ("ro", "rw") else parts[-1]


def test_compose_scrape_targets_and_health_checks_hit_the_ports_served() -> None:
    services = _dqpulse_services()
    served = {}
    for name, svc in services.items():
        port = _served_port(_parses(list(svc["command"]), name), svc.get("environment", {}))
        if port is not None:
            served[name] = port
    [prom] = _load_all(ROOT / "deploy" / "prometheus" / "prometheus.compose.yml")
    scraped = {}
    for job in prom["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.partition(":")
                scraped[host] = int(port)
        for dns in job.get("dns_sd_configs", []):  # replicas: one A record each
            for name in dns["names"]:
                scraped[name] = int(dns["port"])
    for name, port in served.items():
        assert scraped.get(name) == port, f"{name} serves :{port}, scraped at {scraped.get(name)}"
        check = " ".join(services[name].get("healthcheck", {}).get("test", []))
        assert f"127.0.0.1:{port}/" in check, f"{name}: health check {check!r} misses :{port}"
    for host in set(scraped) - set(served) - {"localhost"}:  # localhost: Prometheus itself
        assert host in _compose()["services"], f"scrape target {host} is no compose service"


# ---- kubernetes ---------------------------------------------------------------------------

def _k8s() -> list[dict[str, Any]]:
    return _load_all(ROOT / "deploy" / "k8s" / "dqpulse.yaml")


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def test_k8s_commands_variables_ports_and_probes_agree_with_the_code() -> None:
    docs = _k8s()
    settings_secret = {k for d in docs if d["kind"] == "Secret"
                       and d["metadata"]["name"] == "dqpulse-env" for k in d["stringData"]}
    assert settings_secret and settings_secret <= SETTINGS, settings_secret - SETTINGS
    commands: list[Any] = []
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        name = doc["metadata"]["name"]
        for container in _containers(doc):
            where = f"deploy/k8s/dqpulse.yaml: {name}/{container['name']}"
            argv = list(container.get("command", [])) + list(container.get("args", []))
            args = _parses(argv, where)
            commands.append((doc["kind"], args))
            env = {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
            unknown = {k for k in env if k.startswith("DQPULSE_")} - SETTINGS
            assert not unknown, f"{where}: not settings: {sorted(unknown)}"
            port = _served_port(args, env)
            if doc["kind"] != "Deployment" or port is None:
                continue
            annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
            assert int(annotations["prometheus.io/port"]) == port, where
            ports = {p.get("name", p["containerPort"]): p["containerPort"]
                     for p in container.get("ports", [])}
            assert port in ports.values(), where
            for probe in ("readinessProbe", "livenessProbe"):
                named = container[probe]["httpGet"]["port"]
                assert ports.get(named, named) == port, f"{where}: {probe}"
    jobs = [a.command for kind, a in commands if kind == "Job"]
    assert jobs[:2] == ["migrate", "apply"], jobs
    roles = {a.role for kind, a in commands if kind == "Deployment" and a.command == "worker"}
    assert {"ingest", "notify"} <= roles


def test_k8s_configmap_holds_a_model_whose_secrets_the_notifier_gets() -> None:
    docs = _k8s()
    [config] = [d for d in docs if d["kind"] == "ConfigMap"]
    spec = parse_spec(config["data"]["dqpulse.yaml"], source="k8s ConfigMap",
                      expand_env=False)
    assert spec.datasets
    [notify] = [d for d in docs if d["kind"] == "Deployment"
                and d["metadata"]["name"] == "dqpulse-notify"]
    secret_names = {ref["secretRef"]["name"] for c in _containers(notify)
                    for ref in c.get("envFrom", [])}
    available = {k for d in docs if d["kind"] == "Secret"
                 and d["metadata"]["name"] in secret_names for k in d["stringData"]}
    expand_secrets(spec, {name: "x" for name in available})  # raises on an unset ${VAR}


def test_yaml_reader_handles_compose_merge_keys() -> None:
    # the compose file relies on YAML merge keys (<<: *dqpulse); the reader must apply them
    doc = YAML(typ="safe").load(io.StringIO("a: &x {k: 1}\nb:\n  <<: *x\n  j: 2\n"))
    assert doc["b"] == {"k": 1, "j": 2}
