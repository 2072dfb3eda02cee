//! Turning a `Subscribe` stream's frames into whole updates, without I/O.
//!
//! A stream is a sequence of `SignedUpdate` frames, each followed by exactly
//! as many `SnapshotChunk` frames as its signed `ChunkedSnapshot` lists. The
//! [`Assembler`] opens each update (size, signature, resource: checks 1–3),
//! checks every chunk against its signed hash and the signed length the
//! moment it arrives, and hands out the update with its chunks once the last
//! one is in. The same code serves the client's subscription loop, RProxies
//! (through it) and the tests that replay a hub's frames.

use altocast_proto::{Verifier, VerifyError, pb, verify::Opened};

/// A whole update: opened, with its chunks checked one by one.
#[derive(Debug)]
pub struct Assembled {
    /// The opened update.
    pub opened: Opened,
    /// The signed envelope, as received (for relaying).
    pub signed: pb::SignedUpdate,
    /// Its snapshot chunks, in order (empty unless chunked).
    pub chunks: Vec<pb::SnapshotChunk>,
}

/// Why a frame was refused. The stream is not to be read further.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A frame without content.
    #[error("a frame without an update or a chunk")]
    Empty,
    /// A chunk where an update was due.
    #[error("a snapshot chunk without its update")]
    StrayChunk,
    /// An update where a chunk of the previous one was due.
    #[error("an update while {missing} chunks of the previous snapshot are still due")]
    ChunksCut {
        /// Chunks still due.
        missing: usize,
    },
    /// The update or a chunk failed verification.
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

struct Partial {
    opened: Opened,
    signed: pb::SignedUpdate,
    count: usize,
    bytes: usize,
    chunks: Vec<pb::SnapshotChunk>,
}

/// Assembles the frames of one stream. A new stream needs a new assembler.
#[derive(Default)]
pub struct Assembler {
    partial: Option<Partial>,
    /// The last directory frame, until taken.
    directory: Option<pb::SignedDirectory>,
}

impl std::fmt::Debug for Assembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assembler").field("chunks_due", &self.chunks_due()).finish()
    }
}

impl Assembler {
    /// A new assembler, between updates.
    pub fn new() -> Self {
        Self::default()
    }

