#!/usr/bin/env python3
"""Checks docker/*.Dockerfile against the workspace and the chart, without building anything
(no registry is reachable from the build machine):

- one Dockerfile per image the chart runs (galley, pilot, citadel, mixer, mesh-proxy), and
  docker/build.sh builds exactly those;
- a `rust:1.95-slim-bookworm` build stage running `cargo build --release --locked -p CRATE
  --bin NAME`, where CRATE is a workspace package that has the binary NAME;
- a last stage on distroless cc-debian12:nonroot or debian:bookworm-slim, that copies only
  /usr/local/bin/NAME from the build stage (the path the chart's `command` uses), runs as a
  non-root USER, EXPOSEs the service's ports and has ENTRYPOINT ["/usr/local/bin/NAME"].

usage: check_dockerfiles.py    Prints one line per problem, exit 1 if any.
"""
import glob
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Image -> (crate, binary, ports to EXPOSE): DESIGN.md's ports; the gateway's as the chart runs it.
IMAGES = {
    "galley": ("galley", "galley", {9901, 9902, 15014}),
    "pilot": ("pilot", "pilot", {15010, 8080, 15014}),
    "citadel": ("citadel", "citadel", {8060, 15014}),
    "mixer": ("mixer", "mixer", {9091, 15014}),
    "mesh-proxy": ("mesh-proxy", "mesh-proxy", {15000, 15001, 15006, 15090, 8080}),
}
RUNTIMES = ("gcr.io/distroless/cc-debian12:nonroot", "debian:bookworm-slim")


def workspace_bins():
    """package name -> binary names, from every member's Cargo.toml."""
    out = {}
    for manifest in glob.glob(os.path.join(REPO, "*", "Cargo.toml")):
        with open(manifest) as f:
            text = f.read()
        m = re.search(r'^\[package\][^\[]*?^name\s*=\s*"([^"]+)"', text, re.M | re.S)
        if not m:
            continue
        bins = set(re.findall(r'^\[\[bin\]\][^\[]*?^name\s*=\s*"([^"]+)"', text, re.M | re.S))
        if os.path.exists(os.path.join(os.path.dirname(manifest), "src", "main.rs")):
            bins.add(m.group(1))
        out[m.group(1)] = bins
    return out


def check():
    problems = []
    files = {os.path.basename(p).removesuffix(".Dockerfile"): p
             for p in glob.glob(os.path.join(REPO, "docker", "*.Dockerfile"))}
    if set(files) != set(IMAGES):
        problems.append(f"docker/: Dockerfiles for {sorted(files)}, want {sorted(IMAGES)}")
    with open(os.path.join(REPO, "docker", "build.sh")) as f:
        m = re.search(r"^all=\(([^)]*)\)", f.read(), re.M)
    if not m or set(m.group(1).split()) != set(IMAGES):
        problems.append(f"docker/build.sh builds {m.group(1).split() if m else None}, want {sorted(IMAGES)}")
    bins = workspace_bins()
    for image, path in sorted(files.items()):
        if image not in IMAGES:
            continue
        crate, binary, ports = IMAGES[image]
        where = f"docker/{image}.Dockerfile:"
        with open(path) as f:
            text = re.sub(r"\\\n", " ", f.read())
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        stages = [ln for ln in lines if ln.upper().startswith("FROM ")]
        if len(stages) != 2 or not stages[0].split()[1] == "rust:1.95-slim-bookworm":
            problems.append(f"{where} stages {stages}: want a rust:1.95-slim-bookworm build stage and a runtime stage")
            continue
        build_name = stages[0].split()[-1] if " AS " in stages[0].upper() else None
        if stages[1].split()[1] not in RUNTIMES:
            problems.append(f"{where} runtime image {stages[1].split()[1]} not one of {RUNTIMES}")
        cut = lines.index(stages[1])
        build, runtime = lines[:cut], lines[cut:]
        cargo = [ln for ln in build if "cargo build" in ln]
        want = f"cargo build --release --locked -p {crate} --bin {binary}"
        if len(cargo) != 1 or want not in cargo[0]:
            problems.append(f"{where} build step {cargo}, want `{want}`")
        if binary not in bins.get(crate, set()):
            problems.append(f"{where} the workspace has no package {crate} with a binary {binary}")
        copies = [ln for ln in runtime if ln.upper().startswith(("COPY", "ADD"))]
        if len(copies) != 1 or not re.fullmatch(
                rf"COPY --from={re.escape(build_name or '')} \S+/{re.escape(binary)} /usr/local/bin/{re.escape(binary)}",
                copies[0]):
            problems.append(f"{where} runtime copies {copies}, want only the binary to /usr/local/bin/{binary}")
        users = [ln.split()[1] for ln in runtime if ln.upper().startswith("USER ")]
        if not users or users[-1].split(":")[0] in ("0", "root"):
            problems.append(f"{where} runtime USER {users}: must be non-root")
        exposed = {int(p.split("/")[0]) for ln in runtime if ln.upper().startswith("EXPOSE ")
                   for p in ln.split()[1:]}
        if exposed != ports:
            problems.append(f"{where} EXPOSE {sorted(exposed)} != {sorted(ports)}")
        entry = [ln for ln in runtime if ln.upper().startswith("ENTRYPOINT")]
        if entry != [f'ENTRYPOINT ["/usr/local/bin/{binary}"]']:
            problems.append(f"{where} {entry}, want ENTRYPOINT [\"/usr/local/bin/{binary}\"]")
    dockerignore = os.path.join(REPO, ".dockerignore")
    if not os.path.exists(dockerignore):
        problems.append(".dockerignore missing at the repository root")
    else:
        with open(dockerignore) as f:
            rules = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        if "target" not in rules or ".git" not in rules:
            problems.append(".dockerignore must leave out target and .git")
        if "!charts/mesh/crds" not in rules:
            problems.append(".dockerignore must keep charts/mesh/crds (galley embeds the CRDs)")
    return problems


def main():
    problems = check()
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
