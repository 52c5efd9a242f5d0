//! Generates the protobuf types from `proto/lars.proto` with the pure-Rust
//! `protox` compiler, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/lars.proto");
    let fds = protox::compile(["proto/lars.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
