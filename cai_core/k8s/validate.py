"""Kubernetes and OCI naming rules (apimachinery validation, distribution/reference).

A leaf (standard library only): the cluster settings (cai_core/config/cluster.py),
the training launcher's config (`k8s.config`) and the pipeline's platform layer
check names, quantities and image references with it when a config is loaded.
"""
from __future__ import annotations

import re

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_LABEL_KEY_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_CPU = re.compile(r"^([0-9]*[.])?[0-9]+m?$")  # what KFP accepts for CPU
_MEMORY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")  # what KFP accepts for memory
_IMG_DOMAIN = r"(?:localhost|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?:[0-9]+)(?::[0-9]+)?"
_IMG_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
_IMG_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_IMG_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_IMAGE = re.compile(rf"^(?:{_IMG_DOMAIN}/)?{_IMG_PATH}(?::{_IMG_TAG})?(?:@{_IMG_DIGEST})?$")
_REGISTRY = re.compile(rf"^(?:{_IMG_DOMAIN})(?:/{_IMG_PATH})?$|^{_IMG_PATH}$")
_TAG = re.compile(rf"^{_IMG_TAG}$")
#: Words that make an environment variable name look like a secret (those belong in a Secret reference).
_SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "API_KEY")


def image_reference_problem(ref: str) -> str | None:
    """Why `ref` is not a pinned image reference (registry/name:tag or @digest), or None."""
    if not ref:
        return "is empty"
    if ref != ref.strip() or any(c.isspace() for c in ref):
        return f"{ref!r} contains whitespace"
    if len(ref.split("@")[0].rsplit(":", 1)[0]) > 255:
        return f"{ref!r}: the repository name is longer than 255 characters"
    if not _IMAGE.match(ref):
        return (f"{ref!r} is not a valid image reference (expected registry/name:tag or registry/name@sha256:..., "
                "lower-case repository path)")
    last = ref.split("@")[0].rsplit("/", 1)[-1]
    if ":" not in last and "@" not in ref:
        return f"{ref!r} has no tag or digest (pin one, e.g. {ref}:0.1.0)"
    return None


def is_registry(prefix: str) -> bool:
    """A registry/repository prefix such as ghcr.io/my-org."""
    return bool(_REGISTRY.match(prefix))


def is_image_tag(tag: str) -> bool:
    return bool(_TAG.match(tag))


def is_dns_subdomain(name: str) -> bool:
    return len(name) <= 253 and bool(_DNS_SUBDOMAIN.match(name))


def is_dns_label(name: str) -> bool:
    return bool(_DNS_LABEL.match(name))


def is_label_value(value: str) -> bool:
    return bool(_LABEL_VALUE.match(value))


def is_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return bool(_LABEL_KEY_NAME.match(name)) and (not prefix or is_dns_subdomain(prefix))


def is_secret_key(key: str) -> bool:
    """A key inside a Secret's data."""
    return len(key) <= 253 and bool(_SECRET_KEY.match(key))


def is_env_name(name: str) -> bool:
    return bool(_ENV_NAME.match(name))


def looks_like_secret(name: str) -> bool:
    """An environment variable name that suggests a secret value (SECRET, TOKEN, PASSWORD, API_KEY)."""
    return any(word in name.upper() for word in _SECRET_WORDS)


def is_cpu_quantity(value: str) -> bool:
    return bool(_CPU.match(value))


def is_memory_quantity(value: str) -> bool:
    return bool(_MEMORY.match(value))
