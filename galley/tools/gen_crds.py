#!/usr/bin/env python3
"""Writes charts/mesh/crds/*.yaml: the CustomResourceDefinitions of the Istio kinds the mesh
stores, one file per API group. Galley embeds these files and validates against them (see
galley/src/validate/schema.rs); Helm installs them as they are.

- networking.istio.io and security.istio.io: Istio's own CRDs (crd-all.gen.yaml of the
  conformance corpus), only the kinds the mesh knows, with Istio 1.4's deprecated EnvoyFilter
  v1alpha3 fields (workloadLabels, filters) added so 1.4-era YAML still validates.
- config.istio.io v1alpha2 (classic Mixer config: rule, handler, instance, attributemanifest,
  QuotaSpec, QuotaSpecBinding): written here from istio/api's policy/v1beta1 and
  mixer/v1/config/client protos (Istio 1.4 shipped these CRDs without a schema); and Istio 1.4's
  legacy Mixer kinds, one CRD per adapter (`kind: denier`, ...) and template (`kind: metric`,
  ...) Mixer implements (mesh_proto::config::LegacyKind), their spec being the adapter's or
  template's params: open (`x-kubernetes-preserve-unknown-fields`), as Istio's own CRDs were.

Usage: python3 galley/tools/gen_crds.py /work/shared/conformance/istio/crds/manifests/charts/base/files/crd-all.gen.yaml charts/mesh/crds
"""
import os
import sys

import yaml

KINDS = {
    "networking.istio.io": ["VirtualService", "DestinationRule", "Gateway", "ServiceEntry",
                            "Sidecar", "WorkloadEntry", "EnvoyFilter"],
    "security.istio.io": ["AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication"],
}

LABELS = {"app.kubernetes.io/name": "mesh", "app.kubernetes.io/part-of": "mesh"}

PRESERVE = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}

LEGACY_ENVOYFILTER = {
    "workloadLabels": {
        "description": "Deprecated (Istio 1.4): use workloadSelector.",
        "type": "object", "additionalProperties": {"type": "string"}},
    "filters": {
        "description": "Deprecated (Istio 1.4): use configPatches.",
        "type": "array",
        "items": {
            "type": "object",
            "required": ["filterName", "filterType"],
            "properties": {
                "listenerMatch": PRESERVE,
                "insertPosition": PRESERVE,
                "filterType": {"type": "string", "enum": ["HTTP", "NETWORK"]},
                "filterName": {"type": "string", "minLength": 1},
                "filterConfig": PRESERVE,
            },
        },
    },
}


def s(desc=None, **kw):
    out = {"type": "string"}
    if desc:
        out["description"] = desc
    out.update(kw)
    return out


def obj(props, desc=None, required=None):
    out = {"type": "object", "properties": props}
    if desc:
        out["description"] = desc
    if required:
        out["required"] = required
    return out


def arr(items, desc=None):
    out = {"type": "array", "items": items}
    if desc:
        out["description"] = desc
    return out


INT64 = {"x-kubernetes-int-or-string": True}
HEADER_OPS = arr(obj({
    "name": s("Header name."),
    "values": arr(s(), "Header values (expressions)."),
    "operation": s("REPLACE (default), REMOVE or APPEND.", enum=["REPLACE", "REMOVE", "APPEND"]),
}))
STRING_MATCH = obj({"exact": s(), "prefix": s(), "regex": s()})
VALUE_TYPES = ["VALUE_TYPE_UNSPECIFIED", "STRING", "INT64", "DOUBLE", "BOOL", "TIMESTAMP",
               "IP_ADDRESS", "EMAIL_ADDRESS", "URI", "DNS_NAME", "DURATION", "STRING_MAP"]

MIXER = {
    ("rule", "rules"): obj({
        "match": s("Attribute expression selecting the requests the rule applies to; empty matches all."),
        "actions": arr(obj({
            "handler": s("Fully qualified name of the handler to invoke."),
            "instances": arr(s(), "Fully qualified names of the instances to pass to the handler."),
            "name": s("Name of the action, to refer to its output."),
        }, required=["handler"])),
        "requestHeaderOperations": HEADER_OPS,
        "responseHeaderOperations": HEADER_OPS,
        "sampling": obj({
            "random": obj({
                "attributeExpression": s(),
                "percentage": obj({"numerator": {"type": "integer", "minimum": 0},
                                   "denominator": s(enum=["HUNDRED", "TEN_THOUSAND", "MILLION"])}),
                "useIndependentRandomness": {"type": "boolean"},
            }),
            "rateLimit": obj({"samplingDuration": s(), "maxUnsampledEntries": INT64,
                              "samplingRate": INT64}),
        }),
    }, "A Mixer rule: when match holds, send the instances to the handler."),
    ("handler", "handlers"): obj({
        "adapter": s("Name of an out-of-process adapter."),
        "compiledAdapter": s("Name of a compiled-in adapter."),
        "params": dict(PRESERVE, description="Adapter-specific parameters."),
        "connection": obj({"address": s(), "timeout": s(), "authentication": PRESERVE}),
    }, "A configured Mixer adapter."),
    ("instance", "instances"): obj({
        "template": s("Name of an out-of-process template."),
        "compiledTemplate": s("Name of a compiled-in template."),
        "params": dict(PRESERVE, description="Template fields mapped to attribute expressions."),
        "attributeBindings": {"type": "object", "additionalProperties": s()},
    }, "A Mixer template instance."),
    ("attributemanifest", "attributemanifests"): obj({
        "revision": s(),
        "name": s(),
        "attributes": {"type": "object", "additionalProperties": obj({
            "description": s(),
            "valueType": s(enum=VALUE_TYPES),
        })},
    }, "The attribute vocabulary a component produces."),
    ("QuotaSpec", "quotaspecs"): obj({
        "rules": arr(obj({
            "match": arr(obj({"clause": {"type": "object", "additionalProperties": STRING_MATCH}})),
            "quotas": arr(obj({"quota": s(), "charge": INT64})),
        })),
    }, "The quotas a request is charged against."),
    ("QuotaSpecBinding", "quotaspecbindings"): obj({
        "services": arr(obj({"name": s(), "namespace": s(), "domain": s(), "service": s()})),
        "quotaSpecs": arr(obj({"name": s(), "namespace": s()})),
    }, "Binds QuotaSpecs to services."),
}


