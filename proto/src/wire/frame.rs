//! `SubscribeResponse`, written by hand so that a frame can carry its own
//! encoding: the hub encodes each frame once, and every subscriber's gRPC
//! stream copies those same bytes instead of re-encoding the message
//! ("sign bytes, relay bytes", DESIGN §4). Decoding (clients) works like any
//! generated message. The wire format is exactly the `.proto`'s.
//!
//! PROTOCOL.md §10.4: the frames of a `Subscribe` stream.

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
    /// The server's current signed directory.
    #[prost(message, tag = "3")]
    Directory(pb::SignedDirectory),
}

/// One frame of a `Subscribe` stream.
#[derive(Clone, Default)]
pub struct SubscribeResponse {
    /// The frame's content.
    pub item: Option<Item>,
    /// gRPC length-prefixed encoding of `item` (5-byte header + message),
    /// when made once for fan-out.
    framed: Option<Bytes>,
}

impl std::fmt::Debug for SubscribeResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscribeResponse")
            .field("item", &self.item)
            .field("pre_encoded", &self.framed.is_some())
            .finish()
    }
}

impl PartialEq for SubscribeResponse {
    fn eq(&self, other: &Self) -> bool {
        match (&self.framed, &other.framed) {
            (None, None) => self.item == other.item,
            _ => self.encode_to_vec() == other.encode_to_vec(),
        }
    }
}

impl SubscribeResponse {
    /// A frame to encode as usual.
    pub fn new(item: Item) -> Self {
        SubscribeResponse { item: Some(item), framed: None }
    }

    /// A frame encoded now, once, with its gRPC length prefix. It keeps only
    /// the bytes, so a clone is a reference-count increment; `item` is `None`
    /// on such a frame.
    pub fn pre_encoded(item: &Item) -> Self {
        let len = item.encoded_len();
        let mut buf = Vec::with_capacity(5 + len);
        buf.push(0); // not compressed
        buf.extend_from_slice(&(len as u32).to_be_bytes());
        item.encode(&mut buf);
        SubscribeResponse { item: None, framed: Some(buf.into()) }
    }

    /// The frame as a gRPC length-prefixed message, ready for the HTTP/2 body.
    /// Shared bytes for a pre-encoded frame; encoded now otherwise.
    pub fn grpc_framed(&self) -> Bytes {
        match &self.framed {
            Some(b) => b.clone(),
            None => {
                let len = self.encoded_len();
                let mut buf = Vec::with_capacity(5 + len);
                buf.push(0);
                buf.extend_from_slice(&(len as u32).to_be_bytes());
                self.encode_raw(&mut buf);
                buf.into()
            }
        }
    }
}

impl Message for SubscribeResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match (&self.framed, &self.item) {
            (Some(b), _) => buf.put_slice(&b[5..]),
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
        self.framed = None;
        match tag {
            1..=3 => Item::merge(&mut self.item, tag, wire_type, buf, ctx),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        match (&self.framed, &self.item) {
            (Some(b), _) => b.len() - 5,
            (None, Some(i)) => i.encoded_len(),
            (None, None) => 0,
        }
    }

    fn clear(&mut self) {
        self.item = None;
        self.framed = None;
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
        assert_eq!(back.item, Some(item.clone()));
        let framed = SubscribeResponse::pre_encoded(&item).grpc_framed();
        assert_eq!(&framed[5..], &a[..]);
        assert_eq!(u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize, a.len());
        assert_eq!(SubscribeResponse::new(item).grpc_framed(), framed);
    }
}
