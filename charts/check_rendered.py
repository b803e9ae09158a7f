#!/usr/bin/env python3
"""Asserts what charts/mesh renders, beyond schema validity: the flags each service must get
(docs/contracts.md, DESIGN.md ports) and that every flag and env name exists in the binary's
clap definition (read from the Rust sources), probes, security context, volumes, labels, the
PodDisruptionBudgets and HorizontalPodAutoscalers, RBAC against charts/mesh/rbac-needs.yaml (exactly),
the admission webhooks and their TLS, the ingress gateway, Redis and the dashboards ConfigMap.
Used by charts/check.sh.

usage: check_rendered.py RENDERED.yaml RELEASE VALUES.yaml [OVERRIDE-VALUES.yaml]
Prints nothing and exits 0 when everything holds; otherwise one line per problem, exit 1.
"""
import base64
import glob
import os
import re
import subprocess
import sys
import tempfile

import yaml

CHARTS = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(CHARTS, "mesh")
REPO = os.path.dirname(CHARTS)


def merge(base, over):
    """Helm's value merge: maps merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base.get(k), v)
        return out
    return over


def expected_args(service, release, values, ns=None):
    galley = f"http://{release}-galley:9901"
    td = values["trustDomain"]
    per_service = {
        "galley": ["--mcp-addr", "0.0.0.0:9901", "--api-addr", "0.0.0.0:9902",
                   "--config-dir", "/etc/mesh/config", "--store", "/var/lib/galley/store",
                   "--kube", "--mesh-config", "/etc/mesh/mesh/mesh"],
        "pilot": ["--galley-addr", galley, "--xds-addr", "0.0.0.0:15010",
                  "--debug-addr", "0.0.0.0:8080", "--trust-domain", td],
        "citadel": ["--grpc-addr", "0.0.0.0:8060", "--state-dir", "/var/lib/citadel",
                    "--trust-domain", td, "--kube-tokenreview", "--ca-secret",
                    "--ca-secret-namespace", ns or "default"],
        "mixer": ["--grpc-addr", "0.0.0.0:9091", "--galley-addr", galley],
    }
    common = ["--monitoring-addr", "0.0.0.0:15014", "--log-level", values["logLevel"],
              "--log-format", values["logFormat"]]
    return per_service[service] + pilot_extra_args(service, release, values, ns) + common


def chart_app_version():
    with open(os.path.join(CHART, "Chart.yaml")) as f:
        return str(yaml.safe_load(f)["appVersion"])


def pilot_extra_args(service, release, values, ns):
    """Pilot's injection webhook, xDS-over-mTLS and gateway-credential flags, when the values
    turn them on."""
    if service == "galley":
        if values["galley"]["validationWebhook"]["enabled"]:
            return ["--webhook-addr", "0.0.0.0:9443",
                    "--webhook-cert", "/etc/mesh/webhook-tls/tls.crt",
                    "--webhook-key", "/etc/mesh/webhook-tls/tls.key"]
        return []
    if service != "pilot":
        return []
    pilot = values["pilot"]
    repo = values["image"]["repository"].rstrip("/")
    tag = values["image"].get("tag") or chart_app_version()
    args = []
    if pilot["sidecarInjectorWebhook"]["enabled"]:
        args += ["--inject-addr", "0.0.0.0:15017",
                 "--inject-cert", "/etc/mesh/webhook-tls/tls.crt",
                 "--inject-key", "/etc/mesh/webhook-tls/tls.key",
                 "--inject-proxy-image", f"{repo}/mesh-proxy:{tag}",
                 "--inject-init-image", pilot["injectInitImage"],
                 "--inject-xds-addr",
                 f"https://{release}-pilot.{ns}.svc:15012" if pilot["xdsTls"]["enabled"]
                 else f"http://{release}-pilot.{ns}.svc:15010",
                 "--inject-citadel-addr", f"http://{release}-citadel.{ns}.svc:8060",
                 "--inject-mixer-addr", f"http://{release}-mixer.{ns}.svc:9091"]
    if pilot["xdsTls"]["enabled"]:
        args += ["--xds-tls-addr", "0.0.0.0:15012",
                 "--citadel-addr", f"http://{release}-citadel:8060",
                 "--citadel-token-file", "/var/run/secrets/tokens/istio-token"]
    creds = pilot.get("gatewayCredentials") or {}
    if creds.get("kubernetes"):
        args += ["--credential-kube"]
        if creds.get("namespaces"):
            args += ["--credential-kube-namespaces", ",".join(creds["namespaces"])]
        if creds.get("plaintext"):
            args += ["--credential-plaintext"]
    return args


def expected_ports(service, values):
    ports = set(PORTS[service])
    if service == "galley" and values["galley"]["validationWebhook"]["enabled"]:
        ports.add(9443)
    if service == "pilot":
        if values["pilot"]["sidecarInjectorWebhook"]["enabled"]:
            ports.add(15017)
        if values["pilot"]["xdsTls"]["enabled"]:
            ports.add(15012)
    return ports


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


# Per service with a webhook: (values key, targetPort of the Service's port 443).
WEBHOOK = {"galley": ("validationWebhook", 9443), "pilot": ("sidecarInjectorWebhook", 15017)}

# Where each binary's clap flags are declared (plus the shared LogArgs).
FLAG_SOURCES = {
    "galley": ["galley/src/main.rs"],
    "pilot": ["pilot/src/args.rs"],
    "citadel": ["citadel/src/main.rs"],
    "mixer": ["mixer/src/main.rs"],
    "mesh-proxy": ["proxy/src/main.rs"],
}
_flag_cache = {}


def source_flags(binary):
    """The long flags and env names a binary's clap derive declares, read from its sources."""
    if binary in _flag_cache:
        return _flag_cache[binary]
    flags, envs = set(), set()
    for rel in FLAG_SOURCES[binary] + ["runtime/src/args.rs"]:
        with open(os.path.join(REPO, rel)) as f:
            text = f.read()
        # `#[arg(...)]` (possibly over several lines) followed by `[pub] field: Type`.
        for m in re.finditer(r"#\[arg\((.*?)\)\]\s*(?:///[^\n]*\n\s*)*(?:pub\s+)?(\w+)\s*:", text, re.S):
            attrs, field = m.group(1), m.group(2)
            if not re.search(r"\blong\b", attrs):
                continue
            named = re.search(r'\blong\s*=\s*"([^"]+)"', attrs)
            flags.add("--" + (named.group(1) if named else field.replace("_", "-")))
            env = re.search(r'\benv\s*=\s*"([^"]+)"', attrs)
            if env:
                envs.add(env.group(1))
    _flag_cache[binary] = (flags, envs)
    return flags, envs


