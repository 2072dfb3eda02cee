//! Chunked snapshots (PROTOCOL.md §7): a snapshot too big for one message is
//! split into chunks whose hashes the signed update binds (§7.1,
//! [`split`]); a verifier checks each chunk as it arrives and the whole
//! sequence before decoding it (§7.3, [`check_chunk`], [`assemble_chunks`]).
//! Chunk hashes are plain BLAKE3 of the chunk data, with no domain string.

use bytes::{Bytes, BytesMut};

use crate::{VerifyError, pb};

/// Splits an encoded snapshot into chunks of `chunk_size` bytes (the last
/// one shorter): the `ChunkedSnapshot` the update signs, and the chunks that
/// follow it. The chunks share `data`'s bytes.
pub(crate) fn split(data: Bytes, chunk_size: usize) -> (pb::ChunkedSnapshot, Vec<pb::SnapshotChunk>) {
    let mut hashes = Vec::new();
    let mut chunks = Vec::new();
    for (i, c) in data.chunks(chunk_size).enumerate() {
        hashes.push(Bytes::copy_from_slice(blake3::hash(c).as_bytes()));
        let start = i * chunk_size;
        chunks.push(pb::SnapshotChunk { index: i as u32, data: data.slice(start..start + c.len()) });
    }
    (pb::ChunkedSnapshot { total_len: data.len() as u64, chunk_hashes: hashes }, chunks)
}

/// The checks of one chunk against the signed `ChunkedSnapshot` (see
/// [`crate::verify::Opened::check_chunk`]); shared by the as-it-arrives check and by
/// [`assemble_chunks`].
pub(crate) fn check_chunk(
    c: &pb::ChunkedSnapshot,
    received: usize,
    bytes_so_far: usize,
    chunk: &pb::SnapshotChunk,
) -> Result<(), VerifyError> {
    let Some(hash) = c.chunk_hashes.get(received) else {
        return Err(VerifyError::Chunk {
            index: received,
            reason: format!("more than the {} signed chunks", c.chunk_hashes.len()),
        });
    };
    if chunk.index as usize != received {
        return Err(VerifyError::Chunk { index: received, reason: format!("carries index {}", chunk.index) });
    }
    if (bytes_so_far + chunk.data.len()) as u64 > c.total_len {
        return Err(VerifyError::Chunk {
            index: received,
            reason: format!("{} bytes so far, signed {}", bytes_so_far + chunk.data.len(), c.total_len),
        });
    }
    if blake3::hash(&chunk.data).as_bytes()[..] != hash[..] {
        return Err(VerifyError::Chunk { index: received, reason: "hash differs from the signed one".into() });
    }
    Ok(())
}

pub(crate) fn assemble_chunks(c: &pb::ChunkedSnapshot, chunks: &[pb::SnapshotChunk]) -> Result<Bytes, VerifyError> {
    if chunks.len() != c.chunk_hashes.len() {
        return Err(VerifyError::Chunk {
            index: chunks.len(),
            reason: format!("{} chunks, signed {}", chunks.len(), c.chunk_hashes.len()),
        });
    }
    let total: usize = chunks.iter().map(|ch| ch.data.len()).sum();
    if total as u64 != c.total_len {
        return Err(VerifyError::Chunk { index: 0, reason: format!("{total} bytes, signed {}", c.total_len) });
    }
    let mut out = BytesMut::with_capacity(total);
    for (i, ch) in chunks.iter().enumerate() {
        check_chunk(c, i, out.len(), ch)?;
        out.extend_from_slice(&ch.data);
    }
    Ok(out.freeze())
}
