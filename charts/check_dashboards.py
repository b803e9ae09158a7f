#!/usr/bin/env python3
"""Checks the Grafana dashboards of charts/mesh/dashboards/ against what the mesh really exports.

- every dashboard is valid JSON with a unique uid, unique panel ids, the `datasource` variable,
  and every `$variable` it uses defined;
- every panel (rows aside) has at least one PromQL target, and every expression (panel targets
  and `label_values(...)` variable queries) parses far enough to name its metrics, labels and
  functions;
- every metric name is one the Rust sources register (`.register("name", "help", handle)` in
  galley/, pilot/, citadel/, mixer/, proxy/), with prometheus-client's suffixes: `_total` for a
  counter, `_bucket`/`_sum`/`_count` for a histogram, none for a gauge. So a renamed metric fails
  here;
- every label in a selector, a `by (...)` clause or a legend (`{{label}}`) is one the metric has:
  the fields of its `EncodeLabelSet` struct, or the `("name", ...)` pairs of a `Vec` label set,
  plus `le` for histogram buckets and the target labels Prometheus adds (`instance`, `job`).

usage: check_dashboards.py [DASHBOARD_DIR]   (default: charts/mesh/dashboards)
Prints one line per problem and exits 1 if any; prints a summary line and exits 0 otherwise.
"""
import glob
import json
import os
import re
import sys

CHARTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(CHARTS)
# Crates whose registered metrics a dashboard may use.
CRATES = ("galley", "pilot", "citadel", "mixer", "proxy")
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}
# The dashboards the chart ships (issue 9: mesh, service, workload, control plane).
REQUIRED = {"mesh.json", "service.json", "workload.json", "control-plane.json"}

FUNCTIONS = {
    "sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile", "stddev", "stdvar",
    "count_values", "group", "rate", "irate", "increase", "delta", "idelta", "deriv",
    "histogram_quantile", "round", "vector", "scalar", "abs", "ceil", "floor", "clamp",
    "clamp_min", "clamp_max", "sort", "sort_desc", "time", "absent", "absent_over_time",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time",
    "last_over_time", "changes", "resets", "label_values", "query_result",
}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset"}


# --- what the sources register -----------------------------------------------------------------

REGISTER = re.compile(
    r'\.register\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"\s*,\s*"(?:[^"\\]|\\.)*"\s*,\s*(.*?)\)\s*;?\s*$',
    re.S | re.M)


def handle_type(text, expr):
    """The declared type of the handle passed to register (`m.requests.clone()`, `gauge.clone()`)."""
    name = re.sub(r"\.clone\(\)$", "", expr.strip().rstrip(",").strip()).split(".")[-1]
    # A struct field (`name: Family<L, Counter>,`) or a typed `let name: Gauge = ...;`. When
    # several structs of the file have a field of that name (a per-request recorder holding one
    # labelled child beside the family), the family is the registered handle.
    def resolve(ty):
        ty = ty.split(" = ")[0].strip().rstrip(",;").strip()
        alias = re.search(rf"\btype\s+{re.escape(ty)}\s*=\s*(.+?);", text, re.S)
        return alias.group(1) if alias else ty

    found = [resolve(m.group(1))
             for m in re.finditer(rf"\b{re.escape(name)}\s*:\s*([^\n]+)", text)]
    if not found:
        return None
    return next((t for t in found if t.startswith("Family<")), found[0])


def struct_fields(text, name):
    m = re.search(rf"\bstruct\s+{re.escape(name)}\s*\{{(.*?)\n\}}", text, re.S)
    if not m:
        return None
    return {f.removeprefix("r#") for f in re.findall(r"^\s*(?:pub\s+)?(r#\w+|\w+)\s*:", m.group(1), re.M)}


