"""The stream and pull rules of a Subscription (PROTOCOL.md §8.5, §8.8, §10.2, §10.4-§10.6), without a network:
frames are put straight into the queue the reader threads fill, Fetch answers come from a stub."""
import queue

import grpc
import pytest

from altocast import Options, Subscription, Trust, crypto
from altocast._pb import pb
from altocast.subscription import _Abandon, _Ended, _Refused, endpoint_target
from test_trust import K1, L1, R1, directory
from test_vectors import KID, NM, NM_SNAP, PUB, T, su

EXPIRED = (0, "frame", pb.SubscribeResponse(update=su(*NM_SNAP)))   # authentic but long expired: ends pending
END = (0, "end", None)


class Status(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code

    def details(self):
        return "from the test"


class Endless:
    """A stream that always has a frame ready (never idle), then ends after `n` frames."""

    def __init__(self, frame, n):
        self.frame, self.n = frame, n

    def get(self, timeout=None):
        self.n -= 1
        return (0, "frame", self.frame) if self.n >= 0 else END


class Stub:
    """Fetch answers (the last one repeats) and one GetDirectory answer (none: UNAVAILABLE)."""

    def __init__(self, *answers, directory=None):
        self.answers, self.directory = list(answers), directory

    def Fetch(self, request, timeout=None):
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def GetDirectory(self, request, timeout=None):
        if self.directory is None:
            raise Status(grpc.StatusCode.UNAVAILABLE)
        return self.directory


def frames(*items):
    q = queue.Queue()
    for item in items:
        q.put(item)
    return q


def subscription(trust=None, **options):
    s = Subscription(["http://127.0.0.1:1"], trust or {KID: PUB}, resources=[NM], options=Options(**options))
    s._plan_streams(None)
    return s


def consume(s, q):
    return list(s._consume("http://127.0.0.1:1", None, q))


def with_expired_directory(**options):
    """A subscription trusting a root whose held directory expired long ago (by the real clock)."""
    s = subscription(Trust(root=crypto.public_bytes(R1)), grace_s=0, **options)
    old = directory(1, L1, [K1], expires=T + 60000)
    s.verifier.accept_directory(old, now=T)
    return s, old


def test_pending_run_limit():
    """§8.5: with a limit of n, n pending results in a row are accepted; the (n+1)th abandons the endpoint."""
    with pytest.raises(_Ended):
        consume(subscription(max_pending_run=3), frames(*[EXPIRED] * 3, END))
    with pytest.raises(_Abandon, match="4 pending"):
        consume(subscription(max_pending_run=3), frames(*[EXPIRED] * 4, END))


def test_deadline_checked_while_frames_keep_arriving():
    """§8.8: the deadline is a clock, not an idle timer; ignored (not newer) directories do not postpone it."""
    s, old = with_expired_directory()
    with pytest.raises(_Abandon, match="directory"):
        consume(s, Endless(pb.SubscribeResponse(directory=old), 1000))


def test_only_a_refused_call_polls():
    """§10.2, §10.6: a Subscribe call refused (no frame yet) falls back to polling; a stream that fails after
    its first frame goes to the next endpoint (not put aside)."""
    with pytest.raises(_Refused):
        consume(subscription(), frames((0, "error", Status(grpc.StatusCode.NOT_FOUND))))
    with pytest.raises(_Abandon) as e:
        consume(subscription(), frames(EXPIRED, (0, "error", Status(grpc.StatusCode.INTERNAL))))
    assert not e.value.aside


def test_pull_answer_ending_pending_is_an_error():
    """§8.5, §10.5: a Fetch answer whose last applied update ends pending is not usable: next endpoint."""
    s = subscription()
    with pytest.raises(_Abandon, match="pending") as e:
        list(s._pull_once("http://127.0.0.1:1", Stub(pb.FetchResponse(updates=[su(*NM_SNAP)]))))
    assert not e.value.aside and NM in s.verifier.pending and NM not in s.verifier.held


def test_pull_fallback_keeps_the_directory_deadline(monkeypatch):
    """§10.6: while polling, the held directory's deadline (§8.8) still applies."""
    s, old = with_expired_directory(poll_interval_s=0, poll_rounds=3)
    stub = Stub(pb.FetchResponse(), directory=old)
    monkeypatch.setattr("altocast.subscription.pb_grpc.DistributionStub", lambda channel: stub)
    with pytest.raises(_Abandon, match="directory"):
        list(s._poll("http://127.0.0.1:1"))


def test_a_resource_is_never_listed_twice():
    """§10.4: a client MUST NOT list a resource twice in a Subscribe request."""
    s = Subscription(["http://127.0.0.1:1"], {KID: PUB}, resources=[NM, "cm", NM])
    s._plan_streams(None)
    assert s._plan == [[NM, "cm"]]


def test_pull_fallback_enforces_only_the_directory_clock(monkeypatch):
    """§8.8 "Pull fallback": the maps clock (and the nothing-held 30 s of push) is not enforced while polling,
    which the polling bound ends instead; the directory clock is, from the second round on, without grace."""
    s = subscription(grace_s=0, first_commit_s=0, poll_interval_s=0, poll_rounds=3)   # nothing held, ever
    stub = Stub(pb.FetchResponse())                                                 # answers that apply nothing
    monkeypatch.setattr("altocast.subscription.pb_grpc.DistributionStub", lambda channel: stub)
    assert list(s._poll("http://127.0.0.1:1")) == [] and not s.verifier.held
    s, old = with_expired_directory(poll_interval_s=0, poll_rounds=2)
    s.options.grace_s = 3600                                                        # no grace while polling
    stub.directory = old
    with pytest.raises(_Abandon, match="directory") as e:
        list(s._poll("http://127.0.0.1:1"))
    assert e.value.aside


def test_pull_skipped_update_is_not_given_its_chunks():
    """§10.5: a skipped update (not above the held seq) is checked by OPEN and the resource check only, so
    chunks that do not match it do not fail the answer; it applies nothing and is not an error."""
    import docvectors
    from test_vectors import A
    s = subscription()
    assert s.verifier.process(su(*NM_SNAP), now=T).committed
    (body, sig), = docvectors.signed(A["A.6"])                                      # seq 1, chunked
    junk = pb.FetchResponse(updates=[su(body, sig)], chunks=[pb.SnapshotChunk(index=0, data=b"junk")])
    assert list(s._pull_once("http://127.0.0.1:1", Stub(junk))) == []
    assert s.verifier.held[NM].seq == 1 and NM not in s.verifier.pending


@pytest.mark.parametrize("url,want", [
    ("http://127.0.0.1:7100", (False, "127.0.0.1:7100")), ("http://example.net", (False, "example.net:80")),
    ("https://example.net", (True, "example.net:443")), ("http://[::1]:7100/", (False, "[::1]:7100")),
    ("https://a.example:8443/ignored/path", (True, "a.example:8443")), ("127.0.0.1:7100", None),
    ("HTTP://h:1", None), ("grpc://h:1", None), ("http://user@h:1", None), ("http://h:0", None),
    ("http://h:65536", None), ("http://::1:7100", None), ("http://h:1?x", None), ("http://", None)])
def test_endpoint_urls(url, want):
    """§10.1: the endpoint URL syntax, default ports, and a path that is not used."""
    if want is None:
        with pytest.raises(ValueError):
            endpoint_target(url)
    else:
        assert endpoint_target(url) == want


def test_https_needs_a_ca():
    """§10.1: the server certificate MUST chain to a CA the client was given (no built-in roots)."""
    with pytest.raises(ValueError, match="needs a CA"):
        Subscription(["http://127.0.0.1:1", "https://127.0.0.1:2"], {KID: PUB}, resources=[NM])
    Subscription(["https://127.0.0.1:2"], {KID: PUB}, resources=[NM], ca=b"-----BEGIN CERTIFICATE-----")
