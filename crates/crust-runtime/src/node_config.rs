//! What kubelet tells the runtime about its node through
//! UpdateRuntimeConfig: today the node's pod CIDRs. Kept in
//! `<state>/node-config.json` so that pods started after a crustd restart
//! get the same ranges before kubelet sends them again.
//!
//! CNI plugins that declare the `ipRanges` capability (host-local does)
//! get the CIDRs in their `runtimeConfig`, one range set per CIDR, as the
//! CNI conventions describe; plugins that do not declare it see nothing.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::RuntimeError;

const FILE: &str = "node-config.json";

/// A node has one pod CIDR per IP family (dual-stack: two).
const MAX_POD_CIDRS: usize = 2;

/// Two IPv6 CIDRs and a comma fit in 87 bytes; anything much longer is
/// refused before it is parsed or echoed in an error.
const MAX_POD_CIDR_LEN: usize = 128;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// The node's pod CIDRs, in kubelet's order (empty until sent).
    #[serde(default)]
    pub pod_cidrs: Vec<String>,
}

fn path(state: &Path) -> PathBuf {
    state.join(FILE)
}

/// The stored node config; an unreadable file is logged and ignored
/// (kubelet sends the CIDR again at its start).
pub(crate) fn load(state: &Path) -> NodeConfig {
    match std::fs::read(path(state)) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path(state).display(), error = %e, "ignoring an undecodable node config");
            NodeConfig::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => NodeConfig::default(),
        Err(e) => {
            tracing::warn!(path = %path(state).display(), error = %e, "ignoring an unreadable node config");
            NodeConfig::default()
        }
    }
}

/// Writes the node config atomically (a private temp file, renamed).
pub(crate) fn store(state: &Path, config: &NodeConfig) -> Result<(), RuntimeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = state.join(format!("{FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&serde_json::to_vec(config).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path(state))
    };
    write().map_err(|e| RuntimeError::Internal(format!("writing {}: {e}", path(state).display())))
}

/// Parses kubelet's `pod_cidr` ("10.244.1.0/24", or dual-stack
/// "10.244.1.0/24,fd00:1::/64"; empty clears it).
pub fn parse_pod_cidrs(value: &str) -> Result<Vec<String>, RuntimeError> {
    let bad = |cidr: &str, why: &str| {
        RuntimeError::InvalidArgument(format!(
            "runtime_config.network_config.pod_cidr {cidr:?}: {why}"
        ))
    };
    if value.len() > MAX_POD_CIDR_LEN {
        return Err(RuntimeError::InvalidArgument(format!(
            "runtime_config.network_config.pod_cidr is {} bytes, over the {MAX_POD_CIDR_LEN} byte limit",
            value.len()
        )));
    }
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    let cidrs: Vec<&str> = value.split(',').map(str::trim).collect();
    if cidrs.len() > MAX_POD_CIDRS {
        return Err(bad(
            value,
            "a node has at most one pod CIDR per IP family (2)",
        ));
    }
    let mut families = Vec::new();
    for cidr in &cidrs {
        let (addr, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| bad(cidr, "is not ADDRESS/PREFIX"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad(cidr, "is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(p) if p <= max => {}
            _ => return Err(bad(cidr, &format!("prefix must be 0..={max}"))),
        }
        if families.contains(&addr.is_ipv4()) {
            return Err(bad(value, "two CIDRs of the same IP family"));
        }
        families.push(addr.is_ipv4());
    }
    Ok(cidrs.into_iter().map(String::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cidrs_parse_single_and_dual_stack_and_refuse_nonsense() {
        assert_eq!(parse_pod_cidrs("10.244.1.0/24").unwrap(), ["10.244.1.0/24"]);
        assert_eq!(
            parse_pod_cidrs("10.244.1.0/24, fd00:1::/64").unwrap(),
            ["10.244.1.0/24", "fd00:1::/64"]
        );
        assert!(parse_pod_cidrs("").unwrap().is_empty());
        for bad in [
            "10.244.1.0",
            "10.244.1.0/33",
            "fd00::/129",
            "banana/8",
            "10.0.0.0/8,10.1.0.0/16",
            "10.0.0.0/8,fd00::/64,fd01::/64",
        ] {
            let err = parse_pod_cidrs(bad).unwrap_err();
            assert!(
                matches!(err, RuntimeError::InvalidArgument(_)),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_node_config_survives_a_reload_and_its_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), NodeConfig::default());
        let config = NodeConfig {
            pod_cidrs: vec!["10.244.1.0/24".into()],
        };
        store(dir.path(), &config).unwrap();
        assert_eq!(load(dir.path()), config);
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert_eq!(load(dir.path()), NodeConfig::default());
    }
}
