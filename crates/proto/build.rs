//! Compiles proto/confab/xmpp/v1/confab.proto with protox (a pure-Rust protobuf compiler),
//! so building Confab needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not with env!(): cargo may reuse this build script's binary for
    // another checkout of the workspace sharing the target directory (its hash does not
    // include the checkout's path), and a path baked in at compile time would point there.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir).join("../../proto");
    let file = root.join("confab/xmpp/v1/confab.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
