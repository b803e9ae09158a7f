# citadel: the mesh CA (IstioCertificateService). Build from the repository root:
#   docker build -f docker/citadel.Dockerfile -t REPOSITORY/citadel:TAG .
# (docker/build.sh does this for every service.)

# --- build: the release binary, and only it -------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The whole workspace is needed (cargo reads every member's manifest); .dockerignore keeps
# target/, .git and local state out of the context.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p citadel --bin citadel \
    && install -D -m 0755 target/release/citadel /out/citadel

# --- runtime: glibc + libgcc only, no shell, non-root ----------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/citadel /usr/local/bin/citadel
USER 65532:65532
# CA gRPC, monitoring (/metrics, /healthz, /readyz). citadel needs a writable --state-dir.
EXPOSE 8060 15014
ENTRYPOINT ["/usr/local/bin/citadel"]
