#!/usr/bin/env python3
"""Asserts what charts/mesh renders, beyond schema validity: the flags each service must get
(docs/contracts.md, DESIGN.md ports), probes, security context, volumes, labels and the
PodDisruptionBudgets. Used by charts/check.sh.

usage: check_rendered.py RENDERED.yaml RELEASE VALUES.yaml [OVERRIDE-VALUES.yaml]
Prints nothing and exits 0 when everything holds; otherwise one line per problem, exit 1.
"""
import sys

import yaml


def merge(base, over):
    """Helm's value merge: maps merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base.get(k), v)
        return out
    return over


def expected_args(service, release, values):
    galley = f"http://{release}-galley:9901"
    td = values["trustDomain"]
    per_service = {
        "galley": ["--mcp-addr", "0.0.0.0:9901", "--api-addr", "0.0.0.0:9902",
                   "--config-dir", "/etc/mesh/config", "--store", "/var/lib/galley/store"],
        "pilot": ["--galley-addr", galley, "--xds-addr", "0.0.0.0:15010",
                  "--debug-addr", "0.0.0.0:8080", "--trust-domain", td],
        "citadel": ["--grpc-addr", "0.0.0.0:8060", "--state-dir", "/var/lib/citadel",
                    "--trust-domain", td],
        "mixer": ["--grpc-addr", "0.0.0.0:9091", "--galley-addr", galley],
    }
    common = ["--monitoring-addr", "0.0.0.0:15014", "--log-level", values["logLevel"]]
    return per_service[service] + common


PORTS = {
    "galley": {9901, 9902, 15014},
    "pilot": {15010, 8080, 15014},
    "citadel": {8060, 15014},
    "mixer": {9091, 15014},
}

# Where each service writes: every one must be an emptyDir or the config map (root is read-only).
WRITABLE = {
    "galley": {"/var/lib/galley", "/tmp"},
    "pilot": {"/tmp"},
    "citadel": {"/var/lib/citadel", "/tmp"},
    "mixer": {"/tmp"},
}


def check(docs, release, values):
    problems = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    tag = values["image"].get("tag") or None

    for svc in ("galley", "pilot", "citadel", "mixer"):
        name = f"{release}-{svc}"
        where = f"{svc}:"
        for kind in ("Deployment", "Service", "ServiceAccount"):
            if name not in by_kind.get(kind, {}):
                problems.append(f"{where} no {kind} {name}")
        dep = by_kind.get("Deployment", {}).get(name)
        if dep is None:
            continue
        labels = dep["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                    "app.kubernetes.io/component", "app.kubernetes.io/version"):
            if key not in labels:
                problems.append(f"{where} Deployment lacks label {key}")
        if labels.get("app.kubernetes.io/component") != svc:
            problems.append(f"{where} component label is {labels.get('app.kubernetes.io/component')!r}")
        if dep["spec"]["replicas"] != values[svc]["replicas"]:
            problems.append(f"{where} replicas {dep['spec']['replicas']} != {values[svc]['replicas']}")
        pod = dep["spec"]["template"]["spec"]
        if pod.get("serviceAccountName") != name:
            problems.append(f"{where} serviceAccountName is {pod.get('serviceAccountName')!r}")
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != 1337:
            problems.append(f"{where} pod securityContext {psc}")
        (c,) = pod["containers"]
        if c.get("command") != [f"/usr/local/bin/{svc}"]:
            problems.append(f"{where} command {c.get('command')}")
        want = expected_args(svc, release, values)
        if c.get("args") != want:
            problems.append(f"{where} args {c.get('args')} != {want}")
        image = c["image"]
        repo = values["image"]["repository"].rstrip("/")
        if not image.startswith(f"{repo}/{svc}:") or (tag and not image.endswith(f":{tag}")):
            problems.append(f"{where} image {image}")
        if {p["containerPort"] for p in c.get("ports", [])} != PORTS[svc]:
            problems.append(f"{where} container ports {c.get('ports')}")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = c.get(probe, {}).get("httpGet", {})
            port = get.get("port")
            port_no = next((p["containerPort"] for p in c.get("ports", []) if p["name"] == port), port)
            if get.get("path") != path or port_no != 15014:
                problems.append(f"{where} {probe} {get}")
        sc = c.get("securityContext", {})
        if not (sc.get("runAsNonRoot") is True and sc.get("runAsUser") == 1337
                and sc.get("readOnlyRootFilesystem") is True
                and sc.get("allowPrivilegeEscalation") is False
                and sc.get("capabilities", {}).get("drop") == ["ALL"]):
            problems.append(f"{where} container securityContext {sc}")
        if c.get("resources") != values[svc]["resources"]:
            problems.append(f"{where} resources {c.get('resources')} != {values[svc]['resources']}")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        for path in WRITABLE[svc]:
            m = mounts.get(path)
            if m is None or "emptyDir" not in volumes.get(m["name"], {}):
                problems.append(f"{where} {path} is not an emptyDir mount")
        if svc == "galley":
            m = mounts.get("/etc/mesh/config")
            cm = volumes.get(m["name"], {}).get("configMap", {}) if m else {}
            if cm.get("name") != f"{release}-config":
                problems.append(f"{where} /etc/mesh/config is not the ConfigMap {release}-config")
        svc_obj = by_kind.get("Service", {}).get(name)
        if svc_obj is not None:
            if {p["port"] for p in svc_obj["spec"]["ports"]} != PORTS[svc]:
                problems.append(f"{where} Service ports {svc_obj['spec']['ports']}")
            sel = svc_obj["spec"]["selector"]
            pod_labels = dep["spec"]["template"]["metadata"]["labels"]
            if not sel or any(pod_labels.get(k) != v for k, v in sel.items()):
                problems.append(f"{where} Service selector {sel} does not match the pods")

        pdb = by_kind.get("PodDisruptionBudget", {}).get(name)
        wants_pdb = svc in ("pilot", "mixer") and values[svc]["replicas"] > 1
        if wants_pdb and pdb is None:
            problems.append(f"{where} {values[svc]['replicas']} replicas but no PodDisruptionBudget")
        if not wants_pdb and pdb is not None:
            problems.append(f"{where} unexpected PodDisruptionBudget")

    cm = by_kind.get("ConfigMap", {}).get(f"{release}-config")
    if cm is None:
        problems.append(f"no ConfigMap {release}-config")
    elif (cm.get("data") or {}) != (values.get("config") or {}):
        problems.append(f"ConfigMap data {sorted((cm.get('data') or {}))} != values.config")
    else:
        for file, text in (cm.get("data") or {}).items():
            for doc in yaml.safe_load_all(text):
                if doc is not None and not ({"apiVersion", "kind", "metadata"} <= set(doc)):
                    problems.append(f"config {file}: a document lacks apiVersion/kind/metadata")

    allowed = {"Deployment", "Service", "ServiceAccount", "ConfigMap", "PodDisruptionBudget"}
    for kind in set(by_kind) - allowed:
        problems.append(f"unexpected kind {kind}")
    return problems


def main():
    rendered, release, values_file, *overrides = sys.argv[1:]
    with open(values_file) as f:
        values = yaml.safe_load(f)
    for o in overrides:
        with open(o) as f:
            values = merge(values, yaml.safe_load(f) or {})
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    problems = check(docs, release, values)
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
