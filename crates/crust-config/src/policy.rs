//! `images.policy`: which images may be pulled, by registry, namespace or
//! repository, and whose cosign signatures they must carry.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    pub policy: PolicyConfig,
}

/// An ordered list of scopes, the most specific matching one deciding;
/// `default` for images no scope matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    pub default: DefaultRule,
    pub scopes: Vec<ScopeConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultRule {
    #[default]
    Accept,
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Accept,
    Reject,
    /// Signed (cosign) by at least one of `keys`.
    SignedBy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeConfig {
    /// `registry`, `registry/namespace` or `registry/repo`; a leading
    /// `*.` matches every subdomain of a registry host.
    pub scope: String,
    pub rule: Rule,
    /// cosign public keys (PEM: ECDSA P-256, Ed25519, RSA) for `signed_by`.
    #[serde(default)]
    pub keys: Vec<PathBuf>,
}

/// Most scopes a policy may list.
pub const MAX_SCOPES: usize = 1024;
/// Most keys one scope may list.
pub const MAX_KEYS: usize = 64;

impl PolicyConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.scopes.len() > MAX_SCOPES {
            return Err(format!(
                "images.policy.scopes lists {} scopes; at most {MAX_SCOPES}",
                self.scopes.len()
            ));
        }
        for (i, s) in self.scopes.iter().enumerate() {
            let at = format!("images.policy.scopes[{i}] ({:?})", s.scope);
            validate_scope(&s.scope).map_err(|e| format!("{at}: {e}"))?;
            match s.rule {
                Rule::SignedBy if s.keys.is_empty() => {
                    return Err(format!("{at}: signed_by needs at least one key"));
                }
                Rule::SignedBy if s.keys.len() > MAX_KEYS => {
                    return Err(format!("{at}: at most {MAX_KEYS} keys"));
                }
                Rule::Accept | Rule::Reject if !s.keys.is_empty() => {
                    return Err(format!("{at}: keys belong to signed_by scopes only"));
                }
                _ => {}
            }
            if let Some(k) = s.keys.iter().find(|k| !k.is_absolute()) {
                return Err(format!("{at}: key {k:?} must be an absolute path"));
            }
            if self.scopes[..i].iter().any(|o| o.scope == s.scope) {
                return Err(format!("{at}: listed twice"));
            }
        }
        Ok(())
    }
}

/// A scope is a registry host (optionally `*.` before it) and path
/// components, without a tag or digest.
fn validate_scope(scope: &str) -> Result<(), String> {
    let (host, path) = scope.split_once('/').unwrap_or((scope, ""));
    let host = host.strip_prefix("*.").unwrap_or(host);
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    {
        return Err("not a registry host".into());
    }
    if scope.starts_with("*.") && !path.is_empty() {
        return Err("a wildcard scope names hosts only".into());
    }
    if scope.contains('@') || path.contains(':') {
        return Err("a scope names no tag or digest".into());
    }
    if !path.is_empty()
        && path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("empty or dot path component".into());
    }
    Ok(())
}

/// A registry host as the policy compares it: lowercase, a port as its
/// number and none for 443, Docker Hub's API hosts as `docker.io`; so no
/// other spelling of a host reaches it past its scope.
pub fn canonical_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (name.ends_with(']') || !name.contains(':')) =>
        {
            (name.to_string(), port.parse::<u32>().ok())
        }
        _ => (host.clone(), None),
    };
    let name = match name.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => name,
    };
    match port {
        None | Some(443) => name,
        Some(p) => format!("{name}:{p}"),
    }
}

