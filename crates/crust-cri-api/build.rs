//! Generates the CRI v1 types, client and server from the vendored
//! upstream `proto/api.proto` with tonic-prost-build.
//!
//! The vendored file stays byte-identical to upstream (its sha256 is in
//! proto/UPSTREAM and checked by a unit test). Upstream marks the
//! credential fields of `AuthConfig` `[debug_redact = true]`, an option
//! Debian 12's protoc 3.21 does not know; this script removes the option
//! from a copy under OUT_DIR and instead skips the derived `Debug` of
//! `AuthConfig`, whose hand-written `Debug` in lib.rs redacts them.

use std::path::PathBuf;

const REDACT: &str = " [debug_redact = true]";

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    let upstream = std::fs::read_to_string("proto/api.proto")?;
    let adapted = upstream.replace(REDACT, "");
    // Every redacted field upstream is in AuthConfig: if upstream adds one
    // elsewhere, this fails rather than leaking it through a derived Debug.
    let redacted = upstream.matches(REDACT).count();
    assert_eq!(
        redacted, 4,
        "api.proto marks {redacted} fields debug_redact; build.rs and lib.rs redact the 4 of AuthConfig: update both"
    );

    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = out.join("proto");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("api.proto"), adapted)?;

    tonic_prost_build::configure()
        // crust stores request configs (pod and container configs) as JSON.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .skip_debug([".runtime.v1.AuthConfig"])
        // No default stubs: the server must answer every RPC on purpose.
        .generate_default_stubs(false)
        .compile_protos(&[dir.join("api.proto")], &[dir])
}
