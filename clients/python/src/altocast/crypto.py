"""Keys, key ids and strict Ed25519 signatures (PROTOCOL.md §4, §5).

`cryptography` (OpenSSL) does the Ed25519 equation. It already rejects S >= L but accepts
small-order points, so the checks of §5.2 that it may skip are done here first, in pure Python:
S < L, R decodes to a point, neither R nor A is of small order.
"""
from __future__ import annotations

import base64

import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

UPDATE_CONTEXT = b"altocast/v1/update\0"
DIRECTORY_CONTEXT = b"altocast/v1/directory\0"
KEYLIST_CONTEXT = b"altocast/v1/keylist\0"
MAX_SIGNATURES = 4

# ---- §4 keys -----------------------------------------------------------------------------


def key_id(raw_public_key: bytes) -> str:
    """§4.2: hex of the first 8 bytes of BLAKE3(raw public key)."""
    return blake3.blake3(raw_public_key).digest()[:8].hex()


def _pem_der(pem: bytes, label: str) -> bytes:
    text = pem.decode("ascii").strip()
    head, tail = f"-----BEGIN {label}-----", f"-----END {label}-----"
    if not (text.startswith(head) and text.endswith(tail)):
        raise ValueError(f"not a PEM {label}")
    return base64.b64decode("".join(text[len(head):-len(tail)].split()), validate=True)


def _read(src) -> bytes:
    if isinstance(src, (bytes, bytearray)):
        return bytes(src)
    with open(src, "rb") as f:
        return f.read()


_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def load_public_key(src) -> bytes:
    """§4.3: an SPKI PEM (RFC 8410, as `altocast-server pubkey` prints) whose DER is exactly
    `302a300506032b6570032100 ‖ raw key` (algorithm parameters, also NULL, are refused) and whose
    raw key is a curve point -> the 32 raw key bytes."""
    der = _pem_der(_read(src), "PUBLIC KEY")
    if len(der) != 44 or not der.startswith(_SPKI_PREFIX):
        raise ValueError("not an RFC 8410 Ed25519 public key (SPKI DER must be 302a300506032b6570032100 ‖ 32 bytes)")
    return check_point(der[12:])


def check_point(raw: bytes) -> bytes:
    """§5.2: a key is decoded when it is loaded; 32 bytes that are no curve point are an error there
    (`cryptography` does not check this)."""
    if len(raw) != 32 or _decode_point(raw) is None:
        raise ValueError(f"{bytes(raw).hex()[:64]} is not an Ed25519 public key (not a curve point)")
    return bytes(raw)


def _der_items(buf: bytes) -> list[tuple[int, bytes]]:
    """Strict DER: the (tag, content) items that exactly fill `buf` (minimal definite lengths)."""
    items, i = [], 0
    while i < len(buf):
        if i + 2 > len(buf):
            raise ValueError("PKCS#8: truncated DER")
        tag, n, i = buf[i], buf[i + 1], i + 2
        if n & 0x80:
            k = n & 0x7F
            if not 1 <= k <= 4 or i + k > len(buf) or buf[i] == 0:
                raise ValueError("PKCS#8: not DER (length)")
            n, i = int.from_bytes(buf[i:i + k], "big"), i + k
            if n < 0x80:
                raise ValueError("PKCS#8: not DER (length not minimal)")
        if i + n > len(buf):
            raise ValueError("PKCS#8: truncated DER")
        items.append((tag, buf[i:i + n]))
        i += n
    return items