    /// Chunks still due for the update in progress (0 between updates). A
    /// reader gives each of them a deadline of its own.
    pub fn chunks_due(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.count - p.chunks.len())
    }

    /// The directory the stream sent last (a `directory` frame), once: the
    /// caller has the verifier accept it (PROTOCOL.md §9.3).
    pub fn take_directory(&mut self) -> Option<pb::SignedDirectory> {
        self.directory.take()
    }

    /// Takes one frame; returns the update it completes, if any. `verifier`
    /// opens updates (it is not changed: applying is the caller's step).
    pub fn push(&mut self, verifier: &Verifier, frame: pb::SubscribeResponse) -> Result<Option<Assembled>, FrameError> {
        match frame.item {
            None => Err(FrameError::Empty),
            Some(pb::subscribe_response::Item::Update(signed)) => {
                if let Some(missing) = Some(self.chunks_due()).filter(|&n| n > 0) {
                    return Err(FrameError::ChunksCut { missing });
                }
                let opened = verifier.open(&signed)?;
                match opened.chunks_expected() {
                    Some((count, _)) if count > 0 => {
                        self.partial = Some(Partial { opened, signed, count, bytes: 0, chunks: Vec::new() });
                        Ok(None)
                    }
                    _ => Ok(Some(Assembled { opened, signed, chunks: Vec::new() })),
                }
            }
            Some(pb::subscribe_response::Item::Directory(signed)) => {
                if let Some(missing) = Some(self.chunks_due()).filter(|&n| n > 0) {
                    return Err(FrameError::ChunksCut { missing });
                }
                self.directory = Some(signed);
                Ok(None)
            }
            Some(pb::subscribe_response::Item::Chunk(chunk)) => {
                let p = self.partial.as_mut().ok_or(FrameError::StrayChunk)?;
                p.opened.check_chunk(p.chunks.len(), p.bytes, &chunk)?;
                p.bytes += chunk.data.len();
                p.chunks.push(chunk);
                if p.chunks.len() < p.count {
                    return Ok(None);
                }
                let p = self.partial.take().expect("in progress");
                Ok(Some(Assembled { opened: p.opened, signed: p.signed, chunks: p.chunks }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use altocast_proto::{
        Limits, MapState, NetworkMap, OriginKey, Pid, PidPrefixes, ResourceId, TrustedKeys,
        wire::update::{Signer, Version},
    };
    use bytes::Bytes;

    const NOW: i64 = 1_000_000;

    /// A network map snapshot signed in 16-byte chunks, and a verifier for it.
    fn chunked() -> (Verifier, pb::SignedUpdate, Vec<pb::SnapshotChunk>) {
        let mut signer = Signer::new(OriginKey::from_seed([3; 32]), 60_000);
        signer.chunk_size = 16;
        let pids = (0..4)
            .map(|i| {
                let name = format!("p{i}");
                let prefixes = PidPrefixes::parse(&name, &[format!("10.{i}.0.0/16")], &[] as &[String]).expect("p");
                (Pid::new(&name).expect("pid"), prefixes)
            })
            .collect();
        let v = Version { seq: 1, state: MapState::Network(NetworkMap::new(pids).expect("nm")), dependencies: vec![] };
        let s = signer.snapshot(&ResourceId::new("nm").expect("id"), &v, NOW);
        assert!(s.chunks.len() > 2, "the fixture must chunk");
        let verifier = Verifier::accepting_all(TrustedKeys::new([signer.key().public()]), Limits::default());
        (verifier, s.update, s.chunks)
    }

    fn update(u: &pb::SignedUpdate) -> pb::SubscribeResponse {
        pb::SubscribeResponse::new(pb::subscribe_response::Item::Update(u.clone()))
    }

    fn chunk(c: pb::SnapshotChunk) -> pb::SubscribeResponse {
        pb::SubscribeResponse::new(pb::subscribe_response::Item::Chunk(c))
    }

    #[test]
    fn an_intact_chunked_snapshot_assembles_and_verifies() {
        let (mut v, u, chunks) = chunked();
        let mut a = Assembler::new();
        assert!(a.push(&v, update(&u)).expect("update").is_none());
        assert_eq!(a.chunks_due(), chunks.len());
        let mut done = None;
        for c in &chunks {
            done = a.push(&v, chunk(c.clone())).expect("chunk");
        }
        let done = done.expect("the last chunk completes the update");
        assert_eq!(a.chunks_due(), 0);
        v.apply(&done.opened, &done.chunks, NOW).expect("verifies");
    }

    /// The chunk bomb: a sender's junk is refused at its first chunk, before
    /// any further one is read or kept, whatever the signed count.
    #[test]
    fn junk_chunks_are_refused_as_they_arrive() {
        let (v, u, chunks) = chunked();
        let cases: Vec<(&str, pb::SnapshotChunk)> = vec![
            (
                "junk of the right size",
                pb::SnapshotChunk { index: 0, data: Bytes::from(vec![0; chunks[0].data.len()]) },
            ),
            ("more bytes than signed", pb::SnapshotChunk { index: 0, data: Bytes::from(vec![0; 1 << 20]) }),
            ("the wrong index", pb::SnapshotChunk { index: 1, data: chunks[1].data.clone() }),
        ];
        for (what, bad) in cases {
            let mut a = Assembler::new();
            a.push(&v, update(&u)).expect("update");
            let err = a.push(&v, chunk(bad)).expect_err(what);
            assert!(matches!(err, FrameError::Verify(VerifyError::Chunk { index: 0, .. })), "{what}: {err}");
        }
    }

    #[test]
    fn frames_out_of_order_are_refused() {
        let (v, u, chunks) = chunked();
        let mut a = Assembler::new();
        let err = a.push(&v, chunk(chunks[0].clone())).expect_err("stray");
        assert!(matches!(err, FrameError::StrayChunk), "{err}");
        a.push(&v, update(&u)).expect("update");
        a.push(&v, chunk(chunks[0].clone())).expect("first chunk");
        let err = a.push(&v, update(&u)).expect_err("cut");
        assert!(matches!(err, FrameError::ChunksCut { missing } if missing == chunks.len() - 1), "{err}");
        let mut a = Assembler::new();
        a.push(&v, update(&u)).expect("update");
        for c in &chunks {
            a.push(&v, chunk(c.clone())).expect("chunk");
        }
        let err = a.push(&v, chunk(chunks[0].clone())).expect_err("one too many");
        assert!(matches!(err, FrameError::StrayChunk), "{err}");
        let err = a.push(&v, pb::SubscribeResponse::default()).expect_err("empty");
        assert!(matches!(err, FrameError::Empty), "{err}");
    }
}
