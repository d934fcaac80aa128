//! Image references, normalized the way Docker and containerd do:
//! `busybox` is `docker.io/library/busybox:latest`.

use std::fmt;

/// The largest repository name the distribution spec allows.
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {problem}")]
pub struct ReferenceError {
    pub input: String,
    pub problem: String,
}

/// A fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host with optional port, e.g. `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<hex>` when the reference pins a manifest.
    pub digest: Option<String>,
}

/// What a name given to ImageStatus / RemoveImage can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageName {
    /// An image ID (`sha256:<hex>`, or the bare hex).
    Id(String),
    Ref(ImageRef),
}

impl ImageRef {
    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, when the reference has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `registry/repository@digest` for a given manifest digest.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn err(input: &str, problem: impl Into<String>) -> ReferenceError {
    ReferenceError {
        input: input.to_string(),
        problem: problem.into(),
    }
}

/// Is `s` a `sha256:<64 lowercase hex>` digest?
pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(is_hex64)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parses a name for lookup: an image ID or a reference.
pub fn parse_name(input: &str) -> Result<ImageName, ReferenceError> {
    if is_sha256_digest(input) {
        return Ok(ImageName::Id(input.to_string()));
    }
    if is_hex64(input) {
        return Ok(ImageName::Id(format!("sha256:{input}")));
    }
    parse_reference(input).map(ImageName::Ref)
}

/// Parses and normalizes a pullable reference.
pub fn parse_reference(input: &str) -> Result<ImageRef, ReferenceError> {
    if input.is_empty() {
        return Err(err(input, "the image name is empty"));
    }
    if input.trim() != input || input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(
            input,
            "image names cannot contain spaces or control characters",
        ));
    }
    let (rest, digest) = match input.split_once('@') {
        Some((rest, digest)) => {
            if !digest.starts_with("sha256:") {
                return Err(err(input, "only sha256 digests are supported"));
            }
            if !is_sha256_digest(digest) {
                return Err(err(input, "a sha256 digest is 64 lowercase hex characters"));
            }
            (rest, Some(digest.to_string()))
        }
        None => (input, None),
    };
    // The tag is after the last ':' that comes after the last '/' (a ':'
    // before it belongs to the registry's port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let (name, tag) = rest.split_at(last_slash + i);
            (name, Some(tag[1..].to_string()))
        }
        None => (rest, None),
    };
    if let Some(tag) = &tag {
        validate_tag(input, tag)?;
    }
    let (registry, repository) = split_registry(name);
    let registry = match registry {
        Some("index.docker.io") | None => "docker.io".to_string(),
        Some(r) => r.to_string(),
    };
    let repository = if registry == "docker.io" && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository.to_string()
    };
    validate_registry(input, &registry)?;
    validate_repository(input, &repository)?;
    if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
        return Err(err(
            input,
            format!("the name is longer than {MAX_NAME_LEN} characters"),
        ));
    }
    let tag = match (tag, &digest) {
        (None, None) => Some("latest".to_string()),
        (tag, _) => tag,
    };
    Ok(ImageRef {
        registry,
        repository,
        tag,
        digest,
    })
}

/// Docker's rule: the first component is a registry when it looks like a
/// host (has '.' or ':') or is `localhost`.
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn validate_tag(input: &str, tag: &str) -> Result<(), ReferenceError> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok
        || tag.len() > MAX_TAG_LEN
        || !tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
    {
        return Err(err(
            input,
            format!(
                "tag {tag:?} must be 1-{MAX_TAG_LEN} letters, digits, '_', '.' or '-', not starting with '.' or '-'"
            ),
        ));
    }
    Ok(())
}

fn validate_registry(input: &str, registry: &str) -> Result<(), ReferenceError> {
    let (host, port) = match registry.rsplit_once(':') {
        Some((h, p)) if !registry.starts_with('[') || h.ends_with(']') => (h, Some(p)),
        _ => (registry, None),
    };
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(err(
            input,
            format!("registry port {port:?} is not a number"),
        ));
    }
    let host_ok = !host.is_empty()
        && host.chars().all(|c| {
            c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '[' || c == ']' || c == ':'
        });
    if !host_ok {
        return Err(err(
            input,
            format!("registry host {host:?} is not a valid host name"),
        ));
    }
    Ok(())
}

/// Path components are lowercase alphanumerics separated by `.`, `_`,
/// `__` or runs of `-` (the distribution spec's grammar).
fn validate_repository(input: &str, repository: &str) -> Result<(), ReferenceError> {
    if repository.is_empty() {
        return Err(err(input, "the repository name is empty"));
    }
    for component in repository.split('/') {
        if component.is_empty() {
            return Err(err(input, "the repository has an empty path component"));
        }
        if component.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(err(input, "repository names must be lowercase"));
        }
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let mut ok = alnum(bytes[0]) && alnum(bytes[bytes.len() - 1]);
        let mut i = 0;
        while ok && i < bytes.len() {
            if alnum(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let sep = &component[start..i];
            ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        }
        if !ok {
            return Err(err(
                input,
                format!(
                    "repository component {component:?} may hold only lowercase letters, digits and single '.', '_', '__' or '-' separators"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        parse_reference(s).unwrap().to_string()
    }

    #[test]
    fn docker_hub_short_names() {
        assert_eq!(p("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(p("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(p("user/app"), "docker.io/user/app:latest");
        assert_eq!(p("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            p("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn registries_with_ports_and_localhost() {
        let r = parse_reference("127.0.0.1:5099/crust-test/busybox:zstd").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5099");
        assert_eq!(r.repository, "crust-test/busybox");
        assert_eq!(r.tag.as_deref(), Some("zstd"));
        assert_eq!(p("localhost/app"), "localhost/app:latest");
        assert_eq!(p("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(
            p("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
    }

    #[test]
    fn digests_and_tag_plus_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse_reference(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        let r = parse_reference(&format!("reg:5000/x/y:1.0@{d}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.registry, "reg:5000");
        assert_eq!(r.to_string(), format!("reg:5000/x/y:1.0@{d}"));
    }

    #[test]
    fn invalid_references_name_the_problem() {
        let cases = [
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("busybox:", "tag"),
            ("busybox:-x", "tag"),
            ("busybox@sha256:abc", "64"),
            ("busybox@md5:abc", "sha256"),
            ("a//b", "empty path component"),
            ("bad host:1/x", "spaces"),
            ("reg:99999/x", "port"),
            ("x/a..b", "separators"),
            ("x/-a", "separators"),
        ];
        for (input, problem) in cases {
            let e = parse_reference(input).unwrap_err();
            assert!(e.to_string().contains(problem), "{input:?}: {e}");
        }
        let long = format!("x/{}", "a".repeat(300));
        assert!(parse_reference(&long).unwrap_err().problem.contains("255"));
    }

    #[test]
    fn names_for_lookup_accept_ids() {
        let hex = "b".repeat(64);
        assert_eq!(
            parse_name(&hex).unwrap(),
            ImageName::Id(format!("sha256:{hex}"))
        );
        assert_eq!(
            parse_name(&format!("sha256:{hex}")).unwrap(),
            ImageName::Id(format!("sha256:{hex}"))
        );
        assert!(matches!(parse_name("busybox").unwrap(), ImageName::Ref(_)));
    }

    #[test]
    fn separators_allowed_by_the_grammar() {
        assert!(parse_reference("x/a.b_c__d---e").is_ok());
    }
}
