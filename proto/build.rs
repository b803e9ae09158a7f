//! Compiles the Istio wire definitions with a vendored protoc, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/google/rpc/status.proto",
        "proto/istio/mixer/v1/attributes.proto",
        "proto/istio/mixer/v1/check.proto",
        "proto/istio/mixer/v1/report.proto",
        "proto/istio/mixer/v1/service.proto",
        "proto/istio/mixer/v1/config/client/client_config.proto",
        "proto/istio/v1/auth/ca.proto",
        "proto/istio/mcp/v1alpha1/mcp.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Maps in the mixer filter config are encoded in key order, so a config Pilot sends has one
    // encoding (its xDS version is a hash of it).
    config.btree_map([
        ".istio.mixer.v1.Attributes",
        ".istio.mixer.v1.config.client",
    ]);
    let include = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_with_config(
            config,
            &protos.map(std::path::PathBuf::from),
            &[std::path::PathBuf::from("proto"), include],
        )?;
    Ok(())
}
