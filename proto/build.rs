//! Generates the gRPC and message code from `altocast/v1/altocast.proto` (the
//! distribution contract) and `altocast/v1/tracker.proto` (the tracker's
//! ranking service), both in package `altocast.v1`, with protox (a pure-Rust
//! protobuf compiler), so no system `protoc` is needed. The encoded
//! descriptor set is also written for gRPC server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["altocast/v1/altocast.proto", "altocast/v1/tracker.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("altocast_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Payload fields are `bytes::Bytes` so relaying and fan-out clone a handle,
        // never the bytes.
        .bytes(".")
        // Hand-written so a frame can carry its own encoding (see src/wire/frame.rs).
        .extern_path(".altocast.v1.SubscribeResponse", "crate::wire::frame::SubscribeResponse")
        // Small per-stream encode buffers (see src/wire/codec.rs).
        .codec_path("crate::wire::codec::AltocastCodec")
        .compile_fds(fds)?;
    Ok(())
}
