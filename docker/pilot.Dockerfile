# pilot: Envoy xDS v3 (ADS) built from galley's config. Build from the repository root:
#   docker build -f docker/pilot.Dockerfile -t REPOSITORY/pilot:TAG .
# (docker/build.sh does this for every service.)

# --- build: the release binary, and only it -------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The whole workspace is needed (cargo reads every member's manifest); .dockerignore keeps
# target/, .git and local state out of the context.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p pilot --bin pilot \
    && install -D -m 0755 target/release/pilot /out/pilot

# --- runtime: glibc + libgcc only, no shell, non-root ----------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/pilot /usr/local/bin/pilot
USER 65532:65532
# xDS (plaintext gRPC), debug (HTTP), monitoring (/metrics, /healthz, /readyz).
EXPOSE 15010 8080 15014
ENTRYPOINT ["/usr/local/bin/pilot"]
