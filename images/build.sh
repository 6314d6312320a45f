#!/usr/bin/env bash
# Build (and optionally push) the cai images, tagged with the cai package version.
#
#   images/build.sh [--registry REG] [--tag TAG] [--push] [--platform linux/amd64] [core|trainer|vllm ...]
#
# REG defaults to $CAI_REGISTRY, else ghcr.io/cai-project; TAG to the version in
# cai_core/__init__.py ('+' becomes '-'). Images: REG/cai-core:TAG, REG/cai-trainer:TAG,
# REG/cai-vllm:TAG, the names `cai compile` puts in the pipeline from cluster.registry
# and cluster.tag. Optional build arguments are passed through from the environment:
# TORCH_INDEX_URL (a torch wheel index: CPU-only for core, your CUDA variant for trainer),
# PYTHON_IMAGE, CUDA_IMAGE, VLLM_IMAGE (pinned bases). DOCKER picks the client (docker, podman).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
registry="${CAI_REGISTRY:-ghcr.io/cai-project}"
tag=""
push=0
platform=""
dry_run=0
kinds=()

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --registry) registry="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --push) push=1; shift ;;
    --platform) platform="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    core|trainer|vllm) kinds+=("$1"); shift ;;
    *) echo "build.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[ ${#kinds[@]} -gt 0 ] || kinds=(core trainer vllm)

version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$root/cai_core/__init__.py")"
if [ -z "$version" ]; then echo "build.sh: no __version__ in cai_core/__init__.py" >&2; exit 1; fi
tag="${tag:-${version//+/-}}"
registry="${registry%/}"

docker_cmd="${DOCKER:-docker}"
for kind in "${kinds[@]}"; do
  image="$registry/cai-$kind:$tag"
  args=(build -f "$here/$kind/Dockerfile" -t "$image"
        --label "org.opencontainers.image.version=$version"
        --label "org.opencontainers.image.title=cai-$kind")
  [ -n "$platform" ] && args+=(--platform "$platform")
  for var in TORCH_INDEX_URL PYTHON_IMAGE CUDA_IMAGE VLLM_IMAGE; do
    if [ -n "${!var:-}" ]; then args+=(--build-arg "$var=${!var}"); fi
  done
  args+=("$root")
  echo "+ $docker_cmd ${args[*]}"
  if [ "$dry_run" -eq 0 ]; then
    "$docker_cmd" "${args[@]}"
    "$docker_cmd" run --rm "$image" --version   # smoke: the entrypoint is `cai`
    if [ "$push" -eq 1 ]; then "$docker_cmd" push "$image"; fi
  fi
done
