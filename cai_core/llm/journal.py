"""The request journal: every finished model request, persisted, so nothing is paid for twice.

A journal lives under a storage prefix (a local directory or ``s3://bucket/prefix``,
through `cai_core.storage`). Each record is one JSON line keyed by the request key
(sha256 of the endpoint, model, messages/prompt and every parameter; see
`cai_core.llm.client.Request`). Lines are buffered in memory and written as a **new
part object** on each flush (S3 has no append): ``part-<ms>-<writer>-<seq>.jsonl``.
A flush happens at least every `flush_s` seconds (a background thread), at the end
of every client run, and on SIGTERM/SIGINT: the handlers installed by `activate`
write everything buffered (and anything a flush in progress had not confirmed yet)
before the signal's default behaviour resumes (or, with a drain callback, after the
client has let its in-flight requests finish).

On open, every part is read back ("replay"): a rerun, or a retried pod, finds each
finished request by its key and sends nothing for it. Duplicate lines (a record in two
parts after an interrupted flush) are harmless: the last one wins. A line that cannot be
parsed is counted and skipped; the other lines are kept. Many small parts are compacted into
one on open (written first, the old parts deleted after; request bodies are not carried over).

Record kinds (field ``t``): ``r`` a request result (``k`` key, ``q`` the request body,
``r`` the result), ``b`` an OpenAI batch submitted (``id``, ``keys``, ``endpoint``) and
``bd`` a batch finished (``id``, ``status``), so a rerun resumes polling a batch instead
of submitting it again.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from cai_core import storage
from cai_core.errors import StorageError
from cai_core.progress import log

PART_PREFIX = "part-"
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Journal:
    """Append-only, replayable record of finished requests under `prefix` (local or s3://)."""

    def __init__(self, prefix: str, *, flush_s: float = 5.0, storage_cfg: storage.StorageConfig | None = None,
                 compact_over: int = 200):
        self.prefix = os.fspath(prefix)
        self.flush_s = flush_s
        self.storage_cfg = storage_cfg
        self.compact_over = compact_over
        self.writer_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.results: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.replayed = 0
        self.parts_read = 0
        self.bad_lines = 0
        self.parts_written = 0
        self.lines_written = 0
        self._buf: list[str] = []
        self._writing: dict[int, list[str]] = {}
        self._seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._prev_handlers: dict[int, Any] = {}
        self._on_signal: Callable[[int], None] | None = None
        self._draining: int | None = None
        self._opened = False

    # ------------------------------------------------------------------ replay

    def open(self) -> "Journal":
        """Read every part back (idempotent)."""
        if self._opened:
            return self
        t0 = time.monotonic()
        try:
            parts = [p for p in storage.list_files(self.prefix, self.storage_cfg)
                     if os.path.basename(p.rstrip("/")).startswith(PART_PREFIX) and p.endswith(".jsonl")]
        except StorageError as exc:
            raise StorageError(f"cannot read the request journal at {self.prefix}: {exc}") from None
        if parts:
            workers = 16 if storage.is_remote(self.prefix) else 1
            with ThreadPoolExecutor(max_workers=workers) as pool:
                blobs = list(pool.map(lambda p: storage.read_bytes(p, self.storage_cfg), parts))
            for part, blob in zip(parts, blobs):
                self._replay(part, blob)
            self.parts_read = len(parts)
            log(f"journal {self.prefix}: replayed {self.replayed} records from {len(parts)} parts "
                f"({len(self.results)} finished requests) in {time.monotonic() - t0:.1f}s"
                + (f"; {self.bad_lines} unreadable lines skipped" if self.bad_lines else ""))
            if len(parts) > self.compact_over:
                self._compact(parts)
        self._opened = True
        return self

    def _replay(self, part: str, blob: bytes) -> None:
        for line in blob.split(b"\n"):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                kind = rec["t"]
            except (ValueError, KeyError, TypeError):
                self.bad_lines += 1
                continue
            self.replayed += 1
            if kind == "r":
                self.results[rec["k"]] = rec["r"]  # the request body ("q") stays on disk only
            elif kind == "b":
                self.batches.setdefault(rec["id"], {}).update(rec)
            elif kind == "bd":
                self.batches.setdefault(rec["id"], {"id": rec["id"]}).update(done=True, status=rec.get("status"))

    def _compact(self, parts: list[str]) -> None:
        lines = [json.dumps({"t": "r", "k": k, "r": r}, ensure_ascii=False) for k, r in self.results.items()]
        for b in self.batches.values():
            lines.append(json.dumps({**{k: v for k, v in b.items() if k not in ("done", "status")}, "t": "b"}))
            if b.get("done"):
                lines.append(json.dumps({"t": "bd", "id": b["id"], "status": b.get("status")}))
        self._write_part(lines, tag="compact")
        for p in parts:
            try:
                storage.delete(p, self.storage_cfg)
            except StorageError:
                pass  # a leftover part is only read twice next time
        log(f"journal {self.prefix}: compacted {len(parts)} parts into one")

    # ------------------------------------------------------------------ lookups

    def get(self, key: str) -> dict | None:
        """The stored result of a finished request, or None."""
        return self.results.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.results

    def __len__(self) -> int:
        return len(self.results)

    def pending_batches(self) -> list[dict]:
        """Batches submitted and not finished, oldest first."""
        return sorted((b for b in self.batches.values() if not b.get("done") and "keys" in b),
                      key=lambda b: b.get("created", 0))

    # ------------------------------------------------------------------ writes

    def add_result(self, key: str, result: dict, request_json: str | None = None) -> None:
        """Buffer one finished request (written on the next flush)."""
        self.results[key] = result
        if request_json is None:
            self._buf.append(json.dumps({"t": "r", "k": key, "r": result}, ensure_ascii=False))
        else:  # the request is already canonical JSON: splice it in instead of encoding it again
            self._buf.append('{"t":"r","k":"%s","q":%s,"r":%s}' % (key, request_json, json.dumps(result, ensure_ascii=False)))

    def add_batch(self, batch_id: str, keys: list[str], endpoint: str, **extra: Any) -> None:
        rec = {"t": "b", "id": batch_id, "keys": list(keys), "endpoint": endpoint, "created": time.time(), **extra}
        self.batches[batch_id] = dict(rec)
        self._buf.append(json.dumps(rec))

    def finish_batch(self, batch_id: str, status: str) -> None:
        self.batches.setdefault(batch_id, {"id": batch_id}).update(done=True, status=status)
        self._buf.append(json.dumps({"t": "bd", "id": batch_id, "status": status}))

    def _next_name(self, tag: str = "") -> str:
        self._seq += 1
        return storage.join(self.prefix, f"{PART_PREFIX}{int(time.time() * 1000):013d}-{self.writer_id}{tag and '-' + tag}-{self._seq:06d}.jsonl")

    def _write_part(self, lines: list[str], tag: str = "") -> None:
        data = ("\n".join(lines) + "\n").encode("utf-8")
        storage.write_bytes(self._next_name(tag), data, self.storage_cfg)
        self.parts_written += 1
        self.lines_written += len(lines)

    def flush(self) -> int:
        """Write everything buffered as one new part; returns the number of lines written."""
        with self._lock:
            lines, self._buf = self._buf, []
            if not lines:
                return 0
            token = id(lines)
            self._writing[token] = lines
            try:
                self._write_part(lines)
            except BaseException:
                self._buf[:0] = lines  # keep them for the next attempt
                raise
            finally:
                self._writing.pop(token, None)
            return len(lines)

    def _flush_for_signal(self) -> None:
        """From a signal handler: write the buffer and any unconfirmed in-progress flush, without the lock."""
        lines = [line for pending in list(self._writing.values()) for line in pending]
        buf, self._buf = self._buf, []
        lines += buf
        if lines:
            try:
                self._write_part(lines, tag="sig")
            except Exception as exc:  # noqa: BLE001 - a dying process can only report it
                self._buf[:0] = buf
                log(f"journal {self.prefix}: flush on signal failed: {exc}")

    # ---------------------------------------------------------- active period

    @contextmanager
    def activate(self, on_signal: Callable[[int], None] | None = None) -> Iterator["Journal"]:
        """Periodic flushes in a thread and SIGTERM/SIGINT handlers for the duration of a run.

        `on_signal(sig)` (optional) is told of the first signal after the buffer is flushed;
        it must arrange for the run to stop and then call `reraise(sig)`. Without it, or on
        a second signal, the default behaviour of the signal resumes at once.
        """
        self.open()
        self._on_signal, self._draining = on_signal, None
        self._install()
        self._stop.clear()
        self._thread = threading.Thread(target=self._flusher, name="cai-journal-flush", daemon=True)
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            self._thread = None
            try:
                self.flush()
            finally:
                self._uninstall()
                self._on_signal = None

    def _flusher(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - retried on the next tick; the buffer is kept
                log(f"journal {self.prefix}: flush failed, will retry: {exc}")

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # handlers can only be set from the main thread; periodic flushes still run
        for sig in _SIGNALS:
            try:
                self._prev_handlers[sig] = signal.signal(sig, self._handle)
            except (ValueError, OSError):
                pass

    def _uninstall(self) -> None:
        for sig, prev in self._prev_handlers.items():
            try:
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
            except (ValueError, OSError):
                pass
        self._prev_handlers.clear()

    def _handle(self, sig: int, frame: Any) -> None:
        self._flush_for_signal()
        if self._on_signal is not None and self._draining is None:
            self._draining = sig
            log(f"received {signal.Signals(sig).name}: journal flushed; letting requests in flight finish")
            self._on_signal(sig)
            return
        self.reraise(sig, frame)

    def reraise(self, sig: int, frame: Any = None) -> None:
        """Flush, restore the previous handler and give the signal its default behaviour."""
        try:
            self._flush_for_signal()
        finally:
            prev = self._prev_handlers.get(sig, signal.SIG_DFL)
            self._stop.set()
            self._uninstall()
            if callable(prev):
                prev(sig, frame)  # e.g. Python's SIGINT handler: raises KeyboardInterrupt
            elif prev != signal.SIG_IGN:
                signal.signal(sig, signal.SIG_DFL)
                os.kill(os.getpid(), sig)

    def close(self) -> None:
        self.flush()


__all__ = ["Journal", "PART_PREFIX"]
