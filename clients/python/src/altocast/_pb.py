"""The generated protobuf and gRPC stubs of proto/altocast/v1/altocast.proto.

They are generated at install/test time (see README.md) into build/gen, or into the
directory named by ALTOCAST_STUBS_DIR, and are not committed.
"""
import os
import sys

_DIR = os.environ.get("ALTOCAST_STUBS_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "gen")
if os.path.isdir(_DIR) and os.path.abspath(_DIR) not in sys.path:
    sys.path.insert(0, os.path.abspath(_DIR))

import altocast_pb2 as pb  # noqa: E402
import altocast_pb2_grpc as pb_grpc  # noqa: E402

__all__ = ["pb", "pb_grpc"]
