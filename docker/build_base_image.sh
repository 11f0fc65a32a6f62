#!/usr/bin/env bash
# Build a Debian bookworm base image with Python 3 from the apt mirror this machine already uses,
# for machines that reach no image registry. Idempotent: does nothing when the image exists.
#
# Usage: docker/build_base_image.sh [IMAGE_TAG]
#   IMAGE_TAG   default: airflow-mlops-base:bookworm (or $MLOPS_BASE_IMAGE)
# Env:
#   DEBIAN_MIRROR   default: the first URIs: line of /etc/apt/sources.list.d/debian.sources
#   WORK_DIR        where the root filesystem is assembled (default: a temp folder, removed after)
#
# Then: docker build --build-arg BASE_IMAGE=airflow-mlops-base:bookworm -f docker/gateway.Dockerfile .
set -euo pipefail

IMAGE="${1:-${MLOPS_BASE_IMAGE:-airflow-mlops-base:bookworm}}"

# Test sessions that run side by side (the stack, the Docker deploy tests) may ask at once: one builds,
# the others wait and find the image.
exec 9>"/tmp/mlops-base-image-${IMAGE//[^a-zA-Z0-9]/_}.lock"
flock 9
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE already exists"
    exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "debootstrap not found: apt-get install -y debootstrap" >&2
    exit 2
fi

SOURCES=/etc/apt/sources.list.d/debian.sources
if [ -z "${DEBIAN_MIRROR:-}" ]; then
    if [ -f "$SOURCES" ]; then
        DEBIAN_MIRROR="$(awk '/^URIs:/ {print $2; exit}' "$SOURCES")"
    fi
    DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
fi

WORK="${WORK_DIR:-$(mktemp -d /tmp/mlops-base-XXXXXX)}"
ROOTFS="$WORK/rootfs"
cleanup() { rm -rf "$WORK"; }
[ -z "${WORK_DIR:-}" ] && trap cleanup EXIT

echo "debootstrap bookworm from $DEBIAN_MIRROR into $ROOTFS"
debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$ROOTFS" "$DEBIAN_MIRROR"

# Keep the image small: package lists and caches are not needed at run time.
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/usr/share/doc/* \
    "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*
# `python` as well as `python3`, as in the public python images.
ln -sf python3 "$ROOTFS/usr/bin/python"

tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$IMAGE"
echo "built base image $IMAGE"
