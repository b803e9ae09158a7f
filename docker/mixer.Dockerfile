# mixer: policy Check and telemetry Report (istio.mixer.v1). Build from the repository root:
#   docker build -f docker/mixer.Dockerfile -t REPOSITORY/mixer:TAG .
# (docker/build.sh does this for every service.)

# --- build: the release binary, and only it -------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The whole workspace is needed (cargo reads every member's manifest); .dockerignore keeps
# target/, .git and local state out of the context.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mixer --bin mixer \
    && install -D -m 0755 target/release/mixer /out/mixer

# --- runtime: glibc + libgcc only, no shell, non-root ----------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/mixer /usr/local/bin/mixer
USER 65532:65532
# Mixer gRPC (Check/Report), monitoring (/metrics, /healthz, /readyz).
EXPOSE 9091 15014
ENTRYPOINT ["/usr/local/bin/mixer"]
