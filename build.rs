//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and writes the
//! descriptor set that gRPC reflection serves.
//!
//! `proto/google/rpc/` holds googleapis' `status.proto` and `error_details.proto`,
//! unmodified, so that reflection also serves the error details the gateway sends
//! (BadRequest, ErrorInfo, RetryInfo, QuotaFailure). They go into the descriptor set
//! only: their Rust types are tonic-types' own (`extern_path`), so no second copy of
//! `google.rpc` is generated.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = proto_files(PathBuf::from("proto"))?;
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!("cargo:rerun-if-changed=proto");

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&files)?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("batchgate_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .extern_path(".google.rpc", "::tonic_types::pb")
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

/// Every `.proto` under `dir`, sorted so the build is reproducible.
fn proto_files(dir: PathBuf) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "proto") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}
