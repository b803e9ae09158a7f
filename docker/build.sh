#!/usr/bin/env bash
# Builds the mesh's images from docker/<image>.Dockerfile, at the repository root as build
# context, tagged REPOSITORY/<image>:TAG — the names charts/mesh expects
# (`image.repository`, `image.tag`).
#
# usage: docker/build.sh REPOSITORY TAG [IMAGE...]
#   REPOSITORY  prefix of every image, e.g. registry.example.com/mesh
#   TAG         tag of every image, e.g. 0.1.0
#   IMAGE       some of: galley pilot citadel mixer mesh-proxy (default: all)
# environment:
#   DOCKER      the client to run (default: docker; podman works too)
#   PUSH=1      push each image after building it
#   PLATFORM    passed as --platform (e.g. linux/amd64)
#
# Needs BuildKit (the Dockerfiles use cache mounts) and network access to the base images
# rust:1.95-slim-bookworm and gcr.io/distroless/cc-debian12:nonroot, and to crates.io.
set -euo pipefail

all=(galley pilot citadel mixer mesh-proxy)

usage() {
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 2 ] || usage
repository="${1%/}"
tag="$2"
shift 2
{ [ -n "$repository" ] && [ -n "$tag" ]; } || usage
images=("$@")
[ ${#images[@]} -gt 0 ] || images=("${all[@]}")

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
docker="${DOCKER:-docker}"
platform=()
[ -n "${PLATFORM:-}" ] && platform=(--platform "$PLATFORM")

for image in "${images[@]}"; do
    if [ ! -f "$root/docker/$image.Dockerfile" ]; then
        echo "build.sh: no image $image (have: ${all[*]})" >&2
        exit 2
    fi
done

for image in "${images[@]}"; do
    ref="$repository/$image:$tag"
    echo "build.sh: building $ref"
    DOCKER_BUILDKIT=1 "$docker" build "${platform[@]}" \
        -f "$root/docker/$image.Dockerfile" \
        -t "$ref" \
        --label "org.opencontainers.image.version=$tag" \
        --label "org.opencontainers.image.title=$image" \
        "$root"
    if [ "${PUSH:-0}" = 1 ]; then
        "$docker" push "$ref"
    fi
done
echo "build.sh: built ${images[*]} as $repository/<image>:$tag"
