#!/usr/bin/env python3
"""Validates deploy/: run through scripts/validate-deploy, which installs the tools it imports.

Each check parses the files for real: the compose file against the Compose Specification JSON
schema, the Kubernetes manifests against the Kubernetes schemas (strict: unknown fields are
errors), then the cross-references no schema sees: interpolated variables, depends_on, volumes,
NATS users and passwords against deploy/nats, metrics ports against Prometheus, selectors, the
Secrets and ConfigMaps the manifests expect (each must be explained in deploy/README.md).
Every problem is reported, then the exit status is 1; 0 when there is none.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import jsonschema
import yaml

# The four binaries and their admin/metrics ports.
SERVICES = {"simulator": 9100, "ingest": 9101, "processors": 9102, "alerts": 9103, "web": 9104}
# Ports a service serves besides its admin port (the web view's page).
EXTRA_PORTS = {"web": [8080]}


class Report:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.checks = 0

    def check(self, ok: bool, message: str) -> bool:
        self.checks += 1
        if not ok:
            self.errors.append(message)
        return ok


def load_yaml_docs(path: Path, report: Report) -> list:
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        report.check(False, f"{path}: not valid YAML: {e}")
        return []


# --- deploy/nats facts ---------------------------------------------------------------------------


def nats_users(deploy: Path) -> dict[str, str]:
    """user -> password variable, from accounts.conf (`user: x` then `password: $VAR`)."""
    text = (deploy / "nats/accounts.conf").read_text()
    pairs = re.findall(r"user:\s*([A-Za-z0-9_-]+)\s*[\n,]\s*password:\s*\$([A-Z0-9_]+)", text)
    return dict(pairs)


def dev_passwords(deploy: Path) -> dict[str, str]:
    out = {}
    for line in (deploy / "nats/passwords.conf").read_text().splitlines():
        m = re.match(r'^\s*([A-Z0-9_]+)\s*:\s*"([^"]*)"', line)
        if m:
            out[m[1]] = m[2]
    return out


def dotenv(path: Path) -> dict[str, str]:
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip()
    return out


def dockerfile_binaries(deploy: Path, report: Report) -> set[str]:
    text = (deploy / "Dockerfile").read_text()
    stages = re.findall(r"(?im)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text)
    report.check(bool(stages), "Dockerfile: no FROM")
    if stages:
        report.check(stages[-1][0] == "debian:bookworm-slim",
                     f"Dockerfile: the runtime stage is {stages[-1][0]}, not debian:bookworm-slim")
    final = text[text.rfind("\nFROM "):] if "\nFROM " in text else text
    users = re.findall(r"(?m)^USER\s+(\S+)", final)
    report.check(bool(users) and users[-1].split(":")[0] not in ("root", "0"),
                 f"Dockerfile: the runtime stage must end as a non-root USER (got {users})")
    packages = set(re.findall(r"-p\s+(citypulse-[a-z]+)", text))
    m = re.search(r"for bin in ([^;]+);", text)
    bins = set(m[1].split()) if m else set()
    # Every package's binary is copied (a package may bring more, e.g. web's `citypulse` tool).
    report.check(packages <= bins and len(packages) == len(SERVICES),
                 f"Dockerfile: builds {sorted(packages)} but copies {sorted(bins)}")
    return bins


# --- compose ---------------------------------------------------------------------------------------


def compose_schema() -> dict:
    import importlib.resources as res
    ref = res.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    return json.loads(ref.read_text())


def schema_errors(schema: dict, doc) -> list[str]:
    cls = jsonschema.validators.validator_for(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))]


def check_compose(deploy: Path, report: Report, bins: set[str]) -> None:
    path = deploy / "compose.yaml"
    if not report.check(path.exists(), f"{path}: missing"):
        return
    docs = load_yaml_docs(path, report)
    if not report.check(len(docs) == 1, f"{path}: expected one YAML document"):
        return
    doc = docs[0]
    for err in schema_errors(compose_schema(), doc):
        report.check(False, f"{path}: compose-spec: {err}")
    services = doc.get("services") or {}
    if not isinstance(services, dict):
        return

    env = dotenv(deploy / ".env")
    raw = path.read_text()
    for var in sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", raw))):
        report.check(var in env, f"{path}: ${{{var}}} is not set in {deploy / '.env'}")

    declared_volumes = set((doc.get("volumes") or {}).keys())
    users = nats_users(deploy)
    passwords = dev_passwords(deploy)
    prom = prometheus_targets(deploy / "prometheus/prometheus-compose.yml", report)
    for name, svc in services.items():
        if not isinstance(svc, dict):
            continue
        deps = svc.get("depends_on") or []
        for dep in deps if isinstance(deps, list) else deps.keys():
            report.check(dep in services, f"{path}: {name} depends on unknown service {dep}")
        for vol in svc.get("volumes") or []:
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith((".", "/")):
                generated = source.startswith("./tls/dev")  # written by tls/gen-dev-certs.sh
                report.check(generated or (deploy / source).resolve().exists(),
                             f"{path}: {name} mounts {source}, which does not exist")
            elif source:
                report.check(source in declared_volumes, f"{path}: {name} uses undeclared volume {source}")
        command = svc.get("command") or []
        if isinstance(command, list) and command and command[0].startswith("citypulse-"):
            report.check(command[0] in bins, f"{path}: {name} runs {command[0]}, not built by the Dockerfile")
        if isinstance(command, list) and "-c" in command:
            conf = command[command.index("-c") + 1]
            report.check(conf.startswith("/etc/nats/") and (deploy / "nats" / conf[len("/etc/nats/"):]).exists(),
                         f"{path}: {name} starts nats-server with {conf}, not a file of deploy/nats")
        environment = svc.get("environment") or {}
        if isinstance(environment, dict) and "NATS_USER" in environment:
            user = environment["NATS_USER"]
            var = users.get(user)
            if report.check(var is not None, f"{path}: {name}: NATS user {user} is not in accounts.conf"):
                report.check(environment.get("NATS_PASSWORD") == f"${{{var}}}",
                             f"{path}: {name}: NATS_PASSWORD should be ${{{var}}}, the password of {user}")
                report.check(env.get(var) == passwords.get(var),
                             f".env {var} differs from deploy/nats/passwords.conf")
        if name in SERVICES and isinstance(environment, dict):
            port = SERVICES[name]
            addr = environment.get(f"CITYPULSE_{name.upper()}_METRICS_ADDR", "")
            report.check(addr.endswith(f":{port}"), f"{path}: {name} metrics address {addr!r}, want port {port}")
            report.check(prom.get(f"citypulse-{name}") == [f"{name}:{port}"],
                         f"prometheus-compose.yml: job citypulse-{name} should scrape {name}:{port}")
    for name in SERVICES:
        report.check(name in services, f"{path}: service {name} missing")
    nats_nodes = [n for n in services if re.fullmatch(r"nats-\d+", n)]
    report.check(len(nats_nodes) == 3, f"{path}: expected 3 NATS nodes, found {nats_nodes}")
    for other in ("postgres", "prometheus", "grafana"):
        report.check(other in services, f"{path}: service {other} missing")


# --- Prometheus, Grafana ---------------------------------------------------------------------------


def prometheus_targets(path: Path, report: Report) -> dict[str, list[str]]:
    if not report.check(path.exists(), f"{path}: missing"):
        return {}
    docs = load_yaml_docs(path, report)
    if not docs or not isinstance(docs[0], dict):
        report.check(False, f"{path}: not a Prometheus config")
        return {}
    jobs = {}
    for sc in docs[0].get("scrape_configs") or []:
        name = sc.get("job_name")
        report.check(bool(name), f"{path}: a scrape config without job_name")
        targets = [t for static in sc.get("static_configs") or [] for t in static.get("targets") or []]
        for t in targets:
            report.check(re.fullmatch(r"[A-Za-z0-9_.-]+:\d+", t) is not None, f"{path}: bad target {t!r}")
        report.check(name not in jobs, f"{path}: job {name} twice")
        jobs[name] = targets
    return jobs


def check_prometheus(deploy: Path, report: Report) -> None:
    local = prometheus_targets(deploy / "prometheus/prometheus.yml", report)
    compose = prometheus_targets(deploy / "prometheus/prometheus-compose.yml", report)
    report.check(set(local) == set(compose), f"prometheus.yml jobs {sorted(local)} != prometheus-compose.yml {sorted(compose)}")
    for name, port in SERVICES.items():
        report.check(local.get(f"citypulse-{name}") == [f"127.0.0.1:{port}"],
                     f"prometheus.yml: job citypulse-{name} should scrape 127.0.0.1:{port}")


def check_grafana(deploy: Path, report: Report) -> None:
    base = deploy / "grafana/provisioning"
    ds_files = sorted((base / "datasources").glob("*.yaml"))
    db_files = sorted((base / "dashboards").glob("*.yaml"))
    report.check(bool(ds_files), f"{base}/datasources: no provisioning file")
    report.check(bool(db_files), f"{base}/dashboards: no provisioning file")
    for f in ds_files:
        for doc in load_yaml_docs(f, report):
            report.check(doc.get("apiVersion") == 1, f"{f}: apiVersion must be 1")
            for ds in doc.get("datasources") or []:
                report.check(all(ds.get(k) for k in ("name", "type", "url")), f"{f}: datasource needs name, type, url")
    for f in db_files:
        for doc in load_yaml_docs(f, report):
            report.check(doc.get("apiVersion") == 1, f"{f}: apiVersion must be 1")
            for p in doc.get("providers") or []:
                report.check(bool((p.get("options") or {}).get("path")), f"{f}: provider {p.get('name')} has no options.path")
    for f in sorted((deploy / "grafana/dashboards").glob("*.json")):
        try:
            dash = json.loads(f.read_text())
            report.check(bool(dash.get("title")), f"{f}: dashboard without a title")
        except json.JSONDecodeError as e:
            report.check(False, f"{f}: not JSON: {e}")


# --- Kubernetes ------------------------------------------------------------------------------------


def pod_templates(doc: dict) -> list[dict]:
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [doc["spec"]["template"]]
    return []


def check_kubernetes(deploy: Path, report: Report, k8s_version: str) -> None:
    import kubernetes_validate

    kdir = deploy / "k8s"
    files = sorted(p for p in kdir.glob("*.yaml") if p.name != "kustomization.yaml")
    report.check(bool(files), f"{kdir}: no manifests")
    kustom = load_yaml_docs(kdir / "kustomization.yaml", report) if (kdir / "kustomization.yaml").exists() else []
    if report.check(bool(kustom), f"{kdir}/kustomization.yaml: missing"):
        listed = set(kustom[0].get("resources") or [])
        report.check(listed == {f.name for f in files},
                     f"kustomization.yaml resources {sorted(listed)} != manifests {sorted(f.name for f in files)}")

    docs: list[tuple[Path, dict]] = []
    for f in files:
        for doc in load_yaml_docs(f, report):
            if not report.check(isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc,
                                f"{f}: a document without kind/apiVersion"):
                continue
            try:
                kubernetes_validate.validate(doc, k8s_version, strict=True)
                report.check(True, "")
            except kubernetes_validate.ValidationError as e:
                where = ".".join(map(str, e.path))
                report.check(False, f"{f}: {doc['kind']}/{doc.get('metadata', {}).get('name')}: {where}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                report.check(False, f"{f}: {e.message}")
            docs.append((f, doc))

    readme = (deploy / "README.md").read_text() if (deploy / "README.md").exists() else ""
    defined = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    workloads = [(f, d) for f, d in docs if pod_templates(d)]
    users = nats_users(deploy)
    for f, d in workloads:
        name = d["metadata"]["name"]
        tmpl = pod_templates(d)[0]
        labels = tmpl.get("metadata", {}).get("labels", {})
        match = d["spec"].get("selector", {}).get("matchLabels", {})
        report.check(match.items() <= labels.items(), f"{f}: {name}: selector {match} does not match its pod labels")
        spec = tmpl["spec"]
        for vol in spec.get("volumes") or []:
            refs = [("ConfigMap", (vol.get("configMap") or {}).get("name")),
                    ("Secret", (vol.get("secret") or {}).get("secretName"))]
            for src in (vol.get("projected") or {}).get("sources") or []:
                refs.append(("ConfigMap", (src.get("configMap") or {}).get("name")))
                refs.append(("Secret", (src.get("secret") or {}).get("name")))
            for kind, ref in refs:
                if ref:
                    report.check((kind, ref) in defined or f"`{ref}`" in readme,
                                 f"{f}: {name} needs {kind} {ref}: neither defined nor explained in deploy/README.md")
        for c in spec.get("containers") or []:
            env = {e["name"]: e for e in c.get("env") or []}
            for e in env.values():
                ref = ((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
                if ref:
                    report.check(("Secret", ref) in defined or f"`{ref}`" in readme,
                                 f"{f}: {name} reads Secret {ref}: neither defined nor explained in deploy/README.md")
            if "NATS_USER" in env:
                user = env["NATS_USER"].get("value")
                key = ((env.get("NATS_PASSWORD", {}).get("valueFrom") or {}).get("secretKeyRef") or {}).get("key")
                report.check(user in users and users[user] == key,
                             f"{f}: {name}: NATS_USER {user} with password key {key}; accounts.conf says {users.get(user)}")
            cmd = c.get("command") or []
            if cmd and cmd[0] == "nats-server" and "-c" in cmd:
                conf = cmd[cmd.index("-c") + 1]
                report.check((deploy / "nats" / conf.removeprefix("/etc/nats/")).exists(),
                             f"{f}: {name} starts nats-server with {conf}, not a file of deploy/nats")
            svc = cmd[0].removeprefix("citypulse-") if cmd else ""
            if svc in SERVICES:
                port = SERVICES[svc]
                ports = [p.get("containerPort") for p in c.get("ports") or []]
                addr = (env.get(f"CITYPULSE_{svc.upper()}_METRICS_ADDR") or {}).get("value", "")
                annotation = tmpl.get("metadata", {}).get("annotations", {}).get("prometheus.io/port")
                report.check(ports == [port] + EXTRA_PORTS.get(svc, []) and addr.endswith(f":{port}")
                             and annotation == str(port),
                             f"{f}: {name}: admin port, metrics address and scrape annotation must all be {port}")
    for f, d in docs:
        if d["kind"] != "Service":
            continue
        sel = d["spec"].get("selector") or {}
        hit = any(sel.items() <= pod_templates(w)[0].get("metadata", {}).get("labels", {}).items() for _, w in workloads)
        report.check(hit, f"{f}: Service {d['metadata']['name']} selects no pods ({sel})")
    names = {d["metadata"]["name"] for _, d in workloads}
    for svc in SERVICES:
        report.check(svc in names, f"{kdir}: no workload for {svc}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--deploy-dir", type=Path, required=True)
    ap.add_argument("--kubernetes-version", default="1.33.0")
    args = ap.parse_args()
    deploy = args.deploy_dir.resolve()
    report = Report()
    bins = dockerfile_binaries(deploy, report)
    check_compose(deploy, report, bins)
    check_prometheus(deploy, report)
    check_grafana(deploy, report)
    check_kubernetes(deploy, report, args.kubernetes_version)
    for e in report.errors:
        print(f"validate-deploy: {e}", file=sys.stderr)
    if report.errors:
        print(f"validate-deploy: {len(report.errors)} problem(s) in {deploy}", file=sys.stderr)
        return 1
    print(f"validate-deploy: {deploy} OK ({report.checks} checks: compose-spec, Kubernetes "
          f"{args.kubernetes_version} strict schemas, cross-references)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
