"""Command line: `python -m altocast watch|rank --endpoint URL... (--trust-key F | --trust-on-first-use)`."""
import argparse
import logging
import sys
import time
from pathlib import Path

import grpc

from . import Subscription, crypto
from ._pb import pb, pb_grpc


def trust_on_first_use(endpoint: str, pin: Path) -> dict[str, bytes]:
    """§9.5 with a fixed update key: the pin file if it exists; else the key that signed the
    endpoint's directory among those it lists, written to the pin file. Insecure on first use."""
    if pin.exists():
        return crypto.load_trusted(pin)
    with grpc.insecure_channel(endpoint.removeprefix("http://")) as ch:
        signed = pb_grpc.DistributionStub(ch).GetDirectory(pb.GetDirectoryRequest(), timeout=10)
    d = pb.Directory.FromString(signed.body)
    if d.HasField("key_chain"):
        sys.exit("this directory has a key chain: pin its root (root trust is not implemented here)")
    keys = {k.key_id: k.ed25519 for k in d.keys if crypto.key_id(k.ed25519) == k.key_id}
    kid = crypto.verify_signatures(crypto.DIRECTORY_CONTEXT, signed.body, list(signed.signatures), keys)
    pin.write_bytes(crypto.public_key_pem(keys[kid]))
    print(f"warning: trusting on first use key {kid} of {endpoint}, pinned in {pin}", file=sys.stderr)
    return {kid: keys[kid]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m altocast")
    p.add_argument("command", choices=["watch", "rank"])
    p.add_argument("--endpoint", action="append", required=True, help="gRPC URL; repeat for fallbacks")
    p.add_argument("--trust-key", help="the origin's public key (SPKI PEM, `altocast-server pubkey`)")
    p.add_argument("--trust-on-first-use", metavar="PIN_FILE", type=Path,
                   help="pin the key that signs the directory on first use (insecure then)")
    p.add_argument("--resource", action="append", help="resource to follow (default: the whole directory)")
    p.add_argument("--count", type=int, help="watch: exit after this many updates")
    p.add_argument("--timeout", type=float, default=30.0, help="give up after this many seconds")
    p.add_argument("--cost-map", help="rank: the cost map (needed when the view has several)")
    p.add_argument("--src", help="rank: the source address")
    p.add_argument("peers", nargs="*", help="rank: peer addresses")
    a = p.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if a.trust_key:
        trusted = crypto.load_trusted(a.trust_key)
    elif a.trust_on_first_use:
        trusted = trust_on_first_use(a.endpoint[0], a.trust_on_first_use)
    else:
        p.error("give --trust-key or --trust-on-first-use PIN_FILE")
    deadline, n = time.monotonic() + a.timeout, 0
    sub = Subscription(a.endpoint, trusted, resources=a.resource).start()
    try:
        while time.monotonic() < deadline:
            for e in sub.events[n:]:
                n += 1
                if a.command == "watch":
                    tag = sub.verifier.held[e.resource].tag.hex()[:16] if e.resource in sub.verifier.held else "?"
                    print(f"{e.resource} seq {e.seq} {e.payload} via {e.endpoint} ({e.mode}) tag {tag}", flush=True)
                    if a.count and n >= a.count:
                        return 0
            if a.command == "rank" and sub.view.cost_maps:
                for peer, cost in sub.view.rank(a.src, a.peers, a.cost_map):
                    print(peer, "-" if cost is None else cost)
                return 0
            time.sleep(0.05)
        print("timed out", file=sys.stderr)
        return 1
    finally:
        sub.close()


if __name__ == "__main__":
    sys.exit(main())
