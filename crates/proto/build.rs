//! Compiles proto/confab/xmpp/v1/confab.proto with protox (a pure-Rust protobuf compiler),
//! so building Confab needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("confab/xmpp/v1/confab.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
