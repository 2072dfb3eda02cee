"""The origin's key files load with `cryptography`; the key id computed here is the directory's."""
import base64
import os
import stat
import subprocess

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from altocast import crypto, open_directory
from altocast._pb import pb, pb_grpc
from conftest import BIN, CM0, NM0, Origin, maps


def test_origin_key_files(procs, tmp_path):
    origin = Origin(procs, tmp_path, maps(NM0, CM0))
    pub_file, key_file = origin.data / "origin-pub.pem", origin.data / "origin-key.pem"
    raw = crypto.load_public_key(pub_file)
    key = crypto.load_private_key(key_file)
    assert crypto.public_bytes(key) == raw
    # plain `cryptography` reads both files too, and they have the exact §4.3 shapes
    assert serialization.load_pem_public_key(pub_file.read_bytes()).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw
    serialization.load_pem_private_key(key_file.read_bytes(), None)
    assert len(crypto._pem_der(key_file.read_bytes(), "PRIVATE KEY")) == 48
    assert crypto._pem_der(pub_file.read_bytes(), "PUBLIC KEY") == bytes.fromhex("302a300506032b6570032100") + raw
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    # `altocast-server pubkey` prints the same key
    out = subprocess.run([str(BIN / "altocast-server"), "pubkey", "--data-dir", str(origin.data)],
                         capture_output=True, timeout=30, check=True).stdout
    assert crypto.load_public_key(out) == raw
    # the key id computed here is the directory's origin id and key id
    kid = crypto.key_id(raw)
    with grpc.insecure_channel(f"127.0.0.1:{origin.port}") as ch:
        signed = pb_grpc.DistributionStub(ch).GetDirectory(pb.GetDirectoryRequest(), timeout=10)
    d = open_directory(signed, {kid: raw})
    assert (kid, raw) in [(k.key_id, k.ed25519) for k in d.keys] and signed.signatures[0].key_id == kid
    root_file = origin.data / "root-pub.pem"   # origins with a key chain (§9): the origin id is the root's
    assert d.origin_id == (crypto.key_id(crypto.load_public_key(root_file)) if root_file.exists() else kid)
    # and what the private key signs verifies strictly under the public key
    m = crypto.signed_message(crypto.UPDATE_CONTEXT, b"x")
    assert crypto.strict_verify(raw, m, key.sign(m))


def _pem(label, der):
    b = base64.b64encode(der).decode()
    return ("-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, "\n".join(b[i:i + 64] for i in range(0, len(b), 64)), label)).encode()


SEED = bytes(range(32))
PUB = crypto.public_bytes(Ed25519PrivateKey.from_private_bytes(SEED))
V1 = bytes.fromhex("302e020100300506032b657004220420") + SEED


@pytest.mark.parametrize("der,ok", [
    pytest.param(V1, True, id="v1"),
    pytest.param(bytes.fromhex("3051020101300506032b657004220420") + SEED + bytes.fromhex("812100") + PUB, True, id="v2"),
    pytest.param(bytes.fromhex("3032020100300506032b657004220420") + SEED + bytes.fromhex("a000"), False, id="bad length"),
    pytest.param(bytes.fromhex("3030020100300506032b657004220420") + SEED + bytes.fromhex("a000"), True, id="[0] skipped"),
    pytest.param(bytes.fromhex("3053020101300506032b657004220420") + SEED + bytes.fromhex("a000812100") + PUB, True, id="v2 with [0]"),
    pytest.param(bytes.fromhex("3053020101300506032b657004220420") + SEED + bytes.fromhex("a123032100") + PUB, True, id="ring: MAY"),
    pytest.param(bytes.fromhex("3051020100300506032b657004220420") + SEED + bytes.fromhex("812100") + PUB, False, id="v0 + key"),
    pytest.param(bytes.fromhex("302e020101300506032b657004220420") + SEED, False, id="version 1 without a key"),
    pytest.param(bytes.fromhex("302e020102300506032b657004220420") + SEED, False, id="other version"),
    pytest.param(bytes.fromhex("3030020100300706032b6570050004220420") + SEED, False, id="NULL parameters"),
    pytest.param(bytes.fromhex("302f020100300506032b657004230421") + SEED + b"\0", False, id="33-byte seed"),
    pytest.param(bytes.fromhex("3051020101300506032b657004220420") + SEED + bytes.fromhex("812101") + PUB, False, id="unused bits"),
    pytest.param(bytes.fromhex("3051020101300506032b657004220420") + SEED + bytes.fromhex("812100") + bytes(32), False, id="not its seed's"),
    pytest.param(bytes.fromhex("3053020101300506032b657004220420") + SEED + bytes.fromhex("812100") + PUB + b"\x05\x00", False, id="field after the key"),
    pytest.param(V1 + b"\0", False, id="trailing byte"),
    pytest.param(bytes.fromhex("30812e020100300506032b657004220420") + SEED, False, id="length not minimal")])
def test_private_key_der_as_section_4_3_reads_it(der, ok):
    if ok:
        assert crypto.public_bytes(crypto.load_private_key(_pem("PRIVATE KEY", der))) == PUB
    else:
        with pytest.raises(ValueError):
            crypto.load_private_key(_pem("PRIVATE KEY", der))


def test_public_key_der_exactly_spki():
    good = bytes.fromhex("302a300506032b6570032100") + PUB
    assert crypto.load_public_key(_pem("PUBLIC KEY", good)) == PUB
    null = bytes.fromhex("302c300706032b65700500032100") + PUB       # algorithm parameters NULL: refused
    for bad in (null, good + b"\0", bytes.fromhex("302a300506032b6570032100") + bytes([2]) + bytes(31)):
        with pytest.raises(ValueError):
            crypto.load_public_key(_pem("PUBLIC KEY", bad))
