#!/usr/bin/env python3
"""Generates istio-crd-schemas.json from Istio's CRD manifest (crd-all.gen.yaml).

Keeps the structural part of each version's openAPIV3Schema (types, properties, required,
enums, bounds, patterns, oneOf/anyOf/not) and drops descriptions and CEL rules
(x-kubernetes-validations), which galley does not evaluate.

Usage: python3 generate.py ../../../shared/conformance/istio/crds/manifests/charts/base/files/crd-all.gen.yaml
"""
import json
import sys

import yaml

DROP = {"description", "x-kubernetes-validations", "format"}


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k not in DROP}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


# Fields of EnvoyFilter v1alpha3 that Istio 1.4 accepted (deprecated, removed later): kept so
# that 1.4-era YAML still validates.
LEGACY_ENVOYFILTER = {
    "workloadLabels": {"type": "object", "additionalProperties": {"type": "string"}},
    "filters": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["filterName", "filterType"],
            "properties": {
                "listenerMatch": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "insertPosition": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "filterType": {"type": "string", "enum": ["HTTP", "NETWORK"]},
                "filterName": {"type": "string", "minLength": 1},
                "filterConfig": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
    },
}


def main():
    out = {}
    with open(sys.argv[1]) as f:
        for doc in yaml.safe_load_all(f):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group = doc["spec"]["group"]
            kind = doc["spec"]["names"]["kind"]
            for v in doc["spec"]["versions"]:
                schema = strip(v["schema"]["openAPIV3Schema"])
                if kind == "EnvoyFilter" and v["name"] == "v1alpha3":
                    schema["properties"]["spec"]["properties"].update(LEGACY_ENVOYFILTER)
                out[f"{group}/{v['name']}/{kind}"] = schema
    json.dump(out, sys.stdout, sort_keys=True, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
