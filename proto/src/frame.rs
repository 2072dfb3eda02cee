//! `SubscribeResponse`, written by hand so that a frame can carry its own
//! encoding: the hub encodes each frame once, and every subscriber's gRPC
//! stream copies those same bytes instead of re-encoding the message
//! ("sign bytes, relay bytes", DESIGN §4). Decoding (clients) works like any
//! generated message. The wire format is exactly the `.proto`'s.

use bytes::{Buf, BufMut, Bytes};
use prost::{
    DecodeError, Message,
    encoding::{DecodeContext, WireType, skip_field},
};

use crate::pb;

/// `SubscribeResponse.item`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Item {
    /// A signed update.
    #[prost(message, tag = "1")]
    Update(pb::SignedUpdate),
    /// A chunk of the preceding chunked snapshot.
    #[prost(message, tag = "2")]
    Chunk(pb::SnapshotChunk),
}

/// One frame of a `Subscribe` stream.
#[derive(Clone, Default)]
pub struct SubscribeResponse {
    /// The frame's content.
    pub item: Option<Item>,
    /// The encoding of `item`, when made once for fan-out.
    encoded: Option<Bytes>,
}

impl std::fmt::Debug for SubscribeResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscribeResponse")
            .field("item", &self.item)
            .field("pre_encoded", &self.encoded.is_some())
            .finish()
    }
}

impl PartialEq for SubscribeResponse {
    fn eq(&self, other: &Self) -> bool {
        match (&self.encoded, &other.encoded) {
            (None, None) => self.item == other.item,
            _ => self.encode_to_vec() == other.encode_to_vec(),
        }
    }
}

impl SubscribeResponse {
    /// A frame to encode as usual.
    pub fn new(item: Item) -> Self {
        SubscribeResponse { item: Some(item), encoded: None }
    }

    /// A frame encoded now, once. It keeps only the bytes, so a clone is a
    /// reference-count increment; `item` is `None` on such a frame.
    pub fn pre_encoded(item: &Item) -> Self {
        let mut buf = Vec::with_capacity(item.encoded_len());
        item.encode(&mut buf);
        SubscribeResponse { item: None, encoded: Some(buf.into()) }
    }
}

impl Message for SubscribeResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match (&self.encoded, &self.item) {
            (Some(b), _) => buf.put_slice(b),
            (None, Some(i)) => i.encode(buf),
            (None, None) => {}
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        self.encoded = None;
        match tag {
            1 | 2 => Item::merge(&mut self.item, tag, wire_type, buf, ctx),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        match (&self.encoded, &self.item) {
            (Some(b), _) => b.len(),
            (None, Some(i)) => i.encoded_len(),
            (None, None) => 0,
        }
    }

    fn clear(&mut self) {
        self.item = None;
        self.encoded = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_encoded_frame_has_the_generated_wire_format() {
        let item = Item::Update(pb::SignedUpdate {
            body: Bytes::from_static(b"body"),
            signatures: vec![pb::Signature { key_id: "k".into(), sig: Bytes::from_static(&[1; 64]) }],
        });
        let a = SubscribeResponse::new(item.clone()).encode_to_vec();
        let b = SubscribeResponse::pre_encoded(&item).encode_to_vec();
        assert_eq!(a, b);
        let back = SubscribeResponse::decode(b.as_slice()).expect("decode");
        assert_eq!(back.item, Some(item));
    }
}