def check_flags_exist(binary, container):
    """Every `--flag` in the container's args is one the binary declares."""
    flags, _ = source_flags(binary)
    if not flags:
        return [f"{binary}: no clap flags found in {FLAG_SOURCES[binary]}"]
    return [f"{binary}: flag {a} does not exist in {FLAG_SOURCES[binary]}"
            for a in container.get("args", []) if a.startswith("--") and a not in flags]


def check_scrape(where, dep, values, port):
    ann = dep["spec"]["template"]["metadata"].get("annotations") or {}
    want = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics"} if values["prometheusScrape"] else {}
    got = {k: v for k, v in ann.items() if k.startswith("prometheus.io/")}
    return [] if got == want else [f"{where} scrape annotations {got} != {want}"]


def check_container_security(where, c, uid):
    sc = c.get("securityContext", {})
    if not (sc.get("runAsNonRoot") is True and sc.get("runAsUser") == uid
            and sc.get("readOnlyRootFilesystem") is True
            and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"]
            and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"):
        return [f"{where} container securityContext {sc}"]
    return []


def autoscaled(v):
    return bool((v.get("autoscaling") or {}).get("enabled"))


def min_replicas(v):
    return v["autoscaling"]["minReplicas"] if autoscaled(v) else v["replicas"]


def check_scaling(by_kind, name, where, v):
    """Fixed `replicas` without autoscaling; with it, no `replicas` and an HPA as configured."""
    problems = []
    dep = by_kind["Deployment"][name]
    hpa = by_kind.get("HorizontalPodAutoscaler", {}).get(name)
    if autoscaled(v):
        a = v["autoscaling"]
        if "replicas" in dep["spec"]:
            problems.append(f"{where} Deployment sets replicas although an HPA owns the count")
        if hpa is None:
            return problems + [f"{where} autoscaling on but no HorizontalPodAutoscaler"]
        spec = hpa["spec"]
        ref = spec.get("scaleTargetRef", {})
        if (ref.get("kind"), ref.get("name"), ref.get("apiVersion")) != ("Deployment", name, "apps/v1"):
            problems.append(f"{where} HPA targets {ref}")
        if (spec.get("minReplicas"), spec.get("maxReplicas")) != (a["minReplicas"], a["maxReplicas"]):
            problems.append(f"{where} HPA min/max {spec.get('minReplicas')}/{spec.get('maxReplicas')}")
        want = [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": a["targetCPUUtilizationPercentage"]}}}]
        if spec.get("metrics") != want:
            problems.append(f"{where} HPA metrics {spec.get('metrics')} != {want}")
        if hpa["apiVersion"] != "autoscaling/v2":
            problems.append(f"{where} HPA apiVersion {hpa['apiVersion']}")
    else:
        if dep["spec"].get("replicas") != v["replicas"]:
            problems.append(f"{where} replicas {dep['spec'].get('replicas')} != {v['replicas']}")
        if hpa is not None:
            problems.append(f"{where} HPA rendered with autoscaling off")
    return problems


def check_pdb(by_kind, name, where, v):
    pdb = by_kind.get("PodDisruptionBudget", {}).get(name)
    n = min_replicas(v)
    if n > 1 and pdb is None:
        return [f"{where} at least {n} pods but no PodDisruptionBudget"]
    if n <= 1 and pdb is not None:
        return [f"{where} PodDisruptionBudget with one pod (it would block node drains)"]
    if pdb is not None:
        dep = by_kind["Deployment"][name]
        if pdb["spec"].get("minAvailable") != 1 or \
                pdb["spec"]["selector"]["matchLabels"] != dep["spec"]["selector"]["matchLabels"]:
            return [f"{where} PodDisruptionBudget spec {pdb['spec']}"]
    return []


# --- RBAC ------------------------------------------------------------------------------------

# Signs that a crate calls the Kubernetes API server.
KUBE_CLIENT = re.compile(r"\bkube::|\bk8s_openapi\b|\bkube\s*=|\bk8s-openapi\s*=")
CRATE_DIR = {"galley": "galley", "pilot": "pilot", "citadel": "citadel", "mixer": "mixer"}


def crate_calls_api_server(svc):
    files = glob.glob(os.path.join(REPO, CRATE_DIR[svc], "src", "**", "*.rs"), recursive=True)
    files.append(os.path.join(REPO, CRATE_DIR[svc], "Cargo.toml"))
    hits = []
    for path in files:
        with open(path) as f:
            if KUBE_CLIENT.search(f.read()):
                hits.append(os.path.relpath(path, REPO))
    return hits


_crds = None


def crd_plurals():
    """(group, plural) of every CRD in charts/mesh/crds/."""
    global _crds
    if _crds is not None:
        return _crds
    out = set()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for path in glob.glob(os.path.join(CHART, "crds", "*.yaml")):
        with open(path) as f:
            for d in yaml.load_all(f, Loader=loader):
                if d and d.get("kind") == "CustomResourceDefinition":
                    out.add((d["spec"]["group"], d["spec"]["names"]["plural"]))
    _crds = out
    return out


def expand_rules(rules, scope):
    """Rules -> set of (scope, apiGroup, resource, verb, resourceName or '*')."""
    out = set()
    for r in rules:
        names = r.get("resourceNames") or ["*"]
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for verb in r.get("verbs", []):
                    for n in names:
                        out.add((scope, g, res, verb, n))
    return out


def rbac_needs():
    with open(os.path.join(CHART, "rbac-needs.yaml")) as f:
        return yaml.safe_load(f)


# Kinds whose plural is not `<lowercase kind>s`.
PLURALS = {"Endpoints": "endpoints", "Ingress": "ingresses", "NetworkPolicy": "networkpolicies",
           "PodDisruptionBudget": "poddisruptionbudgets"}


# The verbs of a write need on a dynamic client, and the calls that show the code uses them.
WRITE_VERBS = ["create", "update", "delete"]
WRITE_CALLS = (".create(", ".replace(", ".delete(")


def need_key(n):
    """How a need is named when matched against the code: its resource, and for a write need on
    the same resource as a read one, the resource with its verbs."""
    return f"{n['resource']} ({', '.join(WRITE_VERBS)})" if n["verbs"] == WRITE_VERBS else n["resource"]


def crate_api_resources(svc):
    """Resources the crate has a kube client for: `Api<Kind>` / `Api::<Kind>` in its sources, or a
    raw request built on `Kind::url_path(..)` (kube's typed request builder). A dynamic client
    (`Api<DynamicObject>`, its resources chosen at run time) stands for every get/list/watch need
    of the service, where the crate calls `patch_status(`, every `/status` need, and where the
    same file calls `.create(`, `.replace(` and `.delete(`, every create/update/delete need."""
    out = {}
    dynamic = [n for n in (rbac_needs()[svc].get("needs") or [])
               if n["verbs"] == ["get", "list", "watch"]]
    status = [n for n in (rbac_needs()[svc].get("needs") or []) if n["resource"].endswith("/status")]
    writes = [n for n in (rbac_needs()[svc].get("needs") or []) if n["verbs"] == WRITE_VERBS]
    for path in glob.glob(os.path.join(REPO, CRATE_DIR[svc], "src", "**", "*.rs"), recursive=True):
        if os.sep + "tests" in path or path.endswith("tests.rs"):
            continue
        with open(path) as f:
            text = f.read()
            kinds = re.findall(r"\bApi(?:::)?<\s*(\w+)\s*>", text)
            kinds += re.findall(r"\b([A-Z]\w+)::url_path\(", text)
            for kind in kinds:
                if kind == "DynamicObject":
                    for n in dynamic + (status if "patch_status(" in text else []) + \
                            (writes if all(c in text for c in WRITE_CALLS) else []):
                        out.setdefault(need_key(n), os.path.relpath(path, REPO))
                    continue
                res = PLURALS.get(kind, kind.lower() + "s")
                out.setdefault(res, os.path.relpath(path, REPO))
    return out


def value_at(values, dotted):
    """The value at a dotted path of the values (None when absent)."""
    v = values
    for part in dotted.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return v


def check_rbac(by_kind, release, values):
    problems = []
    needs = rbac_needs()
    services = ("galley", "pilot", "citadel", "mixer")
    if set(needs) != set(services):
        problems.append(f"rbac-needs.yaml lists {sorted(needs)}, not {list(services)}")
    ns = None
    granted = {svc: set() for svc in services}
    for kind, role_kind, scope in (("ClusterRoleBinding", "ClusterRole", "cluster"),
                                   ("RoleBinding", "Role", "namespace")):
        for b in by_kind.get(kind, {}).values():
            role = by_kind.get(role_kind, {}).get(b["roleRef"]["name"])
            if b["roleRef"]["kind"] != role_kind or role is None:
                problems.append(f"{kind} {b['metadata']['name']} refers to a missing {b['roleRef']}")
                continue
            for sub in b.get("subjects", []):
                svc = sub["name"].removeprefix(f"{release}-")
                if sub.get("kind") != "ServiceAccount" or svc not in granted:
                    problems.append(f"{kind} {b['metadata']['name']} binds {sub}, not a service's account")
                    continue
                ns = sub.get("namespace")
                granted[svc] |= expand_rules(role.get("rules", []), scope)
                if kind == "RoleBinding" and role["metadata"].get("namespace") != b["metadata"].get("namespace"):
                    problems.append(f"RoleBinding {b['metadata']['name']} and its Role are in different namespaces")
    bound_roles = {b["roleRef"]["name"] for k in ("ClusterRoleBinding", "RoleBinding")
                   for b in by_kind.get(k, {}).values()}
    for k in ("ClusterRole", "Role"):
        for n in set(by_kind.get(k, {})) - bound_roles:
            problems.append(f"{k} {n} is bound to nobody")
    for svc in services:
        need = needs.get(svc) or {}
        rules = need.get("needs") or []
        want = set()
        for r in rules:
            if r.get("when") and not value_at(values, r["when"]):
                continue
            for verb in r["verbs"]:
                for n in r.get("resourceNames") or ["*"]:
                    want.add((r["scope"], r["apiGroup"], r["resource"], verb, n))
        if values["rbac"]["create"]:
            for extra in sorted(granted[svc] - want):
                problems.append(f"RBAC: {svc} is granted {extra}, which rbac-needs.yaml does not list")
            for missing in sorted(want - granted[svc]):
                problems.append(f"RBAC: {svc} needs {missing} (rbac-needs.yaml), not granted")
        elif granted[svc]:
            problems.append(f"RBAC: rbac.create is false but {svc} is granted {sorted(granted[svc])}")
        # A `create` limited by resourceNames never matches: Kubernetes cannot name the object.
        for r in rules:
            if r.get("resourceNames") and {"create", "list", "watch", "deletecollection"} & set(r["verbs"]):
                problems.append(f"rbac-needs.yaml: {svc} {r['resource']}: resourceNames cannot limit {r['verbs']}")
        # The needs must follow the code: calls_api_server against a Kubernetes client in the crate.
        hits = crate_calls_api_server(svc)
        if need.get("calls_api_server") is not bool(hits):
            problems.append(
                f"rbac-needs.yaml: {svc} calls_api_server is {need.get('calls_api_server')} but the "
                f"crate {'uses a Kubernetes client in ' + ', '.join(hits) if hits else 'has no Kubernetes client'}: "
                "update its needs (verbs the code uses) and the chart's Roles")
        # Resources used today: exactly those the crate has an `Api<Kind>` for.
        used = {need_key(r) for r in rules if r.get("status") == "used"}
        clients = crate_api_resources(svc)
        for res in sorted(set(clients) - used):
            problems.append(f"rbac-needs.yaml: {svc} has a client for {res} ({clients[res]}) but no `used` need for it")
        for res in sorted(used - set(clients)):
            problems.append(f"rbac-needs.yaml: {svc} lists {res} as used but the crate has no Api<..> for it")
        for r in rules:
            if r.get("status") not in ("used", "pending"):
                problems.append(f"rbac-needs.yaml: {svc} {r['resource']}: status must be used or pending")
    # galley reads exactly the CRD kinds, and patches their status.
    crds = crd_plurals()
    galley = {(r["apiGroup"], r["resource"]) for r in needs["galley"]["needs"]
              if r["verbs"] == ["get", "list", "watch"] and r["apiGroup"].endswith(".istio.io")}
    status = {(r["apiGroup"], r["resource"].removesuffix("/status")) for r in needs["galley"]["needs"]
              if r["resource"].endswith("/status")}
    if galley != crds:
        problems.append(f"rbac-needs.yaml: galley's config kinds {sorted(galley ^ crds)} differ from charts/mesh/crds/")
    if status != crds:
        problems.append(f"rbac-needs.yaml: galley's status patches {sorted(status ^ crds)} differ from charts/mesh/crds/")
    writes = {(r["apiGroup"], r["resource"]) for r in needs["galley"]["needs"] if r["verbs"] == WRITE_VERBS}
    if writes != crds:
        problems.append(f"rbac-needs.yaml: galley's writes {sorted(writes ^ crds)} differ from charts/mesh/crds/")
    if ns is not None and ns != next(iter(by_kind["Deployment"].values()))["metadata"]["namespace"]:
        problems.append(f"RBAC subjects are in namespace {ns}, not the release's")
    return problems


# --- webhooks --------------------------------------------------------------------------------

def openssl(*args, stdin=None):
    r = subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def check_cert(where, ca_pem, crt_pem, key_pem, dns):
    """The serving certificate chains to the CA, names the Service's DNS names and matches its key."""
    problems = []
    with tempfile.TemporaryDirectory() as d:
        ca, crt = os.path.join(d, "ca.pem"), os.path.join(d, "crt.pem")
        with open(ca, "w") as f:
            f.write(ca_pem)
        with open(crt, "w") as f:
            f.write(crt_pem)
        rc, out = openssl("verify", "-purpose", "sslserver", "-CAfile", ca, crt)
        if rc != 0:
            problems.append(f"{where} certificate does not verify against the caBundle: {out.strip()}")
        rc, out = openssl("x509", "-in", crt, "-noout", "-ext", "subjectAltName")
        for name in dns:
            if f"DNS:{name}" not in out:
                problems.append(f"{where} certificate lacks DNS:{name} ({out.strip()})")
        _, pub_crt = openssl("x509", "-in", crt, "-noout", "-pubkey")
        _, pub_key = openssl("pkey", "-pubout", stdin=key_pem)
        if pub_crt.strip() != pub_key.strip():
            problems.append(f"{where} tls.key does not match tls.crt")
    return problems


def check_webhooks(by_kind, release, values):
    problems = []
    ns = next(iter(by_kind["Deployment"].values()))["metadata"]["namespace"]
    kinds = {"galley": "ValidatingWebhookConfiguration", "pilot": "MutatingWebhookConfiguration"}
    for svc, (key, _) in WEBHOOK.items():
        w = values[svc][key]
        confs = list(by_kind.get(kinds[svc], {}).values())
        name = f"{release}-{svc}"
        if not w["enabled"]:
            if confs:
                problems.append(f"{svc}: {kinds[svc]} rendered with {key}.enabled false")
            continue
        if len(confs) != 1:
            problems.append(f"{svc}: {len(confs)} {kinds[svc]}s")
            continue
        (hook,) = confs[0]["webhooks"]
        cc = hook["clientConfig"]
        path = "/validate" if svc == "galley" else "/inject"
        if cc.get("service") != {"name": name, "namespace": ns, "path": path, "port": 443}:
            problems.append(f"{svc}: webhook service {cc.get('service')}")
        if hook.get("admissionReviewVersions") != ["v1", "v1beta1"] or hook.get("sideEffects") != "None":
            problems.append(f"{svc}: webhook versions/sideEffects {hook.get('admissionReviewVersions')} {hook.get('sideEffects')}")
        if hook.get("failurePolicy") != w["failurePolicy"]:
            problems.append(f"{svc}: failurePolicy {hook.get('failurePolicy')} != {w['failurePolicy']}")
        rules = hook.get("rules", [])
        if svc == "galley":
            groups = {g for r in rules for g in r["apiGroups"]}
            if groups != {g for g, _ in crd_plurals()} or any(
                    set(r["operations"]) != {"CREATE", "UPDATE"} for r in rules):
                problems.append(f"galley: webhook rules {rules} do not cover the CRD groups on CREATE/UPDATE")
        else:
            if rules != [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                          "resources": ["pods"], "scope": "Namespaced"}]:
                problems.append(f"pilot: injection rules {rules}")
            if hook.get("namespaceSelector") != {"matchLabels": {"istio-injection": "enabled"}}:
                problems.append(f"pilot: namespaceSelector {hook.get('namespaceSelector')}")
            opt_out = {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}
            if (hook.get("objectSelector") or {}).get("matchExpressions") != [opt_out]:
                problems.append(f"pilot: objectSelector {hook.get('objectSelector')} lacks the opt-out label")
        try:
            ca_pem = base64.b64decode(cc.get("caBundle", ""), validate=True).decode()
        except ValueError:
            problems.append(f"{svc}: caBundle is not base64")
            continue
        if "-----BEGIN CERTIFICATE-----" not in ca_pem:
            problems.append(f"{svc}: caBundle is not a PEM certificate")
            continue
        secret_name = w.get("existingSecret") or f"{name}-webhook-tls"
        secret = by_kind.get("Secret", {}).get(secret_name)
        if w.get("caBundle"):
            if secret is not None:
                problems.append(f"{svc}: the chart renders Secret {secret_name} although the user gives it")
            continue
        if secret is None or secret.get("type") != "kubernetes.io/tls":
            problems.append(f"{svc}: no kubernetes.io/tls Secret {secret_name}")
            continue
        data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        if data.get("ca.crt") != ca_pem:
            problems.append(f"{svc}: Secret ca.crt is not the webhook's caBundle")
        problems += check_cert(f"{svc} webhook:", ca_pem, data.get("tls.crt", ""), data.get("tls.key", ""),
                               [name, f"{name}.{ns}", f"{name}.{ns}.svc"])
    return problems


# --- ingress gateway, Redis, dashboards ------------------------------------------------------

def check_gateway(by_kind, release, values):
    g = values["ingressGateway"]
    name = f"{release}-ingressgateway"
    dep = by_kind.get("Deployment", {}).get(name)
    if not g["enabled"]:
        return [f"ingress gateway rendered although disabled"] if dep else []
    problems = []
    where = "ingressgateway:"
    for kind in ("Deployment", "Service", "ServiceAccount"):
        if name not in by_kind.get(kind, {}):
            problems.append(f"{where} no {kind} {name}")
    if dep is None:
        return problems
    problems += check_scaling(by_kind, name, where, g)
    problems += check_pdb(by_kind, name, where, g)
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for k, v in g["labels"].items():
        if labels.get(k) != v:
            problems.append(f"{where} pod label {k}={labels.get(k)!r}, want {v!r}")
    (c,) = pod["containers"]
    repo = values["image"]["repository"].rstrip("/")
    if not c["image"].startswith(f"{repo}/mesh-proxy:"):
        problems.append(f"{where} image {c['image']}")
    args = c.get("args", [])
    opts = {}
    for flag, val in zip(args, args[1:]):
        if flag.startswith("--"):
            opts.setdefault(flag, []).append(val)
    want = {
        "--type": ["router"],
        "--xds-addr": [f"https://{release}-pilot:15012" if values["pilot"]["xdsTls"]["enabled"]
                       else f"http://{release}-pilot:15010"],
        "--citadel-addr": [f"http://{release}-citadel:8060"],
        "--mixer-addr": [f"http://{release}-mixer:9091"],
        "--trust-domain": [values["trustDomain"]],
        "--labels": [",".join(f"{k}={v}" for k, v in sorted(g["labels"].items()))],
        "--gateway-port": [f"{p['port']}=0.0.0.0:{p['containerPort']}" for p in g["ports"]],
        "--monitoring-addr": ["0.0.0.0:15090"],
        "--admin-addr": ["127.0.0.1:15000"],
        "--service-account": [name],
        "--log-level": [values["logLevel"]],
        "--log-format": [values["logFormat"]],
    }
    for flag, val in want.items():
        if opts.get(flag) != val:
            problems.append(f"{where} {flag} {opts.get(flag)} != {val}")
    problems += check_flags_exist("mesh-proxy", c)
    problems += check_scrape(where, dep, values, 15090)
    env = {e["name"] for e in c.get("env", [])}
    for a in args:
        for var in re.findall(r"\$\((\w+)\)", a):
            if var not in env:
                problems.append(f"{where} arg {a} uses ${var} which is not in env")
    token = opts.get("--token-file", [""])[0]
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    m = mounts.get(os.path.dirname(token))
    srcs = vols.get(m["name"], {}).get("projected", {}).get("sources", []) if m else []
    if not any(s.get("serviceAccountToken", {}).get("audience") == "istio-ca"
               and s["serviceAccountToken"].get("path") == os.path.basename(token) for s in srcs):
        problems.append(f"{where} --token-file {token} is not a projected token with audience istio-ca")
    if pod.get("serviceAccountName") != name:
        problems.append(f"{where} serviceAccountName {pod.get('serviceAccountName')}")
    problems += check_container_security(where, c, uid=1337)
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = c.get(probe, {}).get("httpGet", {})
        port_no = next((p["containerPort"] for p in c.get("ports", []) if p["name"] == get.get("port")), None)
        if get.get("path") != path or port_no != 15090:
            problems.append(f"{where} {probe} {get}")
    if mounts.get("/tmp") is None or "emptyDir" not in vols.get(mounts["/tmp"]["name"], {}):
        problems.append(f"{where} /tmp is not an emptyDir mount")
    svc = by_kind.get("Service", {}).get(name)
    if svc is not None:
        got = sorted((p["port"], p["targetPort"]) for p in svc["spec"]["ports"])
        if got != sorted((p["port"], p["containerPort"]) for p in g["ports"]):
            problems.append(f"{where} Service ports {got}")
        if svc["spec"]["type"] != g["serviceType"]:
            problems.append(f"{where} Service type {svc['spec']['type']}")
    return problems


def check_redis(by_kind, release, values):
    r = values["mixer"]["redis"]
    name = f"{release}-redis"
    dep = by_kind.get("Deployment", {}).get(name)
    if not r["enabled"]:
        return ["redis rendered although mixer.redis.enabled is false"] if dep else []
    if dep is None or name not in by_kind.get("Service", {}):
        return [f"mixer.redis.enabled but no Deployment/Service {name}"]
    problems = []
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    if c["image"] != r["image"]:
        problems.append(f"redis: image {c['image']}")
    problems += check_container_security("redis:", c, uid=999)
    if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
        problems.append("redis: pod may run as root")
    if [p["port"] for p in by_kind["Service"][name]["spec"]["ports"]] != [6379]:
        problems.append("redis: Service port is not 6379")
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    if "/data" not in mounts:
        problems.append("redis: /data is not mounted (read-only root)")
    return problems


def check_dashboards(by_kind, release, values):
    name = f"{release}-dashboards"
    cm = by_kind.get("ConfigMap", {}).get(name)
    if not values["dashboards"]["enabled"]:
        return ["dashboards ConfigMap rendered although disabled"] if cm else []
    if cm is None:
        return [f"no ConfigMap {name}"]
    problems = []
    if cm["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
        problems.append(f"{name}: no label grafana_dashboard: \"1\"")
    files = {os.path.basename(p): p for p in glob.glob(os.path.join(CHART, "dashboards", "*.json"))}
    data = cm.get("data") or {}
    if set(data) != set(files):
        problems.append(f"{name}: keys {sorted(data)} != dashboards/ {sorted(files)}")
    for key, path in files.items():
        with open(path) as f:
            if data.get(key, "").strip() != f.read().strip():
                problems.append(f"{name}: {key} differs from dashboards/{key}")
    return problems


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
        problems += check_scaling(by_kind, name, where, values[svc])
        pod = dep["spec"]["template"]["spec"]
        if pod.get("serviceAccountName") != name:
            problems.append(f"{where} serviceAccountName is {pod.get('serviceAccountName')!r}")
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != 1337:
            problems.append(f"{where} pod securityContext {psc}")
        (c,) = pod["containers"]
        if c.get("command") != [f"/usr/local/bin/{svc}"]:
            problems.append(f"{where} command {c.get('command')}")
        want = expected_args(svc, release, values, dep["metadata"]["namespace"])
        if c.get("args") != want:
            problems.append(f"{where} args {c.get('args')} != {want}")
        problems += check_flags_exist(svc, c)
        problems += check_scrape(where, dep, values, 15014)
        calls = bool(rbac_needs()[svc].get("calls_api_server"))
        if pod.get("automountServiceAccountToken") is not calls:
            problems.append(f"{where} automountServiceAccountToken is "
                            f"{pod.get('automountServiceAccountToken')}, calls_api_server is {calls}")
        sa = by_kind.get("ServiceAccount", {}).get(name, {})
        if sa.get("automountServiceAccountToken") is not calls:
            problems.append(f"{where} ServiceAccount automountServiceAccountToken is not {calls}")
        image = c["image"]
        repo = values["image"]["repository"].rstrip("/")
        if not image.startswith(f"{repo}/{svc}:") or (tag and not image.endswith(f":{tag}")):
            problems.append(f"{where} image {image}")
        if svc in WEBHOOK and values[svc][WEBHOOK[svc][0]]["enabled"]:
            m = next((m for m in c.get("volumeMounts", []) if m["mountPath"] == "/etc/mesh/webhook-tls"), None)
            vol = {v["name"]: v for v in pod.get("volumes", [])}.get(m["name"] if m else None, {})
            want_secret = values[svc][WEBHOOK[svc][0]].get("existingSecret") or f"{name}-webhook-tls"
            if m is None or vol.get("secret", {}).get("secretName") != want_secret:
                problems.append(f"{where} webhook certificate Secret {want_secret} not mounted at /etc/mesh/webhook-tls")
        if {p["containerPort"] for p in c.get("ports", [])} != expected_ports(svc, values):
            problems.append(f"{where} container ports {c.get('ports')}")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = c.get(probe, {}).get("httpGet", {})
            port = get.get("port")
            port_no = next((p["containerPort"] for p in c.get("ports", []) if p["name"] == port), port)
            if get.get("path") != path or port_no != 15014:
                problems.append(f"{where} {probe} {get}")
        problems += check_container_security(where, c, uid=1337)
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
            want_ports = set(PORTS[svc])
            if svc == "pilot" and values["pilot"]["xdsTls"]["enabled"]:
                want_ports.add(15012)
            if svc in WEBHOOK and values[svc][WEBHOOK[svc][0]]["enabled"]:
                want_ports.add(443)
                hook = next((p for p in svc_obj["spec"]["ports"] if p["port"] == 443), {})
                if hook.get("targetPort") != WEBHOOK[svc][1]:
                    problems.append(f"{where} Service port 443 does not reach {WEBHOOK[svc][1]}: {hook}")
            if {p["port"] for p in svc_obj["spec"]["ports"]} != want_ports:
                problems.append(f"{where} Service ports {svc_obj['spec']['ports']}")
            sel = svc_obj["spec"]["selector"]
            pod_labels = dep["spec"]["template"]["metadata"]["labels"]
            if not sel or any(pod_labels.get(k) != v for k, v in sel.items()):
                problems.append(f"{where} Service selector {sel} does not match the pods")

        problems += check_pdb(by_kind, name, where, values[svc])

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

    problems += check_rbac(by_kind, release, values)
    problems += check_webhooks(by_kind, release, values)
    problems += check_gateway(by_kind, release, values)
    problems += check_redis(by_kind, release, values)
    problems += check_dashboards(by_kind, release, values)

    allowed = {"Deployment", "Service", "ServiceAccount", "ConfigMap", "PodDisruptionBudget",
               "HorizontalPodAutoscaler", "ClusterRole", "ClusterRoleBinding", "Role",
               "RoleBinding", "Secret", "ValidatingWebhookConfiguration",
               "MutatingWebhookConfiguration"}
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
