"""API keys: stored hashed, each mapped to a tenant.

The store is one JSON file (default ``<output_dir>/service/api_keys.json``, mode 0600)::

    {"version": 1, "keys": [{"key_id": "k_3f2a9c0e1b7d", "tenant": "acme", "salt": "<hex>",
      "sha256": "<hex of sha256(salt + secret)>", "created_at": "...", "revoked_at": null}]}

A secret looks like ``st_<key_id>_<43 url-safe characters>`` (256 random bits). It is shown once,
by ``create``, and never stored: only a salted sha256 is. ``verify`` finds the record by the key id
the secret carries and compares digests in constant time. Writers (``create``, ``revoke``) hold an
exclusive ``flock`` on ``<file>.lock`` and replace the file atomically (temporary file, fsync,
``os.replace``), so a running service never reads a half-written file; it rereads the file when
its modification time or size changes, so keys created or revoked by the CLI apply at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SECRET = re.compile(r"^st_(k_[0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: never the secret or its hash."""

    key_id: str
    tenant: str
    created_at: str
    revoked_at: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant and the key used; both None when auth is off (sees every tenant)."""

    tenant: str | None
    key_id: str | None = None

    def sees(self, tenant: str) -> bool:
        return self.tenant is None or self.tenant == tenant


def _digest(salt_hex: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt_hex) + secret.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


log = logging.getLogger("sleeptime.service")


class KeyFileError(RuntimeError):
    """The key file cannot be read and no good copy was read before (the service answers 503)."""


class KeyStore:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._records: dict[str, dict[str, Any]] = {}
        self._loaded = False  # a good set was read at least once

    # -- reading ----------------------------------------------------------------------------
    def _read_file(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise ValueError(f"{self.path}: not an API key file (expected {{'version': 1, 'keys': [...]}})")
        return {r["key_id"]: r for r in data["keys"]}

    def _current(self) -> dict[str, dict[str, Any]]:
        """The records, reread when the file changed (one stat per call)."""
        try:
            st = os.stat(self.path)
            stamp: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._records = self._read_file() if stamp is not None else {}
                    self._loaded = True
                except (ValueError, KeyError, TypeError, OSError) as exc:  # JSONDecodeError is a ValueError
                    # A half-written or hand-broken file: keep the last good set; with none, refuse.
                    if not self._loaded:
                        raise KeyFileError(f"the API key file cannot be read ({type(exc).__name__})") from None
                    log.warning("API key file unreadable (%s); keeping the %d keys read before",
                                type(exc).__name__, len(self._records))
                self._stamp = stamp
            return self._records

    def list(self) -> list[KeyInfo]:
        return [
            KeyInfo(r["key_id"], r["tenant"], r["created_at"], r.get("revoked_at"))
            for r in sorted(self._current().values(), key=lambda r: r["created_at"])  # stable: file order within a second
        ]

    def verify(self, secret: str | None) -> KeyInfo | None:
        """The key's info when ``secret`` is a valid, unrevoked key; None otherwise."""
        if not secret:
            return None
        match = _SECRET.match(secret.strip())
        if not match:
            return None
        record = self._current().get(match.group(1))
        if record is None:
            # Same work as a hit, so timing does not tell known key ids from unknown ones.
            hmac.compare_digest(_digest("00" * 16, secret), "0" * 64)
            return None
        if not hmac.compare_digest(_digest(record["salt"], secret.strip()), record["sha256"]):
            return None
        if record.get("revoked_at"):
            return None
        return KeyInfo(record["key_id"], record["tenant"], record["created_at"], None)

    # -- writing ----------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, Any]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            records = self._read_file()
            yield records
            self._write(records)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _write(self, records: dict[str, dict[str, Any]]) -> None:
        payload = json.dumps({"version": 1, "keys": list(records.values())}, indent=1, sort_keys=True)
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def create(self, tenant: str) -> tuple[str, str]:
        """A new key for ``tenant``: (key_id, secret). The secret is not stored; show it once."""
        if not TENANT_PATTERN.match(tenant or ""):
            raise ValueError(
                f"tenant {tenant!r} must be 1-64 characters of letters, digits, '_', '.' or '-', starting with a letter or digit"
            )
        with self._locked() as records:
            key_id = f"k_{secrets.token_hex(6)}"
            while key_id in records:  # 48 random bits: practically never
                key_id = f"k_{secrets.token_hex(6)}"
            secret = f"st_{key_id}_{secrets.token_urlsafe(32)}"
            salt = secrets.token_hex(16)
            records[key_id] = {
                "key_id": key_id,
                "tenant": tenant,
                "salt": salt,
                "sha256": _digest(salt, secret),
                "created_at": _now(),
                "revoked_at": None,
            }
        return key_id, secret

    def revoke(self, key_id: str) -> KeyInfo:
        """Mark ``key_id`` revoked (kept in the file for the record); KeyError when unknown."""
        with self._locked() as records:
            record = records.get(key_id)
            if record is None:
                raise KeyError(f"unknown key id {key_id!r}")
            if not record.get("revoked_at"):
                record["revoked_at"] = _now()
        return KeyInfo(record["key_id"], record["tenant"], record["created_at"], record["revoked_at"])
