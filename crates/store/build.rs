//! Generates the etcd backend's gRPC client from etcd's v3 API (`proto/`).
//!
//! Why here, at build time, with protox rather than protoc or checked-in code: protox is a
//! protobuf compiler written in Rust and fetched by cargo like any crate, so building shoal
//! (etcd backend included) needs nothing but cargo; and code generated on every build cannot
//! drift from the `.proto` files beside it, where checked-in output would need a test to
//! prove it current. The cost is protox itself in a clean build, a few seconds.

use std::path::Path;

/// The files whose services and messages are generated; they import nothing else.
const PROTOS: [&str; 3] = [
    "proto/etcd/api/etcdserverpb/rpc.proto",
    "proto/etcd/api/mvccpb/kv.proto",
    "proto/etcd/api/authpb/auth.proto",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for file in PROTOS {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(PROTOS, [Path::new("proto")])
        .unwrap_or_else(|err| panic!("failed to compile etcd's .proto files: {err:?}"));
    tonic_prost_build::configure()
        // shoal is etcd's client only; the connection is built by hand (src/etcd/client.rs).
        .build_server(false)
        .build_transport(false)
        .compile_fds(descriptors)
        .unwrap_or_else(|err| panic!("failed to generate the etcd client: {err}"));
}
