"""The deployment files agree with the code: configs that load, probes that exist, ports that
match, commands the CLI knows.

No Docker engine or Kubernetes cluster runs on this machine, so the images and manifests
are not started here; these checks catch what drifts when the code changes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from aistack.cli.main import build_parser
from aistack.config import parse
from aistack.http.routes import table
from aistack.http.table import PUBLIC, RouteTable

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ENV = {
    "AISTACK_MASTER_KEY": "a-master-key-of-some-length",
    "DATABASE_URL": "postgresql://aistack:pw@postgres:5432/aistack",
    "REDIS_URL": "redis://redis:6379/0",
}


def docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s(kind: str) -> dict[str, Any]:
    for p in (DEPLOY / "kubernetes").glob("*.yaml"):
        for d in docs(p):
            if isinstance(d, dict) and d.get("kind") == kind:
                return d
    raise AssertionError(f"no {kind} in deploy/kubernetes")


@pytest.mark.parametrize(
    "path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: str(p.relative_to(DEPLOY))
)
def test_every_yaml_file_parses(path: Path) -> None:
    assert docs(path)


@pytest.mark.parametrize("where", ["compose/aistack.yaml", "kubernetes/aistack.yaml"])
def test_the_shipped_gateway_configs_load(where: str) -> None:
    cfg = parse((DEPLOY / where).read_text(), where, env=ENV)
    assert cfg.server.host == "0.0.0.0" and cfg.server.port == 8434
    assert cfg.auth.master_key == ENV["AISTACK_MASTER_KEY"]
    assert cfg.database_url == ENV["DATABASE_URL"] and cfg.redis_url == ENV["REDIS_URL"]


def test_kustomize_lists_files_that_exist() -> None:
    kz = docs(DEPLOY / "kubernetes" / "kustomization.yaml")[0]
    for name in kz["resources"] + [f for g in kz["configMapGenerator"] for f in g["files"]]:
        assert (DEPLOY / "kubernetes" / name).is_file(), name


def test_the_probes_are_public_routes_and_the_ports_match() -> None:
    routes = RouteTable(table())
    pod = k8s("Deployment")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        path = c[probe]["httpGet"]["path"]
        methods, _, _ = routes.find(path)
        assert methods is not None and methods["GET"].access is PUBLIC, path
    assert c["ports"][0]["containerPort"] == 8434
    assert c["args"] == ["serve", "--host", "0.0.0.0", "--port", "8434"]
    svc = k8s("Service")["spec"]["ports"][0]
    assert svc["targetPort"] == c["ports"][0]["name"]
    secret = k8s("Secret")["stringData"]
    assert set(ENV) <= set(secret)


def test_the_commands_the_deployments_run_exist() -> None:
    parser = build_parser()
    job = k8s("Job")["spec"]["template"]["spec"]["containers"][0]
    compose = docs(DEPLOY / "compose" / "compose.yaml")[0]
    for args in (job["args"], compose["services"]["migrate"]["command"], ["serve"]):
        ns = parser.parse_args(args)
        assert getattr(ns, "func", None) is not None, args
    dockerfile = (DEPLOY.parent / "Dockerfile").read_text()
    assert 'CMD ["serve", "--host", "0.0.0.0", "--port", "8434"]' in dockerfile
    assert re.search(r"/health/live", dockerfile)


def test_compose_replicas_share_one_database_and_one_redis() -> None:
    compose = docs(DEPLOY / "compose" / "compose.yaml")[0]
    services = compose["services"]
    gw = services["aistack"]
    assert gw["deploy"]["replicas"] >= 2
    assert gw["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    env = gw["environment"]
    assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["DATABASE_URL"]
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert {"postgres", "redis", "lb"} <= set(services)