def load_private_key(src) -> Ed25519PrivateKey:
    """§4.3, read as the reference reads it: strict DER of PKCS#8 v1 (RFC 8410; version 0, no public
    key) or v2 (RFC 5958; version 1 and the public key as [1] IMPLICIT BIT STRING `81 21 00 ‖ key`,
    which must be the seed's), an optional [0] attributes field skipped, nothing else and nothing
    after. One liberty §4.3 allows ("a reader MAY accept it"): ring's constructed [1] form
    `a1 23 03 21 00 ‖ key`."""
    der = _pem_der(_read(src), "PRIVATE KEY")
    top = _der_items(der)
    if len(top) != 1 or top[0][0] != 0x30:
        raise ValueError("PKCS#8: not one DER SEQUENCE")
    fields = _der_items(top[0][1])
    if len(fields) < 3 or fields[0] not in ((0x02, b"\x00"), (0x02, b"\x01")):
        raise ValueError("PKCS#8: version must be 0 (v1) or 1 (v2)")
    if fields[1] != (0x30, bytes.fromhex("06032b6570")):
        raise ValueError("PKCS#8: algorithm must be id-Ed25519 (1.3.101.112) without parameters")
    if fields[2][0] != 0x04 or len(fields[2][1]) != 34 or not fields[2][1].startswith(b"\x04\x20"):
        raise ValueError("PKCS#8: private key must be OCTET STRING { 04 20 ‖ 32-byte seed }")
    key = Ed25519PrivateKey.from_private_bytes(fields[2][1][2:])
    rest = fields[3:]
    if rest and rest[0][0] == 0xA0:
        rest = rest[1:]
    public = None
    if rest and rest[0][0] == 0x81 and len(rest[0][1]) == 33 and rest[0][1][0] == 0:
        public = rest[0][1][1:]
    elif rest and rest[0][0] == 0xA1 and rest[0][1][:3] == bytes.fromhex("032100") and len(rest[0][1]) == 35:
        public = rest[0][1][3:]
    elif rest:
        raise ValueError("PKCS#8: unexpected field after the private key (or a malformed public key)")
    if len(rest) > 1:
        raise ValueError("PKCS#8: field after the public key")
    if (public is not None) != (fields[0][1] == b"\x01"):
        raise ValueError("PKCS#8: version 1 needs the public key and version 0 must not have one")
    if public is not None and public != public_bytes(key):
        raise ValueError("PKCS#8 v2: key data malformed (public key is not the seed's)")
    return key


def public_key_pem(raw: bytes) -> bytes:
    """The SPKI PEM (RFC 8410) of a raw public key."""
    return Ed25519PublicKey.from_public_bytes(raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_trusted(*sources) -> dict[str, bytes]:
    """Public key files -> {key id: raw key}, the verifier's trusted set."""
    keys = [load_public_key(s) for s in sources]
    return {key_id(k): k for k in keys}


# ---- §5.2 strict verification --------------------------------------------------------------

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, -1, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _decode_point(b: bytes):
    """Edwards point decompression as curve25519-dalek does it (y taken mod p), or None."""
    y = (int.from_bytes(b, "little") & ((1 << 255) - 1)) % _P
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x2 = u * pow(v, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return None
    if (x & 1) != (b[31] >> 7):
        x = -x % _P
    return (x, y)


def _double(p):
    x, y = p
    t = _D * x * x * y * y % _P
    return ((2 * x * y) * pow(1 + t, _P - 2, _P) % _P, (y * y + x * x) * pow(1 - t, _P - 2, _P) % _P)


def _small_order(p) -> bool:
    for _ in range(3):
        p = _double(p)
    return p == (0, 1)


def strict_verify(public_key: bytes, message: bytes, sig: bytes) -> bool:
    """§5.2 (ed25519-dalek verify_strict): 64 bytes, S < L, R a point, R and A not small order,
    cofactorless equation compared on bytes (what OpenSSL does)."""
    if len(sig) != 64 or len(public_key) != 32:
        return False
    if int.from_bytes(sig[32:], "little") >= _L:
        return False
    for enc in (sig[:32], public_key):
        point = _decode_point(enc)
        if point is None or _small_order(point):
            return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def signed_message(context: bytes, body: bytes) -> bytes:
    """§5.1: M = H(C) ‖ H(B)."""
    return blake3.blake3(context).digest() + blake3.blake3(body).digest()


def sign(key: Ed25519PrivateKey, context: bytes, body: bytes) -> tuple[str, bytes]:
    return key_id(public_bytes(key)), key.sign(signed_message(context, body))


class SignatureError(Exception):
    """`untrusted_only`: no signature was by a trusted key id (what §9.4's re-read may explain)."""

    def __init__(self, reason: str, untrusted_only: bool = False):
        super().__init__(reason)
        self.untrusted_only = untrusted_only


def verify_signers(context: bytes, body: bytes, sigs, trusted: dict[str, bytes]) -> list[str]:
    """§5.3. `sigs`: objects with key_id and sig. Returns every trusted key id that signed, else raises."""
    if not sigs:
        raise SignatureError("no signature")
    if len(sigs) > MAX_SIGNATURES:
        raise SignatureError(f"too many signatures ({len(sigs)} > {MAX_SIGNATURES})")
    m = signed_message(context, body)
    good = []
    for s in sigs:
        k = trusted.get(s.key_id)
        if k is None:
            continue
        if not strict_verify(k, m, s.sig):
            raise SignatureError(f"bad signature by key {s.key_id}")
        good.append(s.key_id)
    if not good:
        raise SignatureError("signed only by untrusted keys", untrusted_only=True)
    return good


def verify_signatures(context: bytes, body: bytes, sigs, trusted: dict[str, bytes]) -> str:
    """§5.3: the (last) trusted key id that signed, else raises SignatureError."""
    return verify_signers(context, body, sigs, trusted)[-1]
