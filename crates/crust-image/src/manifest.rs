//! Manifest, index and config documents: what is accepted, what is
//! refused, and how a platform is chosen. Pure functions over bytes.

use std::collections::BTreeMap;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use sha2::{Digest, Sha256};

use crust_store::ImageConfig;

/// Largest manifest or index accepted (containerd uses the same order).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Largest image config accepted.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;
/// Most layers an image may have (overlayfs copes with far fewer lowers
/// per mount page anyway).
pub const MAX_LAYERS: usize = 500;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// What we ask registries for, in preference order.
pub const ACCEPTED_MANIFEST_TYPES: &[&str] =
    &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is {0} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("document is not valid JSON: {0}")]
    NotJson(String),
    #[error(
        "ambiguous document: it has both \"manifests\" and \"layers\", so it is neither a clear index nor a manifest"
    )]
    Ambiguous,
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("invalid {kind}: {message}")]
    Invalid { kind: &'static str, message: String },
    #[error("unsupported layer media type {0:?}")]
    UnsupportedLayer(String),
    #[error("{0:?} is not a container image config (media type of config)")]
    NotAnImage(String),
    #[error("no image for platform {wanted} in the index (it has: {available})")]
    NoPlatform { wanted: String, available: String },
    #[error("image config: {0}")]
    Config(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    pub blob: BlobRef,
    pub compression: Compression,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformEntry {
    pub blob: BlobRef,
    pub platform: Platform,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: String,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    Index(Vec<PlatformEntry>),
    Manifest {
        config: BlobRef,
        layers: Vec<LayerRef>,
    },
}

/// Classifies and validates a manifest or index.
pub fn parse_document(bytes: &[u8]) -> Result<Document, ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge(bytes.len()));
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::NotJson(e.to_string()))?;
    let has = |k: &str| value.get(k).is_some();
    if has("manifests") && has("layers") {
        return Err(ManifestError::Ambiguous);
    }
    let media_type = value
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or("");
    let is_index = match media_type {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        // OCI lets mediaType be left out; the fields then tell.
        "" if has("manifests") => true,
        "" if has("layers") => false,
        other => return Err(ManifestError::UnsupportedMediaType(other.to_string())),
    };
    if is_index {
        if has("layers") || has("config") {
            return Err(ManifestError::Ambiguous);
        }
        let index: ImageIndex =
            serde_json::from_value(value).map_err(|e| ManifestError::Invalid {
                kind: "image index",
                message: e.to_string(),
            })?;
        let entries = index
            .manifests()
            .iter()
            .map(|d| {
                let p = d.platform().as_ref();
                PlatformEntry {
                    blob: blob_ref(d.digest().to_string(), d.size(), d.media_type().to_string()),
                    platform: Platform {
                        os: p.map(|p| p.os().to_string()).unwrap_or_default(),
                        architecture: p.map(|p| p.architecture().to_string()).unwrap_or_default(),
                        variant: p.and_then(|p| p.variant().clone()).unwrap_or_default(),
                    },
                }
            })
            .collect();
        return Ok(Document::Index(entries));
    }
    if has("manifests") {
        return Err(ManifestError::Ambiguous);
    }
    let manifest: ImageManifest =
        serde_json::from_value(value).map_err(|e| ManifestError::Invalid {
            kind: "image manifest",
            message: e.to_string(),
        })?;
    let config = manifest.config();
    let config_type = config.media_type().to_string();
    if config_type != OCI_CONFIG && config_type != DOCKER_CONFIG {
        return Err(ManifestError::NotAnImage(config_type));
    }
    if manifest.layers().len() > MAX_LAYERS {
        return Err(ManifestError::Invalid {
            kind: "image manifest",
            message: format!(
                "{} layers, over the limit of {MAX_LAYERS}",
                manifest.layers().len()
            ),
        });
    }
    let layers = manifest
        .layers()
        .iter()
        .map(|d| {
            let media_type = d.media_type().to_string();
            let compression = layer_compression(&media_type)?;
            Ok(LayerRef {
                blob: blob_ref(d.digest().to_string(), d.size(), media_type),
                compression,
            })
        })
        .collect::<Result<Vec<_>, ManifestError>>()?;
    Ok(Document::Manifest {
        config: blob_ref(config.digest().to_string(), config.size(), config_type),
        layers,
    })
}

fn blob_ref(digest: String, size: u64, media_type: String) -> BlobRef {
    BlobRef {
        digest,
        size,
        media_type,
    }
}

