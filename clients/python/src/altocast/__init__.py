"""altocast: verifying Python client of the altocast protocol (docs/PROTOCOL.md)."""
from .crypto import key_id, load_private_key, load_public_key, load_trusted, strict_verify, verify_signatures
from .model import CostMap, NetworkMap, PayloadError
from .subscription import Event, Options, Subscription
from .trust import Trust, VerifyError, open_directory
from .verifier import Outcome, Verifier, Version
from .view import CostPair, StaleError, View

__all__ = ["key_id", "load_private_key", "load_public_key", "load_trusted", "strict_verify",
           "verify_signatures", "CostMap", "NetworkMap", "PayloadError", "Event", "Options",
           "Subscription", "Trust", "Outcome", "Verifier", "VerifyError", "Version", "open_directory",
           "CostPair", "StaleError", "View"]
