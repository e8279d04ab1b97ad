#!/usr/bin/env bash
# make image-test: build the CPU image with podman (or docker when a daemon answers) from a locally made
# Debian base, run it with a data volume and --shm-size, and check it from outside: the health check
# passes, /v1/models lists the CPU registry, speech and transcription on the weight-free engines answer
# correctly, the process is not root, files in /data belong to its user, SIGTERM stops it within the grace.
# Prints the image size and the build time. Layers and pip downloads are cached between runs.
#
# Environment: CONTAINER_ENGINE (podman|docker), TALKIES_BASE_IMAGE (default: a debootstrap'd bookworm
# made here once), TALKIES_IMAGE (default localhost/talkies:test), TALKIES_STOP_GRACE (default 30 s).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "image-test: $*"; }
ENGINE=${CONTAINER_ENGINE:-}
if [ -z "$ENGINE" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=podman; fi
fi
if [ "$ENGINE" = podman ] && ! command -v podman >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "image-test: podman is not installed (apt-get install podman)" >&2; exit 1; }
    log "apt-get install podman"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        podman buildah fuse-overlayfs slirp4netns uidmap debootstrap runc >/dev/null
fi
RUN_FLAGS=()
BUILD_FLAGS=()
if [ "$ENGINE" = podman ]; then
    # crun fails on this kernel's hybrid cgroups; podman's default ulimits are refused here.
    ENGINE="podman --runtime runc"
    BUILD_FLAGS+=(--format docker --network host --ulimit nofile=20000:20000 --ulimit nproc=32768:32768)  # keeps HEALTHCHECK
    RUN_FLAGS+=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
fi

BASE=${TALKIES_BASE_IMAGE:-localhost/talkies-base:bookworm}
IMAGE=${TALKIES_IMAGE:-localhost/talkies:test}
GRACE=${TALKIES_STOP_GRACE:-30}

if [ "$BASE" = localhost/talkies-base:bookworm ] && ! $ENGINE image exists "$BASE" 2>/dev/null; then
    command -v debootstrap >/dev/null || { echo "image-test: debootstrap is needed to make the base" >&2; exit 1; }
    log "making the base image $BASE with debootstrap (once per machine)"
    root=$(mktemp -d)
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$root" http://deb.debian.org/debian >/dev/null
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | $ENGINE import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
    rm -rf "$root"
fi

# torch's CPU wheel from pip's find-links on this machine, if any: bind-mounted into the build, not copied.
mkdir -p wheels
for dir in ${PIP_FIND_LINKS:-} /opt/wheels; do
    for wheel in "$dir"/torch-*+cpu-*.whl; do
        [ -f "$wheel" ] && [ ! -f "wheels/${wheel##*/}" ] || continue
        ln -f "$wheel" wheels/ 2>/dev/null || cp "$wheel" wheels/
    done
done
SECRET=()
CA=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
[ -s "$CA" ] && SECRET=(--secret "id=ca_bundle,src=$CA")  # TLS-intercepting proxies: pip trusts this bundle

log "building $IMAGE on $BASE with $ENGINE"
started=$(date +%s)
$ENGINE build "${BUILD_FLAGS[@]}" "${SECRET[@]}" --build-arg "BASE_IMAGE=$BASE" -t "$IMAGE" -f Dockerfile .
build_seconds=$(( $(date +%s) - started ))
size=$($ENGINE image inspect --format '{{.Size}}' "$IMAGE")
log "built in ${build_seconds}s; image size $((size / 1024 / 1024)) MiB"

name=talkies-image-test-$$
volume=$name-data
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() {
    $ENGINE rm -f "$name" >/dev/null 2>&1 || true
    $ENGINE volume rm -f "$volume" >/dev/null 2>&1 || true
}
trap cleanup EXIT
$ENGINE volume create "$volume" >/dev/null
$ENGINE run -d --name "$name" --network host --shm-size 256m "${RUN_FLAGS[@]}" \
    -e TALKIES_HOST=127.0.0.1 -e "TALKIES_PORT=$port" -e TALKIES_PREFETCH=0 \
    -v "$volume:/data" "$IMAGE" >/dev/null

log "waiting for the health check"
healthy=0
for _ in $(seq 1 90); do
    if [ "$ENGINE" = docker ]; then
        [ "$(docker inspect --format '{{.State.Health.Status}}' "$name")" = healthy ] && healthy=1 && break
    elif $ENGINE healthcheck run "$name" >/dev/null 2>&1; then
        healthy=1 && break
    fi
    sleep 2
done
if [ "$healthy" != 1 ]; then
    $ENGINE logs "$name" | tail -40
    echo "image-test: the health check never passed" >&2
    exit 1
fi
log "healthy"

uid=$($ENGINE exec "$name" id -u)
[ "$uid" != 0 ] || { echo "image-test: the server runs as root" >&2; exit 1; }
log "runs as uid $uid"

python_bin=.venv/bin/python
[ -x "$python_bin" ] || python_bin=python3
"$python_bin" scripts/image_check.py "http://127.0.0.1:$port"

mountpoint=$($ENGINE volume inspect --format '{{.Mountpoint}}' "$volume")
owners=$(find "$mountpoint" -mindepth 1 -printf '%u:%U\n' | sort -u)
log "files under /data belong to: $(echo $owners)"
[ -n "$owners" ] || { echo "image-test: nothing was written to /data" >&2; exit 1; }
if echo "$owners" | grep -qv ":$uid\$"; then
    echo "image-test: files under /data not owned by uid $uid: $owners" >&2; exit 1
fi

log "stopping with SIGTERM (grace ${GRACE}s)"
stop_started=$(date +%s.%N)
$ENGINE stop -t "$GRACE" "$name" >/dev/null
stop_seconds=$(python3 -c "import sys; print(round($(date +%s.%N) - $stop_started, 1))")
code=$($ENGINE inspect --format '{{.State.ExitCode}}' "$name")
log "stopped in ${stop_seconds}s with exit code $code"
$ENGINE logs "$name" 2>&1 | tail -5
python3 -c "import sys; sys.exit(0 if $stop_seconds < $GRACE and $code in (0, 143) else 1)" \
    || { echo "image-test: did not stop cleanly within the grace period" >&2; exit 1; }
log "passed: image $IMAGE, $((size / 1024 / 1024)) MiB, built in ${build_seconds}s"
