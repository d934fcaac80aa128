//! Test images signed as cosign signs them: sigstore-rs keys, a
//! simple-signing payload pushed as a blob, and the `sha256-<digest>.sig`
//! manifest naming it with the signature as its annotation.

use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::Digest;
use sigstore::crypto::{SigStoreSigner, SigningScheme};

use crate::{registry_http, registry_put_manifest, test_images};

const SOURCE_REPO: &str = "crust-test/busybox";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

pub fn registry() -> String {
    test_images()["registry"].as_str().unwrap().to_string()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Uploads a blob to `repo` (monolithic POST+PUT); returns its digest.
fn push_blob(repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let (status, headers, body) =
        registry_http("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let location = headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.clone())
        .unwrap();
    let path = location
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
        .unwrap_or(location);
    let sep = if path.contains('?') { '&' } else { '?' };
    let (status, _, body) = registry_http(
        "PUT",
        &format!("{path}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        bytes,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    digest
}

/// Copies the busybox test image into `repo:tag` (blobs mounted across
/// repositories); `variant` changes the manifest (and so its digest).
pub fn copy_image(repo: &str, tag: &str, variant: &str) -> String {
    let (_, manifest) = crate::registry_get_manifest(SOURCE_REPO, "latest");
    let mut m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    for l in m["layers"].as_array().unwrap() {
        blobs.push(l["digest"].as_str().unwrap().to_string());
    }
    for digest in blobs {
        let (status, _, body) = registry_http(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={SOURCE_REPO}"),
            &[],
            b"",
        );
        assert_eq!(
            status,
            201,
            "mount {digest}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    m["annotations"] = serde_json::json!({"e2e.variant": variant});
    let bytes = serde_json::to_vec(&m).unwrap();
    registry_put_manifest(repo, tag, OCI_MANIFEST, &bytes);
    sha256(&bytes)
}

pub struct Key {
    pub signer: SigStoreSigner,
    pub public: PathBuf,
}

pub fn key(dir: &Path, name: &str) -> Key {
    let signer = SigningScheme::ECDSA_P256_SHA256_ASN1
        .create_signer()
        .unwrap();
    let pem = signer
        .to_sigstore_keypair()
        .unwrap()
        .public_key_to_pem()
        .unwrap();
    let public = dir.join(format!("{name}.pub"));
    std::fs::write(&public, pem).unwrap();
    Key { signer, public }
}

/// Signs `repo@digest` with `key` as cosign does; `tamper` flips a byte
/// of the payload after signing.
pub fn sign(repo: &str, digest: &str, key: &Key, tamper: bool) {
    let payload = serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": format!("{}/{repo}", registry())},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .unwrap();
    let signature =
        base64::engine::general_purpose::STANDARD.encode(key.signer.sign(&payload).unwrap());
    let mut stored = payload.clone();
    if tamper {
        // Same length, other content: the digest below is of this.
        let at = stored.len() - 3;
        stored[at] = b' ';
    }
    let payload_digest = push_blob(repo, &stored);
    let config = b"{}";
    let config_digest = push_blob(repo, config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": payload_digest,
            "size": stored.len(),
            "annotations": {"dev.cosignproject.cosign/signature": signature},
        }],
    });
    let tag = format!("{}.sig", digest.replacen(':', "-", 1));
    registry_put_manifest(
        repo,
        &tag,
        OCI_MANIFEST,
        &serde_json::to_vec(&manifest).unwrap(),
    );
}
