//! The gRPC codec for every altocast service: prost, with a 1 KiB initial
//! encode buffer instead of tonic's 8 KiB. Each server stream keeps its encode
//! buffer for its whole life, so with tens of thousands of idle subscribers
//! the default would cost ~8 KiB each; the buffer still grows on demand for a
//! large frame.
//!
//! PROTOCOL.md §10.1 (transport): a property of the reference servers, not
//! of the wire format, which is plain gRPC protobuf.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial encode buffer per stream.
const ENCODE_BUFFER: usize = 1024;
/// Bytes encoded before a stream yields to the transport (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost encoding with small per-stream buffers.
#[derive(Debug)]
pub struct AltocastCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for AltocastCodec<T, U> {
    fn default() -> Self {
        AltocastCodec(PhantomData)
    }
}

impl<T, U> Codec for AltocastCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}
