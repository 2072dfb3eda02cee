"""The origin's key files load with `cryptography`; the key id computed here is the directory's."""
import os
import stat
import subprocess

import grpc
from cryptography.hazmat.primitives import serialization

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
