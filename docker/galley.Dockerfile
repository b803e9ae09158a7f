# galley: config validation, store and MCP server. Build from the repository root:
#   docker build -f docker/galley.Dockerfile -t REPOSITORY/galley:TAG .
# (docker/build.sh does this for every service.)

# --- build: the release binary, and only it -------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The whole workspace is needed (cargo reads every member's manifest); .dockerignore keeps
# target/, .git and local state out of the context. galley embeds charts/mesh/crds/ at build time.
COPY . .
# The cache mounts keep the crate registry and target/ between builds (BuildKit); the binary is
# copied out of the cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p galley --bin galley \
    && install -D -m 0755 target/release/galley /out/galley

# --- runtime: glibc + libgcc only, no shell, non-root ----------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/galley /usr/local/bin/galley
# distroless' nonroot user (the chart runs it as uid 1337 instead; either is fine).
USER 65532:65532
# MCP (gRPC), apply API (HTTP), monitoring (/metrics, /healthz, /readyz).
EXPOSE 9901 9902 15014
ENTRYPOINT ["/usr/local/bin/galley"]
