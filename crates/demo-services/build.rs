//! Compiles the demo protos with `protox` (pure Rust, no system `protoc`), writes the encoded
//! `FileDescriptorSet` for server reflection, and generates the tonic server and client code.

use prost::Message;
use std::path::PathBuf;

const PROTOS: [&str; 2] = ["proto/helloworld.proto", "proto/inspect.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    std::fs::write(
        out_dir.join("demo_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_build::configure().compile_fds(descriptors)?;
    Ok(())
}
