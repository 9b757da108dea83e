//! Compiles the `.proto` files with `protox` (pure Rust), so building needs no
//! system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/workload.proto",
        "proto/hallmark/node/v1/node.proto",
        "proto/hallmark/admin/v1/admin.proto",
        "proto/hallmark/workload/v1/revocations.proto",
        "proto/envoy/service/secret/v3/sds.proto",
        "proto/envoy/extensions/transport_sockets/tls/v3/secret.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    // The files those import.
    println!("cargo:rerun-if-changed=proto/envoy");
    println!("cargo:rerun-if-changed=proto/google");
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Smaller per-call buffers than tonic's default (see src/codec.rs).
        .codec_path("crate::codec::LeanCodec")
        .compile_fds(fds)?;
    Ok(())
}
