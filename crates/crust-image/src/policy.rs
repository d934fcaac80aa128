//! `images.policy` enforced at pull: the most specific scope covering an
//! image decides whether it is accepted, rejected, or must carry a cosign
//! signature by one of the scope's keys.
//!
//! Signatures are found the cosign way: the manifest tagged
//! `sha256-<hex>.sig` in the image's repository, fetched through the same
//! endpoint (mirror or registry) and credentials as the image; each of its
//! layers is a simple-signing payload whose signature is the layer's
//! `dev.cosignproject.cosign/signature` annotation. A signature counts
//! when it verifies under one of the keys (sigstore-rs does the
//! cryptography) and its payload names the digest being pulled, so a
//! mirror cannot change the verdict: it is over content digests.
//! Verification happens after the manifest is resolved and before any
//! layer is fetched: a refused image leaves nothing behind.

use std::path::PathBuf;

use crust_config::{DefaultRule, PolicyConfig, PolicyRule};
use sigstore::crypto::{CosignVerificationKey, Signature};

use crate::ImageError;
use crate::reference::ImageRef;

/// The annotation holding a layer's base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Largest public key file read.
const MAX_KEY_BYTES: u64 = 64 * 1024;
/// Most signature layers looked at in one signature manifest.
pub const MAX_SIGNATURES: usize = 16;
/// Largest signature manifest and payload read.
pub const MAX_SIGNATURE_MANIFEST_BYTES: usize = 256 * 1024;
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// A key of a `signed_by` scope, as configured.
pub struct Key {
    pub path: PathBuf,
    /// sha256 of the key file as read: a key replaced at the same path is
    /// another key.
    pub fingerprint: String,
    key: CosignVerificationKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("path", &self.path).finish()
    }
}

enum Rule {
    Accept,
    Reject,
    SignedBy(Vec<Key>),
}

struct Scope {
    scope: String,
    rule: Rule,
}

/// Told each verdict on a signature check: `verified` or `refused`.
pub type Observer = std::sync::Arc<dyn Fn(&'static str) + Send + Sync>;

/// The loaded policy: keys read and parsed once, at start.
pub struct Policy {
    default_reject: bool,
    scopes: Vec<Scope>,
    observer: Option<Observer>,
}

/// What the policy says of one image.
pub enum Decision<'a> {
    Accept,
    /// The named scope (`default` when none matched) rejects it.
    Reject(&'a str),
    /// It must be signed by one of these keys of the named scope.
    Verify(&'a str, &'a [Key]),
}

impl Policy {
    pub fn load(config: &PolicyConfig, observer: Option<Observer>) -> Result<Policy, ImageError> {
        let mut scopes = Vec::new();
        for s in &config.scopes {
            let rule = match s.rule {
                PolicyRule::Accept => Rule::Accept,
                PolicyRule::Reject => Rule::Reject,
                PolicyRule::SignedBy => Rule::SignedBy(
                    s.keys
                        .iter()
                        .map(|path| load_key(path, &s.scope))
                        .collect::<Result<_, _>>()?,
                ),
            };
            scopes.push(Scope {
                scope: s.scope.clone(),
                rule,
            });
        }
        Ok(Policy {
            default_reject: config.default == DefaultRule::Reject,
            scopes,
            observer,
        })
    }

    /// Whether images no scope covers are rejected.
    pub fn rejects_by_default(&self) -> bool {
        self.default_reject
    }

    /// Counts a verdict (metrics).
    pub fn observe(&self, result: &'static str) {
        if let Some(o) = &self.observer {
            o(result);
        }
    }

    pub fn decide(&self, image: &ImageRef) -> Decision<'_> {
        let best = self
            .scopes
            .iter()
            .filter_map(|s| {
                crust_config::policy::scope_matches(&s.scope, &image.registry, &image.repository)
                    .map(|rank| (rank, s))
            })
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, s)| s);
        match best {
            Some(s) => match &s.rule {
                Rule::Accept => Decision::Accept,
                Rule::Reject => Decision::Reject(&s.scope),
                Rule::SignedBy(keys) => Decision::Verify(&s.scope, keys),
            },
            None if self.default_reject => Decision::Reject("default"),
            None => Decision::Accept,
        }
    }
}

fn load_key(path: &PathBuf, scope: &str) -> Result<Key, ImageError> {
    use std::io::Read;
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_KEY_BYTES).read_to_end(&mut pem))
        .map_err(|e| {
            ImageError::Config(format!(
                "images.policy scope {scope:?}: cannot read key {}: {e}",
                path.display()
            ))
        })?;
    let key = CosignVerificationKey::try_from_pem(&pem).map_err(|e| {
        ImageError::Config(format!(
            "images.policy scope {scope:?}: {} is not a public key crust can verify with (PEM: ECDSA P-256/P-384, Ed25519, RSA): {e}",
            path.display()
        ))
    })?;
    Ok(Key {
        path: path.clone(),
        fingerprint: {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&pem))
        },
        key,
    })
}

/// The cosign tag of a digest's signatures: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// One signature from a signature manifest: the payload's digest and the
/// base64 signature over the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLayer {
    pub payload_digest: String,
    pub signature: String,
}

