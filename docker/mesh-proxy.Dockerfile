# mesh-proxy: the sidecar and ingress gateway (`--type router`) proxy. Build from the repository
# root:
#   docker build -f docker/mesh-proxy.Dockerfile -t REPOSITORY/mesh-proxy:TAG .
# (docker/build.sh does this for every service.)

# --- build: the release binary, and only it -------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The whole workspace is needed (cargo reads every member's manifest); .dockerignore keeps
# target/, .git and local state out of the context.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mesh-proxy --bin mesh-proxy \
    && install -D -m 0755 target/release/mesh-proxy /out/mesh-proxy

# --- runtime: glibc + libgcc only, no shell, non-root ----------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/mesh-proxy /usr/local/bin/mesh-proxy
USER 65532:65532
# admin (15000), outbound (15001), inbound (15006), and as the chart's ingress gateway runs it:
# monitoring (15090: /metrics, /healthz, /readyz) and the gateway's HTTP listener (8080).
EXPOSE 15000 15001 15006 15090 8080
ENTRYPOINT ["/usr/local/bin/mesh-proxy"]
