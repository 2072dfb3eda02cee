"""Whom to trust: the directory and the key chain (PROTOCOL.md §9.3-§9.5).

    Trust(root="root-pub.pem")           # recommended: key lists signed by the root name the update keys
    Trust(keys=load_trusted("k.pem"))    # fixed update keys (stops working when the key is retired)
    Trust(first_use="pin.pem")           # §9.5: pin the root the first directory presents
    ... , state_dir="state"              # keep the last accepted directory (directory.pb) across restarts

`accept_directory` runs §9.3 and, only when every check passed, installs the new state: the
root reached, the key-list version, the update keys with their windows, the origin id and the
directory position. A directory not newer than the held one is ignored (the held one returned).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from ._pb import pb
from .crypto import (DIRECTORY_CONTEXT, KEYLIST_CONTEXT, SignatureError, _decode_point, check_point, key_id,
                     load_public_key, public_key_pem, verify_signers)

log = logging.getLogger("altocast")
MAX_SKEW_MS = 5000
MAX_DIRECTORY = 1024 * 1024
MAX_KEY_LIST = 65536
MAX_KEYS = 64
MAX_ROOT_HISTORY = 64
STATE_FILE = "directory.pb"


class VerifyError(Exception):
    """A rejected update or directory. `check` is the §8.4 class (malformed is reported as apply);
    `reread`: signed only by unknown keys or outside their windows, which a newer key list may explain (§9.4)."""

    def __init__(self, check: str, reason: str, resource: str | None = None, step: str = "", reread=False):
        super().__init__(f"{check}: {reason}" + (f" ({resource})" if resource else ""))
        self.check, self.reason, self.resource, self.step, self.reread = check, reason, resource, step, reread


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class UpdateKey:
    raw: bytes
    not_before_ms: int = 0     # 0 = unbounded
    not_after_ms: int = 0

    def valid_at(self, t: int) -> bool:
        return (not self.not_before_ms or t >= self.not_before_ms) and (not self.not_after_ms or t <= self.not_after_ms)


def _trust_error(reason):
    return VerifyError("trust", reason, step="§9.3")


def decode_key_list(s) -> "pb.KeyList":
    """§9.3 decode_key_list: size, decoding, version, origin id, counts, the root and every key present,
    each 32 bytes that decode as an Ed25519 point, with the key id of those bytes."""
    if len(s.body) > MAX_KEY_LIST:
        raise _trust_error(f"key list of {len(s.body)} bytes")
    try:
        kl = pb.KeyList.FromString(s.body)
    except DecodeError as e:
        raise _trust_error(f"malformed key list: {e}") from None
    if kl.version < 1 or not kl.origin_id:
        raise _trust_error("key list without version or origin id")
    if len(kl.keys) > MAX_KEYS or len(kl.revoked) > MAX_KEYS:
        raise _trust_error("key list with too many keys or revoked ids")
    if not kl.HasField("root") or not all(u.HasField("key") for u in kl.keys):
        raise _trust_error("key list without its root or a key")
    for k in [kl.root] + [u.key for u in kl.keys]:
        if len(k.ed25519) != 32 or _decode_point(k.ed25519) is None or key_id(k.ed25519) != k.key_id:
            raise _trust_error(f"key list entry {k.key_id[:20]!r} does not match its key")
    return kl


def signed_by(s, raw: bytes) -> bool:
    """§9.3 "signed by K": §5.3 with K the only trusted key, key-list context."""
    try:
        verify_signers(KEYLIST_CONTEXT, s.body, list(s.signatures), {key_id(raw): raw})
        return True
    except SignatureError:
        return False


class Trust:
    def __init__(self, *, root=None, keys=None, first_use=None, state_dir=None, max_skew_ms: int = MAX_SKEW_MS):
        """root: SPKI PEM file or bytes, or the 32 raw bytes. keys: {key id: raw key} (fixed update keys).
        first_use: pin file (§9.5). Exactly one of the three is required (§9: else refuse to run).
        state_dir: its directory.pb is restored here; one that fails §9.3 raises VerifyError (refuse to start)."""
        if sum(x is not None for x in (root, keys, first_use)) != 1:
            raise ValueError("trust exactly one of: a root key, fixed update keys, a first-use pin file")
        self.max_skew_ms = max_skew_ms
        self.pin = Path(first_use) if first_use is not None else None
        if self.pin is not None and self.pin.exists():
            root = self.pin.read_bytes()
        self.fixed = keys is not None
        self.root: bytes | None = None if root is None else (
            check_point(root) if isinstance(root, (bytes, bytearray)) and len(root) == 32 else load_public_key(root))
        self.keys: dict[str, UpdateKey] = {k: UpdateKey(check_point(v)) for k, v in (keys or {}).items()}
        self.raw = {k: u.raw for k, u in self.keys.items()}
        self.key_list_version = 0
        self.origin_id: str | None = None
        self.position: tuple[int, int] | None = None        # (seq, issued_at_ms) of the held directory
        self.directory = None                                # the held Directory, decoded
        self.state_dir = Path(state_dir) if state_dir is not None else None
        saved = self._saved()
        if saved is not None:                               # every check but the two expiry checks
            try:
                self.accept_directory(saved, restoring=True)
            except VerifyError as e:                        # refuse to start, saying why (§9.6)
                raise VerifyError(e.check, f"the saved directory {self.state_dir / STATE_FILE} does not restore: "
                                  f"{e.reason}; if the trust anchor was changed on purpose, remove the file",
                                  step=e.step) from None

    def _saved(self):
        """§9.6: the saved SignedDirectory, or None when the file is absent, unreadable or does not decode."""
        if self.state_dir is None:
            return None
        try:
            return pb.SignedDirectory.FromString((self.state_dir / STATE_FILE).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, DecodeError) as e:
            log.warning("ignoring the saved directory %s: %s", self.state_dir / STATE_FILE, e)
            return None

    def deadline_ms(self) -> int | None:
        """The held directory's expiry + skew: a staleness deadline like a map's (§9.3), or None."""
        d = self.directory
        return d.expires_at_ms + self.max_skew_ms if d is not None and d.expires_at_ms else None

    def accept_directory(self, signed, now: int | None = None, *, restoring: bool = False):
        """§9.3. Returns the held directory (the new one, or the old one if this one is not newer)."""
        now = now_ms() if now is None else now
        skew = self.max_skew_ms
        if len(signed.body) > MAX_DIRECTORY:
            raise VerifyError("size", f"directory of {len(signed.body)} bytes", step="§9.3")
        try:
            d = pb.Directory.FromString(signed.body)
        except DecodeError as e:
            raise VerifyError("apply", f"malformed directory: {e}", step="§9.3") from None
        if self.position is not None and (d.seq, d.issued_at_ms) <= self.position:
            return self.directory                             # not newer: ignored
        root, kl, keys = self.root, None, self.keys
        if not self.fixed:
            if not d.HasField("key_chain"):
                raise _trust_error("directory without a key chain")
            chain = d.key_chain
            if len(chain.root_history) > MAX_ROOT_HISTORY:
                raise _trust_error(f"{len(chain.root_history)} root changes")
            if root is None:                                  # first use (§9.5): the presented root
                root = decode_key_list(chain.current).root.ed25519
            v = 0
            for s in chain.root_history:
                l = decode_key_list(s)
                if l.root.ed25519 == root or l.version <= v or not signed_by(s, root):
                    continue                                  # not a step from the root reached
                if not signed_by(s, l.root.ed25519):
                    raise _trust_error(f"root change to {l.root.key_id} not signed by the new root")
                root, v = l.root.ed25519, l.version
            kl = decode_key_list(chain.current)
            if kl.root.ed25519 != root:
                start = key_id(self.root) if self.root else key_id(root)
                raise _trust_error(f"the chain does not lead from {start} to {kl.root.key_id}")
            if not signed_by(chain.current, root):
                raise _trust_error(f"key list not signed by the root {key_id(root)}")
            if kl.version < self.key_list_version:
                raise _trust_error(f"key list rollback: version {kl.version} < {self.key_list_version}")
            if not restoring and kl.expires_at_ms and kl.expires_at_ms + skew < now:
                raise _trust_error(f"key list expired at {kl.expires_at_ms}")
            revoked = set(kl.revoked)
            keys = {u.key.key_id: UpdateKey(u.key.ed25519, u.not_before_ms, u.not_after_ms)
                    for u in kl.keys if u.key.key_id not in revoked}
        try:
            signers = verify_signers(DIRECTORY_CONTEXT, signed.body, list(signed.signatures),
                                     {k: u.raw for k, u in keys.items()})
        except SignatureError as e:
            raise VerifyError("signature", f"directory: {e}", step="§9.3") from None
        if not any(keys[k].valid_at(d.issued_at_ms) for k in signers):
            raise VerifyError("signature", "directory: signed outside the keys' windows", step="§9.3")
        if kl is not None and d.origin_id != kl.origin_id:
            raise _trust_error(f"directory of origin {d.origin_id[:80]!r}, key list of {kl.origin_id[:80]!r}")
        if self.origin_id is not None and d.origin_id != self.origin_id:
            raise _trust_error(f"directory of origin {d.origin_id[:80]!r}, not {self.origin_id}")
        if not restoring and d.expires_at_ms and d.expires_at_ms + skew < now:
            raise VerifyError("expiry", f"directory expired at {d.expires_at_ms}", step="§9.3")
        # commit
        old_root = self.root
        self.root, self.keys, self.raw = root, keys, {k: u.raw for k, u in keys.items()}
        if kl is not None:
            self.key_list_version = kl.version
        self.origin_id, self.position, self.directory = d.origin_id, (d.seq, d.issued_at_ms), d
        if self.pin is not None and root != old_root:       # first use, or the chain rotated the root
            _write(self.pin, public_key_pem(root))
            log.warning("%s root %s, pinned in %s", "trusting on first use" if old_root is None else "the chain rotated to",
                        key_id(root), self.pin)
        if self.state_dir is not None and not restoring:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            _write(self.state_dir / STATE_FILE, signed.SerializeToString())
        return d

    def check_update(self, u, signers) -> None:
        """§9.3 for an update past §5.3: a signer's window holds issued_at_ms; the origin id."""
        if not any(self.keys[k].valid_at(u.issued_at_ms) for k in signers):
            raise VerifyError("signature", "signed outside the keys' windows", u.resource_id[:80], "O3", reread=True)
        if self.origin_id is not None and u.origin_id != self.origin_id:
            raise VerifyError("trust", f"origin {u.origin_id[:80]!r}, not {self.origin_id}", u.resource_id[:80], "O3")


def _write(path: Path, data: bytes) -> None:
    """Atomically: a temporary file, fsync, rename (§9.5, §9.6)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def open_directory(signed, keys: dict | None = None, *, root=None, now: int | None = None):
    """§9.3 on a fresh state, trusting fixed update keys {key id: raw key} or a root."""
    return (Trust(keys=keys) if root is None else Trust(root=root)).accept_directory(signed, now)
