//! The files a pod's containers see at /etc/resolv.conf, /etc/hosts and
//! /etc/hostname, written into the pod's state dir.

use std::path::Path;

use crust_cri_api::v1 as cri;

/// resolv.conf from the pod's DNS config, or the host's when it has none.
pub fn resolv_conf(dns: Option<&cri::DnsConfig>) -> std::io::Result<String> {
    let Some(dns) =
        dns.filter(|d| !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()))
    else {
        return std::fs::read_to_string("/etc/resolv.conf").or_else(|_| Ok(String::new()));
    };
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Ok(out)
}

pub fn hosts(hostname: &str) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if !hostname.is_empty() {
        out.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    out
}

/// Writes `name` in `dir`, 0644 whatever the umask or an earlier file's
/// mode: containers running as any user read these through bind mounts.
pub fn write(dir: &Path, name: &str, content: &str) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    file.write_all(content.as_bytes())?;
    Ok(path)
}

/// A DNS value must not smuggle extra lines into resolv.conf.
pub fn validate_dns(dns: Option<&cri::DnsConfig>) -> Result<(), String> {
    let Some(dns) = dns else { return Ok(()) };
    for value in dns.servers.iter().chain(&dns.searches).chain(&dns.options) {
        if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "dns_config value {value:?} contains whitespace or control characters"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_files_are_world_readable_whatever_was_there() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("hosts");
        std::fs::write(&old, "old").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = write(dir.path(), "hosts", "new\n").unwrap();
        let md = std::fs::metadata(&path).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o644);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
    }

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = cri::DnsConfig {
            servers: vec!["10.0.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(Some(&dns)).unwrap(),
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.0.0.10\noptions ndots:5\n"
        );
        let bad = cri::DnsConfig {
            servers: vec!["1.1.1.1\nnameserver 6.6.6.6".into()],
            ..Default::default()
        };
        assert!(validate_dns(Some(&bad)).is_err());
    }

    #[test]
    fn hosts_names_the_pod() {
        assert!(hosts("web-0").contains("127.0.1.1\tweb-0\n"));
        assert!(hosts("").starts_with("127.0.0.1\tlocalhost\n"));
    }
}