def crd(group, kind, plural, versions, categories, short=None):
    names = {"kind": kind, "plural": plural, "singular": kind.lower(),
             "listKind": f"{kind}List", "categories": categories}
    if short:
        names["shortNames"] = short
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}", "labels": dict(LABELS)},
        "spec": {"group": group, "names": names, "scope": "Namespaced", "versions": versions},
    }


def istio(path):
    out = {}
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group = doc["spec"]["group"]
            kind = doc["spec"]["names"]["kind"]
            if kind not in KINDS.get(group, []):
                continue
            for v in doc["spec"]["versions"]:
                if kind == "EnvoyFilter" and v["name"] == "v1alpha3":
                    props = v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
                    props.update(LEGACY_ENVOYFILTER)
            doc["metadata"] = {"name": doc["metadata"]["name"], "labels": dict(LABELS),
                               "annotations": {"mesh.io/source": "istio/istio manifests/charts/base/files/crd-all.gen.yaml"}}
            out.setdefault(group, []).append(doc)
    for group in out:
        out[group].sort(key=lambda d: d["spec"]["names"]["kind"])
    return out


# (kind, plural) of the legacy kinds: mesh_proto::config::LegacyKind, in its order.
LEGACY_ADAPTERS = [("denier", "deniers"), ("listchecker", "listcheckers"),
                   ("memquota", "memquotas"), ("redisquota", "redisquotas"),
                   ("prometheus", "prometheuses"), ("stdio", "stdios"),
                   ("opentelemetry", "opentelemetries"), ("noop", "noops")]
LEGACY_TEMPLATES = [("quota", "quotas"), ("metric", "metrics"), ("logentry", "logentries"),
                    ("checknothing", "checknothings"), ("listentry", "listentries"),
                    ("tracespan", "tracespans"), ("reportnothing", "reportnothings")]


def legacy():
    docs = []
    for role, kinds in (("mixer-adapter", LEGACY_ADAPTERS), ("mixer-instance", LEGACY_TEMPLATES)):
        what = "adapter" if role == "mixer-adapter" else "template"
        for kind, plural in kinds:
            spec = dict(PRESERVE, description=f"The {kind} {what}'s params (legacy Istio 1.4 form).")
            schema = {"type": "object", "properties": {"spec": spec, "status": PRESERVE}}
            versions = [{"name": "v1alpha2", "served": True, "storage": True,
                         "schema": {"openAPIV3Schema": schema},
                         "subresources": {"status": {}}}]
            cats = ["istio-io", "policy-istio-io"]
            doc = crd("config.istio.io", kind, plural, versions, cats)
            doc["metadata"]["labels"].update({"istio": role, "package": kind})
            docs.append(doc)
    return docs


def mixer():
    docs = []
    for (kind, plural), spec in MIXER.items():
        schema = {"type": "object", "properties": {"spec": spec, "status": PRESERVE}}
        versions = [{"name": "v1alpha2", "served": True, "storage": True,
                     "schema": {"openAPIV3Schema": schema},
                     "subresources": {"status": {}}}]
        cats = ["istio-io", "policy-istio-io"]
        docs.append(crd("config.istio.io", kind, plural, versions, cats))
    return docs + legacy()


class NoAliases(yaml.SafeDumper):
    """Writes shared sub-schemas out in full: no YAML anchors or aliases in the CRDs."""

    def ignore_aliases(self, data):
        return True


def main():
    src, dest = sys.argv[1], sys.argv[2]
    groups = istio(src)
    groups["config.istio.io"] = mixer()
    for group, docs in sorted(groups.items()):
        path = os.path.join(dest, f"{group}.yaml")
        with open(path, "w") as f:
            f.write(f"# Generated by galley/tools/gen_crds.py: the {group} CRDs galley validates against.\n")
            f.write("# Installed by Helm as they are (crds/ is not templated); edit the generator, not this file.\n")
            yaml.dump_all(docs, f, Dumper=NoAliases, sort_keys=False, width=100, explicit_start=True)
        print(f"{path}: {len(docs)} CRDs")


if __name__ == "__main__":
    main()
