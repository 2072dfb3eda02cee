"""The signed bytes of PROTOCOL.md Appendix A, read from the document itself."""
import os
import re

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docs", "PROTOCOL.md")


def sections() -> dict[str, str]:
    text = open(DOC, encoding="utf-8").read()
    appendix = text[text.index("## Appendix A"):text.index("## Appendix B")]
    parts = re.split(r"^### (A\.\d+) .*$", appendix, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def signed(section: str) -> list[tuple[bytes, bytes]]:
    """(body, sig) pairs of a section, in document order."""
    bodies = re.findall(r"^body:\s+([0-9a-f]+)$", section, flags=re.M)
    sigs = re.findall(r"^sig(?: \(key_id [0-9a-f]+\))?:\s+([0-9a-f]+)$", section, flags=re.M)
    assert len(bodies) == len(sigs) and bodies
    return [(bytes.fromhex(b), bytes.fromhex(s)) for b, s in zip(bodies, sigs)]


def chunks(section: str) -> list[tuple[bytes, bytes]]:
    """(data, hash) of the chunks of A.6."""
    found = re.findall(r"^chunk \d+: ([0-9a-f]+)\s+H = ([0-9a-f]+)$", section, flags=re.M)
    return [(bytes.fromhex(d), bytes.fromhex(h)) for d, h in found]


def pems(section: str) -> list[bytes]:
    return [m.encode() + b"\n" for m in re.findall(r"-----BEGIN [A-Z ]+-----\n.*?\n-----END [A-Z ]+-----", section, re.S)]
