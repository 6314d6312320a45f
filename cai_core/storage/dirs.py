"""Directories: copies between any two locations, verified, with the manifest written last."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any

from cai_core.errors import StorageError
from cai_core.storage.config import _DEFAULT, StorageConfig
from cai_core.storage.errors import NotFoundError, _guard
from cai_core.storage.files import _list_sizes, delete, write_bytes
from cai_core.storage.local import _copy_stream, _hash_file
from cai_core.storage.manifest import MANIFEST_NAME, _manifest_bytes, _verify, read_manifest
from cai_core.storage.s3 import _s3, _transfers
from cai_core.storage.uris import _local, _split, is_remote, join


def _local_files(root: str) -> list[str]:
    rels = []
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
            if rel != MANIFEST_NAME and not (f.startswith(".") and ".tmp-" in f):
                rels.append(rel)
    return sorted(rels)


def _copy_tree(src: str, dst: str, cfg: StorageConfig, *, need_manifest: bool) -> dict[str, dict[str, Any]]:
    """Copy a directory between any two locations; the destination manifest is written last.

    need_manifest: the source must be complete (have a manifest) and is verified against it;
    otherwise (local sources only) the files on disk are taken as they are and hashed afresh.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    remote_src, remote_dst = is_remote(src), is_remote(dst)
    if not remote_src:
        root = _local(src)
        if not os.path.exists(root):
            raise NotFoundError(f"cannot copy {src}: no such directory")
        if not os.path.isdir(root):
            raise StorageError(f"cannot copy {src}: not a directory")
    want = read_manifest(src, cfg) if (need_manifest or remote_src) else None
    rels = sorted(want) if want is not None else _local_files(_local(src))

    if not remote_dst:
        if not remote_src and os.path.realpath(_local(src)) == os.path.realpath(_local(dst)):
            return _seal_in_place(_local(dst), rels, want)
        return _copy_into_local(src, dst, rels, want, cfg)

    # Remote destination: drop an old manifest first, then files, then the new manifest.
    delete(join(dst, MANIFEST_NAME), cfg)
    files: dict[str, dict[str, Any]] = {}
    dbucket, dkey, client, cfg = _s3(dst, cfg, need_key=False)
    dbase = dkey.rstrip("/")
    with _guard("write", dst, cfg, client):
        with _transfers(cfg, client) as tm:
            futures = []  # (future, action, uri named in an error)
            for rel in rels:
                target = f"{dbase}/{rel}" if dbase else rel
                if not remote_src:
                    path = os.path.join(_local(src), *rel.split("/"))
                    with _guard("read", join(src, rel)):
                        files[rel] = dict(zip(("size", "sha256"), _hash_file(path)))
                    if want is not None:
                        _verify(rel, (files[rel]["size"], files[rel]["sha256"]), want[rel], src)
                    futures.append((tm.upload(path, dbucket, target), "upload to", join(dst, rel)))
                else:
                    sbucket, skey = _split(src)
                    sbase = skey.rstrip("/")
                    files[rel] = dict(want[rel])
                    copy_source = {"Bucket": sbucket, "Key": f"{sbase}/{rel}" if sbase else rel}
                    future = tm.copy(copy_source, dbucket, target, source_client=client)
                    futures.append((future, f"copy {join(src, rel)} to", join(dst, rel)))
            for fut, action, where in futures:
                with _guard(action, where, cfg, client):
                    fut.result()
    # Check what landed before declaring the directory complete.
    sizes = _list_sizes(dst, cfg)
    for rel in rels:
        if sizes.get(rel) != files[rel]["size"]:
            raise StorageError(f"{join(dst, rel)}: size after copy is {sizes.get(rel)}, expected {files[rel]['size']}")
    write_bytes(join(dst, MANIFEST_NAME), _manifest_bytes(files), cfg)
    return files