def registered_metrics():
    """Exported series name -> (kind, label names, source file)."""
    out = {}
    unknown = {}
    for crate in CRATES:
        for path in glob.glob(os.path.join(REPO, crate, "src", "**", "*.rs"), recursive=True):
            if os.path.basename(path) == "tests.rs" or path.endswith("_tests.rs"):
                continue
            with open(path) as f:
                # Test code registers throwaway metrics; only the shipped code counts.
                text = f.read().split("#[cfg(test)]")[0]
            rel = os.path.relpath(path, REPO)
            pair_labels = set(re.findall(r'\(\s*"([a-z_][a-z0-9_]*)"\s*,', text))
            for name, expr in REGISTER.findall(text):
                ty = handle_type(text, expr) or ""
                kind = ("histogram" if "Histogram" in ty else "counter" if "Counter" in ty
                        else "gauge" if "Gauge" in ty else None)
                if kind is None:
                    unknown[name] = f"{rel}: cannot tell the type of metric {name} ({expr.strip()})"
                    continue
                labels = set()
                fam = re.match(r"Family<\s*([\w:]+)", ty)
                if fam:
                    fields = struct_fields(text, fam.group(1).split("::")[-1])
                    labels = fields if fields is not None else pair_labels
                names = {"counter": [name + "_total"], "gauge": [name],
                         "histogram": [name + "_bucket", name + "_sum", name + "_count"]}[kind]
                for n in names:
                    out[n] = (kind, labels | ({"le"} if n.endswith("_bucket") else set()), rel)
    return out, unknown


# --- PromQL, far enough to name metrics, labels and functions ------------------------------------

TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<var>\$\{\w+(?::\w+)?\}|\$\w+|\[\[\w+\]\])
  | (?P<num>\d+(?:\.\d+)?(?:ms|[smhdwy])?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=,(){}\[\]])