/// The signature layers of a cosign signature manifest.
pub fn signature_layers(manifest: &[u8]) -> Result<Vec<SignatureLayer>, String> {
    let v: serde_json::Value = serde_json::from_slice(manifest)
        .map_err(|e| format!("unreadable signature manifest: {e}"))?;
    let layers = v
        .get("layers")
        .and_then(|l| l.as_array())
        .ok_or("the signature manifest has no layers")?;
    Ok(layers
        .iter()
        .take(MAX_SIGNATURES)
        .filter_map(|l| {
            Some(SignatureLayer {
                payload_digest: l.get("digest")?.as_str()?.to_string(),
                signature: l
                    .get("annotations")?
                    .get(SIGNATURE_ANNOTATION)?
                    .as_str()?
                    .to_string(),
            })
        })
        .collect())
}

/// Why a signature did not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// No key of the scope verifies it (a wrong key, or a tampered
    /// payload or signature: the cryptography cannot tell them apart).
    NotByKey,
    /// It verifies, but signs another image.
    OtherDigest(String),
    /// Not a signature at all.
    Malformed(String),
}

/// The key that signed `payload` for `digest`, if one did.
pub fn verify<'k>(
    payload: &[u8],
    signature: &str,
    digest: &str,
    keys: &'k [Key],
) -> Result<&'k Key, Mismatch> {
    let key = keys
        .iter()
        .find(|k| {
            k.key
                .verify_signature(Signature::Base64Encoded(signature.as_bytes()), payload)
                .is_ok()
        })
        .ok_or(Mismatch::NotByKey)?;
    let v: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| Mismatch::Malformed(format!("payload is not JSON: {e}")))?;
    let signed = v
        .pointer("/critical/image/docker-manifest-digest")
        .and_then(|d| d.as_str())
        .ok_or_else(|| Mismatch::Malformed("payload names no manifest digest".into()))?;
    if signed != digest {
        return Err(Mismatch::OtherDigest(signed.to_string()));
    }
    Ok(key)
}

/// The simple-signing payload cosign signs for `image` at `digest`.
pub fn payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .expect("a JSON value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigstore::crypto::SigningScheme;

    fn key_pair(dir: &std::path::Path, name: &str) -> (sigstore::crypto::SigStoreSigner, PathBuf) {
        let signer = SigningScheme::ECDSA_P256_SHA256_ASN1
            .create_signer()
            .unwrap();
        let pem = signer
            .to_sigstore_keypair()
            .unwrap()
            .public_key_to_pem()
            .unwrap();
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        (signer, path)
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn a_signature_counts_under_its_key_for_its_digest_only() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, right) = key_pair(dir.path(), "right.pub");
        let (_, wrong) = key_pair(dir.path(), "wrong.pub");
        let keys = [load_key(&right, "s").unwrap()];
        let other = [load_key(&wrong, "s").unwrap()];
        let digest = "sha256:aaaa";
        let body = payload("r.io/app", digest);
        let sig = b64(&signer.sign(&body).unwrap());
        assert_eq!(verify(&body, &sig, digest, &keys).unwrap().path, right);
        assert_eq!(
            verify(&body, &sig, digest, &other).unwrap_err(),
            Mismatch::NotByKey
        );
        assert_eq!(
            verify(&body, &sig, "sha256:bbbb", &keys).unwrap_err(),
            Mismatch::OtherDigest(digest.into())
        );
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        assert_eq!(
            verify(&tampered, &sig, digest, &keys).unwrap_err(),
            Mismatch::NotByKey
        );
        assert_eq!(
            verify(&body, "!!", digest, &keys).unwrap_err(),
            Mismatch::NotByKey
        );
    }

    #[test]
    fn the_most_specific_scope_decides() {
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = key_pair(dir.path(), "k.pub");
        let config: PolicyConfig = serde_json::from_value(serde_json::json!({
            "default": "reject",
            "scopes": [
                {"scope": "r.io", "rule": "accept"},
                {"scope": "r.io/team", "rule": "signed_by", "keys": [key]},
                {"scope": "r.io/team/public", "rule": "accept"},
                {"scope": "*.example.com", "rule": "reject"},
            ]
        }))
        .unwrap();
        let policy = Policy::load(&config, None).unwrap();
        let decide =
            |name: &str| match policy.decide(&crate::reference::parse_reference(name).unwrap()) {
                Decision::Accept => "accept".to_string(),
                Decision::Reject(s) => format!("reject {s}"),
                Decision::Verify(s, _) => format!("verify {s}"),
            };
        assert_eq!(decide("r.io/other/app:1"), "accept");
        assert_eq!(decide("r.io/team/app:1"), "verify r.io/team");
        assert_eq!(decide("r.io/team/public:1"), "accept");
        assert_eq!(decide("reg.example.com/x:1"), "reject *.example.com");
        assert_eq!(decide("quay.io/x:1"), "reject default");
    }

    #[test]
    fn signature_manifests_and_tags_follow_cosign() {
        assert_eq!(signature_tag("sha256:abc"), "sha256-abc.sig");
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "layers": [
                {"digest": "sha256:p1", "annotations": {SIGNATURE_ANNOTATION: "c2ln"}},
                {"digest": "sha256:p2"},
            ]
        });
        let layers = signature_layers(manifest.to_string().as_bytes()).unwrap();
        assert_eq!(
            layers,
            [SignatureLayer {
                payload_digest: "sha256:p1".into(),
                signature: "c2ln".into()
            }]
        );
        assert!(signature_layers(b"{}").is_err());
    }

    #[test]
    fn unreadable_keys_are_config_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.pub");
        std::fs::write(&bad, "not a key").unwrap();
        let e = load_key(&bad, "r.io").err().unwrap().to_string();
        assert!(e.contains("bad.pub") && e.contains("r.io"), "{e}");
        let e = load_key(&dir.path().join("missing.pub"), "r.io")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("missing.pub"), "{e}");
    }
}