def _seal_in_place(root: str, rels: list[str], want: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Source and destination are the same local directory: (re)write its manifest, last."""
    files: dict[str, dict[str, Any]] = {}
    with _guard("write", root):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(root, MANIFEST_NAME))
        for rel in rels:
            got = _hash_file(os.path.join(root, *rel.split("/")))
            if want is not None:
                _verify(rel, got, want[rel], root)
            files[rel] = {"size": got[0], "sha256": got[1]}
    write_bytes(os.path.join(root, MANIFEST_NAME), _manifest_bytes(files))
    return files


def _copy_into_local(src: str, dst: str, rels: list[str], want: dict[str, Any] | None,
                     cfg: StorageConfig) -> dict[str, dict[str, Any]]:
    """Fill a staging directory beside `dst`, verify, then move into place (manifest last)."""
    final = os.path.abspath(_local(dst))
    if os.path.exists(final) and not os.path.isdir(final):
        raise StorageError(f"cannot write directory {dst}: a file is in the way")
    parent = os.path.dirname(final)
    with _guard("write", dst):
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.partial-", dir=parent)
    files: dict[str, dict[str, Any]] = {}
    try:
        remote_src = is_remote(src)
        if remote_src:
            sbucket, skey, client, cfg = _s3(src, cfg, need_key=False)
            sbase = skey.rstrip("/")
            with _guard("download", src, cfg, client):
                with _transfers(cfg, client) as tm:
                    futures = []
                    for rel in rels:
                        path = os.path.join(staging, *rel.split("/"))
                        os.makedirs(os.path.dirname(path), exist_ok=True)
                        futures.append((tm.download(sbucket, f"{sbase}/{rel}" if sbase else rel, path), join(src, rel)))
                    for fut, where in futures:
                        with _guard("download", where, cfg, client):
                            fut.result()
            for rel in rels:
                got = _hash_file(os.path.join(staging, *rel.split("/")))
                _verify(rel, got, want[rel], src)  # type: ignore[index]
                files[rel] = {"size": got[0], "sha256": got[1]}
        else:
            for rel in rels:
                path = os.path.join(staging, *rel.split("/"))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with _guard("read", join(src, rel)):
                    with open(os.path.join(_local(src), *rel.split("/")), "rb") as fin, open(path, "wb") as fout:
                        got = _copy_stream(fin, fout)
                if want is not None:
                    _verify(rel, got, want[rel], src)
                files[rel] = {"size": got[0], "sha256": got[1]}
        with _guard("write", dst):
            with open(os.path.join(staging, MANIFEST_NAME), "wb") as fh:
                fh.write(_manifest_bytes(files))
                fh.flush()
                os.fsync(fh.fileno())
            if not os.path.exists(final):
                os.rename(staging, final)  # the whole directory appears at once
                staging = ""
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(final, MANIFEST_NAME))
                for rel in rels:
                    target = os.path.join(final, *rel.split("/"))
                    if os.path.isdir(target):
                        raise StorageError(f"cannot write {join(dst, rel)}: a directory is in the way")
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    os.replace(os.path.join(staging, *rel.split("/")), target)
                os.replace(os.path.join(staging, MANIFEST_NAME), os.path.join(final, MANIFEST_NAME))
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
    return files


def upload_dir(local_dir: str, uri: str, cfg: StorageConfig | None = None) -> dict[str, dict[str, Any]]:
    """Copy a local directory to `uri` with a fresh manifest written last; returns the manifest's files."""
    if is_remote(os.fspath(local_dir)):
        raise StorageError(f"upload_dir: {local_dir} is not a local directory (use copy_dir)")
    return _copy_tree(local_dir, uri, cfg or _DEFAULT, need_manifest=False)


def download_dir(uri: str, local_dir: str, cfg: StorageConfig | None = None) -> dict[str, dict[str, Any]]:
    """Copy a complete directory (one with a manifest) to a local directory, verifying sizes and sha256."""
    if is_remote(os.fspath(local_dir)):
        raise StorageError(f"download_dir: {local_dir} is not a local directory (use copy_dir)")
    return _copy_tree(uri, local_dir, cfg or _DEFAULT, need_manifest=True)


def copy_dir(src_uri: str, dst_uri: str, cfg: StorageConfig | None = None) -> dict[str, dict[str, Any]]:
    """Copy a directory between any two locations (local or S3), manifest written last.

    A remote source must be complete (have a manifest) and is verified against it. A local
    source is taken as it is on disk (any manifest in it is regenerated), like `upload_dir`;
    copying a local directory onto itself just (re)writes its manifest.
    """
    return _copy_tree(src_uri, dst_uri, cfg or _DEFAULT, need_manifest=False)