""", re.X)


def tokenize(expr):
    pos, toks = 0, []
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read {expr[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            toks.append((m.lastgroup, m.group()))
    return toks


def parse(expr):
    """(metrics, {metric: matcher labels}, grouping labels, functions, variables) of a PromQL expr."""
    toks = tokenize(expr)
    metrics, matchers, grouping, functions, variables = [], {}, set(), set(), set()
    depth = {"(": 0, "{": 0, "[": 0}
    i = 0

    def read_labels(i, close):
        """Label names up to `close`; returns the index after it."""
        labels = []
        while i < len(toks) and toks[i][1] != close:
            kind, text = toks[i]
            if kind == "ident":
                labels.append(text)
            elif text != ",":
                raise ValueError(f"unexpected {text!r} in a label list")
            i += 1
        if i >= len(toks):
            raise ValueError(f"missing {close!r}")
        return labels, i + 1

    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "var":
            variables.add(re.sub(r"[${}\[\]]|:\w+", "", text))
            i += 1
        elif kind == "ident" and text in ("group_left", "group_right") and nxt != "(":
            i += 1
        elif kind == "ident" and text in GROUPING:
            if nxt != "(":
                raise ValueError(f"{text} without a label list")
            labels, i = read_labels(i + 2, ")")
            grouping.update(labels)
        elif kind == "ident" and nxt == "(":
            if text not in FUNCTIONS:
                raise ValueError(f"unknown function {text}")
            functions.add(text)
            i += 1
        elif kind == "ident" and text in KEYWORDS:
            i += 1
        elif kind == "ident":
            metrics.append(text)
            i += 1
            if nxt == "{":
                i += 1
                sel = matchers.setdefault(text, set())
                while toks[i][1] != "}":
                    lk, lt = toks[i]
                    if lk != "ident" or toks[i + 1][1] not in ("=", "!=", "=~", "!~") \
                            or toks[i + 2][0] not in ("str",):
                        raise ValueError(f"bad matcher near {lt!r} in {text}{{...}}")
                    sel.add(lt)
                    for s in re.findall(r"\$\{?(\w+)", toks[i + 2][1]):
                        variables.add(s)
                    i += 3
                    if toks[i][1] == ",":
                        i += 1
                i += 1
        elif text == "{":
            raise ValueError("a selector without a metric name")
        elif text == "[":
            j = i + 1
            while j < len(toks) and toks[j][1] != "]":
                if toks[j][0] == "var":
                    variables.add(re.sub(r"[${}\[\]]|:\w+", "", toks[j][1]))
                j += 1
            if j >= len(toks):
                raise ValueError("missing ']'")
            i = j + 1
        elif text in ("(", ")"):
            depth["("] += 1 if text == "(" else -1
            if depth["("] < 0:
                raise ValueError("unbalanced ')'")
            i += 1
        elif kind in ("num", "op", "str"):
            i += 1
        else:
            raise ValueError(f"unexpected {text!r}")
    if depth["("] != 0:
        raise ValueError("unbalanced '('")
    return metrics, matchers, grouping, functions, variables


# --- the dashboards ----------------------------------------------------------------------------

def check_expr(where, expr, known, legend=None, extra_label=None):
    problems = []
    try:
        metrics, matchers, grouping, _, variables = parse(expr)
    except (ValueError, IndexError) as e:
        return [f"{where}: cannot parse {expr!r}: {e}"], set()
    if not metrics:
        problems.append(f"{where}: no metric in {expr!r}")
    all_labels = set(TARGET_LABELS)
    for m in metrics:
        if m not in known:
            problems.append(f"{where}: metric {m} is not registered by {', '.join(CRATES)} sources")
            continue
        labels = known[m][1] | TARGET_LABELS
        all_labels |= labels
        for lbl in sorted(matchers.get(m, set()) - labels):
            problems.append(f"{where}: {m} has no label {lbl}")
    if metrics and all(m in known for m in metrics):
        for lbl in sorted(grouping - all_labels):
            problems.append(f"{where}: grouping by {lbl}, which none of {metrics} has")
        for lbl in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend or ""):
            if lbl not in grouping and lbl not in all_labels:
                problems.append(f"{where}: legend uses {lbl}, which the query does not keep")
        if extra_label and extra_label not in all_labels:
            problems.append(f"{where}: label_values of {extra_label}, which {metrics} does not have")
    return problems, variables


def check_dashboard(path, known, uids):
    name = os.path.basename(path)
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        return [f"{name}: not valid JSON: {e}"], 0
    problems = []
    uid = d.get("uid")
    if not uid or uid in uids:
        problems.append(f"{name}: missing or duplicate uid {uid!r}")
    uids.add(uid)
    if not d.get("title"):
        problems.append(f"{name}: no title")
    templ = (d.get("templating") or {}).get("list", [])
    defined = {v.get("name") for v in templ} | {"__rate_interval", "__interval", "__range"}
    if "datasource" not in defined:
        problems.append(f"{name}: no `datasource` variable")
    used_vars = set()
    exprs = 0
    for v in templ:
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q or "", re.S)
        if not m:
            problems.append(f"{name}: variable {v.get('name')}: not a label_values(metric, label) query: {q!r}")
            continue
        exprs += 1
        p, used = check_expr(f"{name}: variable {v.get('name')}", m.group(1), known, extra_label=m.group(2))
        problems += p
        used_vars |= used
    ids = set()

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(d.get("panels", [])):
        where = f"{name}: panel {p.get('title')!r}"
        if p.get("id") in ids:
            problems.append(f"{where}: duplicate id {p.get('id')}")
        ids.add(p.get("id"))
        if p.get("type") == "row":
            continue
        targets = [t for t in p.get("targets", []) if t.get("expr")]
        if not targets:
            problems.append(f"{where}: no PromQL target")
        for t in targets:
            exprs += 1
            pr, used = check_expr(where, t["expr"], known, legend=t.get("legendFormat"))
            problems += pr
            used_vars |= used
            used_vars |= set(re.findall(r"\$\{?(\w+)", t.get("legendFormat", "")))
    for var in sorted(used_vars - defined):
        problems.append(f"{name}: uses ${var}, which is not a dashboard variable")
    return problems, exprs


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else os.path.join(CHARTS, "mesh", "dashboards")
    # A registration whose handle type cannot be read only matters if a dashboard uses it.
    known, unknown = registered_metrics()
    problems = []
    if not any(n.startswith("istio_requests") for n in known):
        problems.append("no istio_requests metric found in the proxy sources: is the registry parser broken?")
    files = sorted(glob.glob(os.path.join(folder, "*.json")))
    missing = REQUIRED - {os.path.basename(f) for f in files}
    if missing:
        problems.append(f"missing dashboards: {sorted(missing)}")
    uids, exprs = set(), 0
    for path in files:
        p, n = check_dashboard(path, known, uids)
        problems += p
        exprs += n
    for name, reason in unknown.items():
        if any(f"metric {name}" in p and "is not registered" in p for p in problems):
            problems.append(reason)
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(f"{len(files)} dashboards, {exprs} queries, all metrics among the {len(known)} series the sources register")


if __name__ == "__main__":
    main()
