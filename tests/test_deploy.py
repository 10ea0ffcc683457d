"""The deployment files agree with the code and are safe as shipped: configs that load,
probes that exist, ports that match, commands the CLI knows; no example Secret applied and
its placeholders refused, forward auth only from the ingress controller, hardened pods.

No Docker engine or Kubernetes cluster runs on this machine, so the images and manifests
are not started here. `kubectl kustomize` and `docker-compose config` (Debian's
kubernetes-client and docker-compose, which `make test` installs when missing) build and
validate them; without those tools those two tests skip, saying why, except under
CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from aistack.cli.main import build_parser
from aistack.config import ConfigError, parse
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


def test_kustomize_lists_files_that_exist_and_never_a_secret() -> None:
    kz = docs(DEPLOY / "kubernetes" / "kustomization.yaml")[0]
    for name in kz["resources"] + [f for g in kz["configMapGenerator"] for f in g["files"]]:
        assert (DEPLOY / "kubernetes" / name).is_file(), name
    # A Secret applied from the repository would be a publicly known admin key, and
    # every re-apply would overwrite the real one.
    for name in kz["resources"]:
        kinds = {d.get("kind") for d in docs(DEPLOY / "kubernetes" / name)}
        assert "Secret" not in kinds, name
    assert "secretGenerator" not in kz
    assert (
        "kubectl -n aistack create secret generic aistack-secrets"
        in (DEPLOY / "kubernetes" / "kustomization.yaml").read_text()
    )


@pytest.mark.parametrize("where", ["compose/aistack.yaml", "kubernetes/aistack.yaml"])
def test_the_example_secrets_placeholders_are_refused_at_start(where: str) -> None:
    example = k8s("Secret")["stringData"]
    with pytest.raises(ConfigError, match=r"auth\.master_key: this is a placeholder"):
        parse((DEPLOY / where).read_text(), where, env={**ENV, **example})
    env = {**ENV, "DATABASE_URL": example["DATABASE_URL"]}
    with pytest.raises(ConfigError, match=r"database_url: its password is a placeholder"):
        parse((DEPLOY / where).read_text(), where, env=env)


def test_forward_auth_is_believed_only_from_the_ingress_controller() -> None:
    cfg = parse((DEPLOY / "kubernetes" / "aistack.yaml").read_text(), "k8s", env=ENV)
    assert cfg.auth.trusted_proxies and cfg.auth.admin_groups
    (policy,) = [d for d in docs(DEPLOY / "kubernetes" / "networkpolicy.yaml")]
    assert policy["kind"] == "NetworkPolicy"
    pod = k8s("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]  # one peer: the ingress controller's pods, in its namespace
    assert set(peer) == {"namespaceSelector", "podSelector"}
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "traefik"}
    assert rule["ports"] == [{"protocol": "TCP", "port": 8434}]
    assert cfg.metrics.auth  # /metrics is not the ingress's to hand out


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_the_pods_run_hardened(kind: str) -> None:
    pod = k8s(kind)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["containers"]:
        csc = c["securityContext"]
        assert csc["allowPrivilegeEscalation"] is False
        assert csc["readOnlyRootFilesystem"] is True
        assert csc["capabilities"] == {"drop": ["ALL"]}
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert "/tmp" in mounts  # the only writable places: /tmp (and the Deployment's /data)
    compose = docs(DEPLOY / "compose" / "compose.yaml")[0]["x-aistack"]
    assert compose["read_only"] is True and compose["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in compose["security_opt"]


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        why = f"{name} is not installed (`make test` installs it from Debian)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return found


def test_kubectl_kustomize_builds_the_manifests() -> None:
    kubectl = _tool("kubectl")
    out = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "kubernetes")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = sorted(d["kind"] for d in built)
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "Job", "Namespace", "NetworkPolicy",
         "PodDisruptionBudget", "Service"]
    )  # fmt: skip
    assert all(d["metadata"].get("namespace") in ("aistack", None) for d in built)


def test_docker_compose_config_validates_the_compose_file(tmp_path: Path) -> None:
    compose = _tool("docker-compose")
    f = str(DEPLOY / "compose" / "compose.yaml")
    env = {**os.environ, "AISTACK_MASTER_KEY": "k" * 32, "POSTGRES_PASSWORD": "pw"}
    out = subprocess.run([compose, "-p", "aistack", "-f", f, "config"], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert services["aistack"]["read_only"] is True
    # Without the secrets it refuses, rather than start with none.
    bare = {k: v for k, v in env.items() if k not in ("AISTACK_MASTER_KEY", "POSTGRES_PASSWORD")}
    refused = subprocess.run([compose, "-p", "aistack", "-f", f, "config"], env=bare,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert refused.returncode != 0 and "set POSTGRES_PASSWORD" in refused.stderr


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
