"""Command line: `python -m altocast watch|rank --endpoint URL... (--trust-root F | --trust-key F | --trust-on-first-use PIN)`."""
import argparse
import logging
import sys
import time

from . import Subscription, Trust, crypto


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m altocast")
    p.add_argument("command", choices=["watch", "rank"])
    p.add_argument("--endpoint", action="append", required=True, help="gRPC URL; repeat for fallbacks")
    p.add_argument("--trust-root", help="the origin's root key (SPKI PEM, `altocast-server pubkey --root`)")
    p.add_argument("--trust-key", action="append", help="a fixed update key (SPKI PEM) instead of the root")
    p.add_argument("--trust-on-first-use", metavar="PIN_FILE",
                   help="pin the root the first directory presents, then trust only it (insecure on first use)")
    p.add_argument("--ca", help="PEM CA certificate(s) that https:// endpoints must chain to (required for https)")
    p.add_argument("--state-dir", help="keep the last accepted directory here, so no older one is accepted later")
    p.add_argument("--resource", action="append", help="resource to follow (default: the whole directory)")
    p.add_argument("--count", type=int, help="watch: exit after this many updates")
    p.add_argument("--timeout", type=float, default=30.0, help="give up after this many seconds")
    p.add_argument("--cost-map", help="rank: the cost map (needed when the view has several)")
    p.add_argument("--src", help="rank: the source address")
    p.add_argument("peers", nargs="*", help="rank: peer addresses")
    a = p.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    given = [x for x in (a.trust_root, a.trust_key, a.trust_on_first_use) if x]
    if len(given) != 1:
        p.error("give exactly one of --trust-root, --trust-key, --trust-on-first-use PIN_FILE")
    trust = Trust(root=a.trust_root, keys=a.trust_key and crypto.load_trusted(*a.trust_key),
                  first_use=a.trust_on_first_use, state_dir=a.state_dir)
    deadline, n = time.monotonic() + a.timeout, 0
    ca = open(a.ca, "rb").read() if a.ca else None
    try:
        sub = Subscription(a.endpoint, trust, resources=a.resource, ca=ca).start()
    except ValueError as e:
        p.error(str(e))
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
