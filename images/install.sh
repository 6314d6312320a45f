#!/bin/sh
# The install steps the cai images share. Each Dockerfile's final stage runs it from the build
# context without copying it into the image:
#   RUN --mount=type=bind,source=images/install.sh,target=/tmp/install.sh sh /tmp/install.sh STEP [ARG ...]
# The base images and the pins stay in each Dockerfile (TORCH_VERSION, TORCH_INDEX_URL: build ARGs).
#
#   torch              pip install "torch==$TORCH_VERSION", from the index $TORCH_INDEX_URL when it is set
#   cai [--extras E[,E]] [PIP_ARG ...]
#                      pip install the cai wheel from /wheels (the build stage's) with the extras E of
#                      pyproject.toml (tests/k8s/test_images.py reads them from each Dockerfile), then
#                      remove /wheels
#   check MODULE ...   import each module and print its version (the image's smoke test)
#   user               add the non-root user the images run as: cai, uid 10001
set -eu

step="${1:-}"
[ $# -gt 0 ] && shift
case "$step" in
  torch)
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
      python3 -m pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION:?}"
    else
      python3 -m pip install --no-cache-dir "torch==${TORCH_VERSION:?}"
    fi
    ;;
  cai)
    extras=""
    if [ "${1:-}" = "--extras" ]; then
      extras="[${2:?install.sh cai --extras: name the extras}]"
      shift 2
    fi
    for wheel in /wheels/*.whl; do
      python3 -m pip install --no-cache-dir "$@" "${wheel}${extras}"
    done
    rm -rf /wheels
    ;;
  check)
    python3 -c 'import importlib, sys; print(*(f"{m} {importlib.import_module(m).__version__}" for m in sys.argv[1:]))' "$@"
    ;;
  user)
    useradd --create-home --uid 10001 --user-group cai
    ;;
  *)
    echo "install.sh: unknown step '$step' (torch, cai, check, user)" >&2
    exit 2
    ;;
esac