/// Whether `scope` covers the image `host/repository`, and how specific it
/// is: longer exact scopes first, any exact scope before a wildcard.
pub fn scope_matches(scope: &str, host: &str, repository: &str) -> Option<(bool, usize)> {
    let host = canonical_host(host);
    let (scope_host, scope_path) = scope.split_once('/').unwrap_or((scope, ""));
    let scope = if scope_path.is_empty() {
        canonical_host(scope_host)
    } else {
        format!("{}/{scope_path}", canonical_host(scope_host))
    };
    let scope = scope.as_str();
    if let Some(suffix) = scope.strip_prefix("*.") {
        let host_only = host.split(':').next().unwrap_or(&host);
        return host_only
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1)
            .then_some((false, suffix.len()));
    }
    let image = format!("{host}/{repository}");
    let covered = image == scope
        || image
            .strip_prefix(scope)
            .is_some_and(|rest| rest.starts_with('/'));
    covered.then_some((true, scope.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Result<(), String> {
        serde_yaml_ng::from_str::<PolicyConfig>(yaml)
            .map_err(|e| e.to_string())?
            .validate()
    }

    #[test]
    fn scopes_cover_registries_namespaces_and_repositories() {
        assert_eq!(scope_matches("r.io", "r.io", "team/app"), Some((true, 4)));
        assert_eq!(
            scope_matches("r.io/team", "r.io", "team/app"),
            Some((true, 9))
        );
        assert!(scope_matches("r.io/team/app", "r.io", "team/app").is_some());
        assert!(scope_matches("r.io/te", "r.io", "team/app").is_none());
        assert!(scope_matches("r.io/team/app/x", "r.io", "team/app").is_none());
        assert!(scope_matches("*.example.com", "reg.example.com", "a").is_some());
        assert!(scope_matches("*.example.com", "reg.example.com:5000", "a").is_some());
        assert!(scope_matches("*.example.com", "example.com", "a").is_none());
        assert!(scope_matches("*.example.com", "badexample.com", "a").is_none());
        // Specificity: exact beats wildcard, longer beats shorter.
        assert!(
            scope_matches("r.io/team", "r.io", "team/x") > scope_matches("r.io", "r.io", "team/x")
        );
        assert!(
            scope_matches("a.example.com", "a.example.com", "x")
                > scope_matches("*.example.com", "a.example.com", "x")
        );
    }

    #[test]
    fn other_spellings_of_a_host_are_the_same_host() {
        for host in ["R.IO", "r.io:443", "r.io:0443"] {
            assert!(
                scope_matches("r.io/team", host, "team/app").is_some(),
                "{host}"
            );
        }
        assert!(scope_matches("r.io", "r.io:5000", "a").is_none());
        assert!(scope_matches("127.0.0.1:5099", "127.0.0.1:05099", "a").is_some());
        for host in ["registry-1.docker.io", "index.docker.io", "Docker.IO"] {
            assert!(
                scope_matches("docker.io", host, "library/busybox").is_some(),
                "{host}"
            );
        }
        assert!(scope_matches("*.example.com", "REG.Example.com:443", "a").is_some());
        assert_eq!(canonical_host("[::1]:5000"), "[::1]:5000");
    }

    #[test]
    fn bad_policies_are_refused_naming_the_scope() {
        policy("scopes:\n  - {scope: r.io/team, rule: signed_by, keys: [/k.pub]}\n  - {scope: docker.io, rule: reject}\n").unwrap();
        let e = policy("scopes:\n  - {scope: r.io, rule: signed_by}\n").unwrap_err();
        assert!(
            e.contains("scopes[0]") && e.contains("at least one key"),
            "{e}"
        );
        let e = policy("scopes:\n  - {scope: r.io, rule: reject, keys: [/k]}\n").unwrap_err();
        assert!(e.contains("signed_by scopes only"), "{e}");
        let e = policy("scopes:\n  - {scope: 'r.io/app:latest', rule: reject}\n").unwrap_err();
        assert!(e.contains("no tag or digest"), "{e}");
        let e = policy("scopes:\n  - {scope: r.io, rule: signed_by, keys: [k.pub]}\n").unwrap_err();
        assert!(e.contains("absolute"), "{e}");
        assert!(policy("default: maybe\n").is_err());
        assert!(policy("scopes:\n  - {scope: r.io, rule: trust_me}\n").is_err());
    }
}