fn layer_compression(media_type: &str) -> Result<Compression, ManifestError> {
    Ok(match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
        other => return Err(ManifestError::UnsupportedLayer(other.to_string())),
    })
}

/// The platform this crustd runs on, in OCI terms.
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "aarch64" => ("arm64", "v8"),
        "arm" => ("arm", "v7"),
        "x86" => ("386", ""),
        "powerpc64" => ("ppc64le", ""),
        "s390x" => ("s390x", ""),
        "riscv64" => ("riscv64", ""),
        other => (other, ""),
    };
    Platform {
        os: std::env::consts::OS.to_string(),
        architecture: architecture.to_string(),
        variant: variant.to_string(),
    }
}

fn normalize(p: &Platform) -> (String, String, String) {
    let arch = match p.architecture.as_str() {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let variant = match (arch, p.variant.as_str()) {
        ("arm64", "" | "8" | "v8") => "v8",
        ("arm", "" | "7" | "v7") => "v7",
        ("arm", "6" | "v6") => "v6",
        (_, v) => v,
    };
    (p.os.clone(), arch.to_string(), variant.to_string())
}

/// Picks the index entry for `wanted`: os, architecture and variant must
/// all match (after normalizing aliases such as aarch64 = arm64/v8).
pub fn select_platform<'a>(
    entries: &'a [PlatformEntry],
    wanted: &Platform,
) -> Result<&'a PlatformEntry, ManifestError> {
    let want = normalize(wanted);
    entries
        .iter()
        .find(|e| normalize(&e.platform) == want)
        .ok_or_else(|| ManifestError::NoPlatform {
            wanted: wanted.to_string(),
            available: entries
                .iter()
                .map(|e| e.platform.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The parts of an image config crust keeps, plus the layer diff ids.
pub struct ParsedConfig {
    pub config: ImageConfig,
    pub diff_ids: Vec<String>,
    pub raw: serde_json::Value,
}

pub fn parse_config(bytes: &[u8]) -> Result<ParsedConfig, ManifestError> {
    let raw: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Config(e.to_string()))?;
    let parsed: ImageConfiguration =
        serde_json::from_value(raw.clone()).map_err(|e| ManifestError::Config(e.to_string()))?;
    let c = parsed.config().clone().unwrap_or_default();
    let config = ImageConfig {
        user: c.user().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone().unwrap_or_default(),
        volumes: c.volumes().clone().unwrap_or_default(),
        stop_signal: c.stop_signal().clone().unwrap_or_default(),
        labels: c
            .labels()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
    };
    let diff_ids = parsed.rootfs().diff_ids().clone();
    if let Some(bad) = diff_ids
        .iter()
        .find(|d| !crate::reference::is_sha256_digest(d))
    {
        return Err(ManifestError::Config(format!(
            "diff id {bad:?} is not a sha256 digest"
        )));
    }
    Ok(ParsedConfig {
        config,
        diff_ids,
        raw,
    })
}

/// OCI chain ids: the first layer's diff id, then
/// sha256(parent chain id + " " + diff id) for each layer above it.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let chain = match out.last() {
            None => diff_id.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {diff_id}").as_bytes()))
            ),
        };
        out.push(chain);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST_A: &str =
        "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const DIGEST_B: &str =
        "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn manifest(media_type: &str, layer_type: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}",
            "config":{{"mediaType":"{OCI_CONFIG}","digest":"{DIGEST_A}","size":10}},
            "layers":[{{"mediaType":"{layer_type}","digest":"{DIGEST_B}","size":20}}]}}"#
        )
    }

    #[test]
    fn oci_and_docker_manifests_parse_with_compression() {
        for (layer_type, compression) in [
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Compression::Zstd,
            ),
            ("application/vnd.oci.image.layer.v1.tar", Compression::None),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Compression::Gzip,
            ),
        ] {
            for mt in [OCI_MANIFEST, DOCKER_MANIFEST] {
                let doc = parse_document(manifest(mt, layer_type).as_bytes()).unwrap();
                let Document::Manifest { config, layers } = doc else {
                    panic!("not a manifest")
                };
                assert_eq!(config.digest, DIGEST_A);
                assert_eq!(layers[0].compression, compression);
                assert_eq!(layers[0].blob.size, 20);
            }
        }
    }

    #[test]
    fn unknown_layer_and_manifest_types_are_refused() {
        let e = parse_document(manifest(OCI_MANIFEST, "application/x-foo").as_bytes());
        assert_eq!(
            e,
            Err(ManifestError::UnsupportedLayer("application/x-foo".into()))
        );
        let e = parse_document(
            manifest(
                "application/vnd.docker.distribution.manifest.v1+prettyjws",
                "x",
            )
            .as_bytes(),
        );
        assert!(matches!(e, Err(ManifestError::UnsupportedMediaType(_))));
    }

    #[test]
    fn documents_with_manifests_and_layers_are_ambiguous() {
        let doc = format!(
            r#"{{"schemaVersion":2,"manifests":[],
            "config":{{"mediaType":"{OCI_CONFIG}","digest":"{DIGEST_A}","size":1}},"layers":[]}}"#
        );
        assert_eq!(
            parse_document(doc.as_bytes()),
            Err(ManifestError::Ambiguous)
        );
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[],"config":{{}}}}"#
        );
        assert_eq!(
            parse_document(doc.as_bytes()),
            Err(ManifestError::Ambiguous)
        );
        let doc = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","manifests":[]}}"#);
        assert_eq!(
            parse_document(doc.as_bytes()),
            Err(ManifestError::Ambiguous)
        );
    }

    #[test]
    fn oversized_documents_are_refused() {
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert_eq!(
            parse_document(&big),
            Err(ManifestError::TooLarge(MAX_MANIFEST_BYTES + 1))
        );
    }

    #[test]
    fn non_image_configs_are_refused() {
        let doc = manifest(OCI_MANIFEST, "application/vnd.oci.image.layer.v1.tar")
            .replace(OCI_CONFIG, "application/vnd.cncf.helm.config.v1+json");
        assert!(matches!(
            parse_document(doc.as_bytes()),
            Err(ManifestError::NotAnImage(_))
        ));
    }

    fn index() -> Vec<PlatformEntry> {
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{DIGEST_A}","size":1,"platform":{{"os":"linux","architecture":"arm","variant":"v6"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{DIGEST_B}","size":2,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc","size":3,"platform":{{"os":"linux","architecture":"arm64"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd","size":4,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        match parse_document(doc.as_bytes()).unwrap() {
            Document::Index(entries) => entries,
            _ => panic!("not an index"),
        }
    }

    fn plat(os: &str, arch: &str, variant: &str) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.into(),
        }
    }

    #[test]
    fn platform_selection_matches_os_arch_and_variant() {
        let entries = index();
        assert_eq!(
            select_platform(&entries, &plat("linux", "arm", "v7"))
                .unwrap()
                .blob
                .size,
            2
        );
        assert_eq!(
            select_platform(&entries, &plat("linux", "arm", "v6"))
                .unwrap()
                .blob
                .size,
            1
        );
        assert_eq!(
            select_platform(&entries, &plat("linux", "arm64", "v8"))
                .unwrap()
                .blob
                .size,
            3
        );
        assert_eq!(
            select_platform(&entries, &plat("linux", "amd64", ""))
                .unwrap()
                .blob
                .size,
            4
        );
        let e = select_platform(&entries, &plat("linux", "s390x", "")).unwrap_err();
        assert!(e.to_string().contains("linux/arm/v7"), "{e}");
        assert!(select_platform(&entries, &plat("windows", "amd64", "")).is_err());
    }

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let diffs = vec![DIGEST_A.to_string(), DIGEST_B.to_string()];
        let chain = chain_ids(&diffs);
        assert_eq!(chain[0], DIGEST_A);
        let expected = hex::encode(Sha256::digest(format!("{DIGEST_A} {DIGEST_B}")));
        assert_eq!(chain[1], format!("sha256:{expected}"));
    }

    #[test]
    fn config_fields_are_extracted() {
        let cfg = br#"{"architecture":"amd64","os":"linux",
            "config":{"User":"1000:2000","Env":["PATH=/bin"],"Entrypoint":["/bin/sh"],"Cmd":["-c","x"],
                      "WorkingDir":"/w","Volumes":{"/data":{}},"StopSignal":"SIGUSR1","Labels":{"a":"b"}},
            "rootfs":{"type":"layers","diff_ids":["sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]}}"#;
        let p = parse_config(cfg).unwrap();
        assert_eq!(p.config.user, "1000:2000");
        assert_eq!(p.config.entrypoint, vec!["/bin/sh"]);
        assert_eq!(p.config.volumes, vec!["/data"]);
        assert_eq!(p.config.stop_signal, "SIGUSR1");
        assert_eq!(p.config.labels["a"], "b");
        assert_eq!(p.diff_ids.len(), 1);
    }
}
