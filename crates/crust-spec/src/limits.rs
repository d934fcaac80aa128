//! Limits on every list crust reads from an image config or a CRI
//! CreateContainer / RunPodSandbox request, all in one place.
//!
//! An image config may be up to 8 MiB and a CRI request up to the gRPC
//! message limit: without a bound, one image with 10^5 Env entries or one
//! pod with 10^5 mounts costs crustd seconds to minutes of CPU (and disk
//! work) inside a request. The limits are generous (far above what any
//! real workload or Kubernetes itself produces) and are checked before any
//! disk work or spec building; a list over its limit fails the request
//! with InvalidArgument ([`SpecError::TooMany`]) naming the list, its size
//! and the limit.
//!
//! Byte totals count the bytes of every entry's key and value.

use std::collections::HashMap;

use crust_cri_api::v1::{ContainerConfig, LinuxContainerResources, PodSandboxConfig};
use crust_store::ImageConfig;

use crate::SpecError;

/// Env entries, per list (image Env; CRI envs).
pub const ENV_ENTRIES: usize = 10_000;
/// Env bytes, per list: execve refuses more than ARG_MAX (2 MiB with an
/// 8 MiB stack) of args and env together anyway.
pub const ENV_BYTES: usize = 1 << 20;
/// Arguments, per list (CRI command + args; image Entrypoint + Cmd).
pub const ARGS_ENTRIES: usize = 10_000;
/// Argument bytes, per list.
pub const ARGS_BYTES: usize = 1 << 20;
/// Labels, per map (container, pod, image).
pub const LABELS_ENTRIES: usize = 1_000;
/// Annotations, per map (container, pod).
pub const ANNOTATIONS_ENTRIES: usize = 1_000;
/// Bytes of a label or annotation map, keys and values (Kubernetes
/// refuses more than 256 KiB of annotations on an object).
pub const LABELS_BYTES: usize = 256 << 10;
/// CRI mounts of a container.
pub const MOUNTS: usize = 1_000;
/// Image VOLUMEs.
pub const VOLUMES: usize = 1_000;
/// CRI devices of a container, and CDI devices of a container.
pub const DEVICES: usize = 1_000;
/// Port mappings of a pod.
pub const PORT_MAPPINGS: usize = 10_000;
/// DNS servers of a pod (glibc reads 3; kubelet passes at most 3).
pub const DNS_SERVERS: usize = 32;
/// DNS search domains of a pod (Kubernetes allows 32).
pub const DNS_SEARCHES: usize = 64;
/// DNS options of a pod.
pub const DNS_OPTIONS: usize = 64;
/// Bytes of a pod's DNS servers, searches and options together.
pub const DNS_BYTES: usize = 64 << 10;
/// Sysctls of a pod.
pub const SYSCTLS: usize = 1_000;
/// `unified` cgroup v2 entries of a container's resources.
pub const UNIFIED: usize = 1_000;
/// Hugepage limits of a container's resources.
pub const HUGEPAGE_LIMITS: usize = 64;
/// Supplemental groups (the kernel's NGROUPS_MAX).
pub const SUPPLEMENTAL_GROUPS: usize = 65_536;
/// Capabilities to add or drop, per list.
pub const CAPABILITIES: usize = 1_000;
/// Masked and read-only paths, per list.
pub const PATHS: usize = 1_000;

fn count(list: &str, actual: usize, limit: usize, unit: &'static str) -> Result<(), SpecError> {
    if actual > limit {
        return Err(SpecError::TooMany {
            list: list.to_string(),
            actual,
            limit,
            unit,
        });
    }
    Ok(())
}

fn strings<'a>(
    list: &str,
    items: impl ExactSizeIterator<Item = &'a String>,
    max_entries: usize,
    max_bytes: usize,
) -> Result<(), SpecError> {
    count(list, items.len(), max_entries, "entries")?;
    let bytes = items.map(String::len).sum();
    count(list, bytes, max_bytes, "bytes")
}

fn map(
    list: &str,
    m: &HashMap<String, String>,
    max_entries: usize,
    max_bytes: usize,
) -> Result<(), SpecError> {
    count(list, m.len(), max_entries, "entries")?;
    let bytes = m.iter().map(|(k, v)| k.len() + v.len()).sum();
    count(list, bytes, max_bytes, "bytes")
}

/// The lists of an image config: Env, Entrypoint + Cmd, Volumes, Labels.
pub fn check_image_config(image: &ImageConfig) -> Result<(), SpecError> {
    strings("image config Env", image.env.iter(), ENV_ENTRIES, ENV_BYTES)?;
    let argv = image.entrypoint.iter().chain(&image.cmd);
    count(
        "image config Entrypoint and Cmd",
        image.entrypoint.len() + image.cmd.len(),
        ARGS_ENTRIES,
        "entries",
    )?;
    count(
        "image config Entrypoint and Cmd",
        argv.map(String::len).sum(),
        ARGS_BYTES,
        "bytes",
    )?;
    count(
        "image config Volumes",
        image.volumes.len(),
        VOLUMES,
        "entries",
    )?;
    count(
        "image config Labels",
        image.labels.len(),
        LABELS_ENTRIES,
        "entries",
    )?;
    let bytes = image.labels.iter().map(|(k, v)| k.len() + v.len()).sum();
    count("image config Labels", bytes, LABELS_BYTES, "bytes")
}

/// The lists of a container's resources (CreateContainer and
/// UpdateContainerResources).
pub fn check_resources(field: &str, r: &LinuxContainerResources) -> Result<(), SpecError> {
    count(
        &format!("{field}.unified"),
        r.unified.len(),
        UNIFIED,
        "entries",
    )?;
    count(
        &format!("{field}.hugepage_limits"),
        r.hugepage_limits.len(),
        HUGEPAGE_LIMITS,
        "entries",
    )
}

/// The lists of a CRI ContainerConfig.
pub fn check_container_config(config: &ContainerConfig) -> Result<(), SpecError> {
    count("envs", config.envs.len(), ENV_ENTRIES, "entries")?;
    let env_bytes = config
        .envs
        .iter()
        .map(|kv| kv.key.len() + kv.value.len())
        .sum();
    count("envs", env_bytes, ENV_BYTES, "bytes")?;
    count(
        "command and args",
        config.command.len() + config.args.len(),
        ARGS_ENTRIES,
        "entries",
    )?;
    let arg_bytes = config
        .command
        .iter()
        .chain(&config.args)
        .map(String::len)
        .sum();
    count("command and args", arg_bytes, ARGS_BYTES, "bytes")?;
    count("mounts", config.mounts.len(), MOUNTS, "entries")?;
    count("devices", config.devices.len(), DEVICES, "entries")?;
    count("cdi_devices", config.cdi_devices.len(), DEVICES, "entries")?;
    map("labels", &config.labels, LABELS_ENTRIES, LABELS_BYTES)?;
    map(
        "annotations",
        &config.annotations,
        ANNOTATIONS_ENTRIES,
        LABELS_BYTES,
    )?;
    let Some(linux) = &config.linux else {
        return Ok(());
    };
    if let Some(r) = &linux.resources {
        check_resources("linux.resources", r)?;
    }
    if let Some(sc) = &linux.security_context {
        count(
            "linux.security_context.supplemental_groups",
            sc.supplemental_groups.len(),
            SUPPLEMENTAL_GROUPS,
            "entries",
        )?;
        if let Some(caps) = &sc.capabilities {
            for (list, v) in [
                ("add_capabilities", &caps.add_capabilities),
                ("drop_capabilities", &caps.drop_capabilities),
                ("add_ambient_capabilities", &caps.add_ambient_capabilities),
            ] {
                count(
                    &format!("linux.security_context.capabilities.{list}"),
                    v.len(),
                    CAPABILITIES,
                    "entries",
                )?;
            }
        }
        count(
            "linux.security_context.masked_paths",
            sc.masked_paths.len(),
            PATHS,
            "entries",
        )?;
        count(
            "linux.security_context.readonly_paths",
            sc.readonly_paths.len(),
            PATHS,
            "entries",
        )?;
    }
    Ok(())
}

/// The lists of a CRI PodSandboxConfig (RunPodSandbox, and the sandbox
/// config a CreateContainer carries).
pub fn check_pod_config(pod: &PodSandboxConfig) -> Result<(), SpecError> {
    map("pod labels", &pod.labels, LABELS_ENTRIES, LABELS_BYTES)?;
    map(
        "pod annotations",
        &pod.annotations,
        ANNOTATIONS_ENTRIES,
        LABELS_BYTES,
    )?;
    count(
        "port_mappings",
        pod.port_mappings.len(),
        PORT_MAPPINGS,
        "entries",
    )?;
    if let Some(dns) = &pod.dns_config {
        count(
            "dns_config.servers",
            dns.servers.len(),
            DNS_SERVERS,
            "entries",
        )?;
        count(
            "dns_config.searches",
            dns.searches.len(),
            DNS_SEARCHES,
            "entries",
        )?;
        count(
            "dns_config.options",
            dns.options.len(),
            DNS_OPTIONS,
            "entries",
        )?;
        let bytes = dns
            .servers
            .iter()
            .chain(&dns.searches)
            .chain(&dns.options)
            .map(String::len)
            .sum();
        count("dns_config", bytes, DNS_BYTES, "bytes")?;
    }
    let Some(linux) = &pod.linux else {
        return Ok(());
    };
    map("linux.sysctls", &linux.sysctls, SYSCTLS, LABELS_BYTES)?;
    for (field, r) in [
        ("linux.overhead", &linux.overhead),
        ("linux.resources", &linux.resources),
    ] {
        if let Some(r) = r {
            check_resources(field, r)?;
        }
    }
    if let Some(sc) = &linux.security_context {
        count(
            "linux.security_context.supplemental_groups",
            sc.supplemental_groups.len(),
            SUPPLEMENTAL_GROUPS,
            "entries",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_cri_api::v1::{
        Capability, CdiDevice, Device, DnsConfig, KeyValue, LinuxContainerConfig,
        LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount,
        PortMapping,
    };

    fn strs(n: usize, len: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let i = i.to_string();
                format!("{}{i}", "x".repeat(len.saturating_sub(i.len())))
            })
            .collect()
    }

    fn kv_map(n: usize, value_len: usize) -> HashMap<String, String> {
        (0..n)
            .map(|i| (format!("k{i}"), "v".repeat(value_len)))
            .collect()
    }

    /// The error names the list and the limit.
    fn refused(r: Result<(), SpecError>, list: &str, limit: usize) {
        let e = r.expect_err(list);
        assert!(matches!(e, SpecError::TooMany { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(list) && msg.contains(&limit.to_string()),
            "{list} / {limit}: {msg}"
        );
    }

    #[test]
    fn image_config_lists() {
        let ok = ImageConfig {
            env: strs(ENV_ENTRIES, 8),
            entrypoint: strs(1, 4),
            cmd: strs(ARGS_ENTRIES - 1, 4),
            volumes: strs(VOLUMES, 4),
            labels: (0..LABELS_ENTRIES)
                .map(|i| (format!("l{i}"), "x".into()))
                .collect(),
            ..Default::default()
        };
        check_image_config(&ok).unwrap();
        let env = |env| ImageConfig {
            env,
            ..Default::default()
        };
        refused(
            check_image_config(&env(strs(ENV_ENTRIES + 1, 1))),
            "image config Env",
            ENV_ENTRIES,
        );
        refused(
            check_image_config(&env(strs(2, ENV_BYTES / 2 + 1))),
            "image config Env",
            ENV_BYTES,
        );
        // The attack that stalled crustd.
        refused(
            check_image_config(&env(strs(150_000, 10))),
            "image config Env",
            ENV_ENTRIES,
        );
        refused(
            check_image_config(&ImageConfig {
                entrypoint: strs(2, 1),
                cmd: strs(ARGS_ENTRIES - 1, 1),
                ..Default::default()
            }),
            "image config Entrypoint and Cmd",
            ARGS_ENTRIES,
        );
        refused(
            check_image_config(&ImageConfig {
                cmd: strs(1, ARGS_BYTES + 1),
                ..Default::default()
            }),
            "image config Entrypoint and Cmd",
            ARGS_BYTES,
        );
        refused(
            check_image_config(&ImageConfig {
                volumes: strs(VOLUMES + 1, 4),
                ..Default::default()
            }),
            "image config Volumes",
            VOLUMES,
        );
        refused(
            check_image_config(&ImageConfig {
                labels: (0..=LABELS_ENTRIES)
                    .map(|i| (format!("l{i}"), "x".into()))
                    .collect(),
                ..Default::default()
            }),
            "image config Labels",
            LABELS_ENTRIES,
        );
        refused(
            check_image_config(&ImageConfig {
                labels: [("l".to_string(), "x".repeat(LABELS_BYTES))].into(),
                ..Default::default()
            }),
            "image config Labels",
            LABELS_BYTES,
        );
    }

    #[test]
    fn container_config_lists() {
        check_container_config(&ContainerConfig::default()).unwrap();
        let envs = |n: usize, len: usize| ContainerConfig {
            envs: (0..n)
                .map(|i| KeyValue {
                    key: format!("K{i}"),
                    value: "v".repeat(len).into(),
                })
                .collect(),
            ..Default::default()
        };
        check_container_config(&envs(ENV_ENTRIES, 1)).unwrap();
        refused(
            check_container_config(&envs(ENV_ENTRIES + 1, 1)),
            "envs",
            ENV_ENTRIES,
        );
        refused(
            check_container_config(&envs(1, ENV_BYTES)),
            "envs",
            ENV_BYTES,
        );
        refused(
            check_container_config(&ContainerConfig {
                command: strs(1, 1),
                args: strs(ARGS_ENTRIES, 1),
                ..Default::default()
            }),
            "command and args",
            ARGS_ENTRIES,
        );
        refused(
            check_container_config(&ContainerConfig {
                args: strs(1, ARGS_BYTES + 1),
                ..Default::default()
            }),
            "command and args",
            ARGS_BYTES,
        );
        refused(
            check_container_config(&ContainerConfig {
                mounts: vec![Mount::default(); MOUNTS + 1],
                ..Default::default()
            }),
            "mounts",
            MOUNTS,
        );
        refused(
            check_container_config(&ContainerConfig {
                devices: vec![Device::default(); DEVICES + 1],
                ..Default::default()
            }),
            "devices",
            DEVICES,
        );
        refused(
            check_container_config(&ContainerConfig {
                cdi_devices: vec![CdiDevice::default(); DEVICES + 1],
                ..Default::default()
            }),
            "cdi_devices",
            DEVICES,
        );
        refused(
            check_container_config(&ContainerConfig {
                labels: kv_map(LABELS_ENTRIES + 1, 1),
                ..Default::default()
            }),
            "labels",
            LABELS_ENTRIES,
        );
        refused(
            check_container_config(&ContainerConfig {
                annotations: kv_map(ANNOTATIONS_ENTRIES + 1, 1),
                ..Default::default()
            }),
            "annotations",
            ANNOTATIONS_ENTRIES,
        );
        refused(
            check_container_config(&ContainerConfig {
                annotations: kv_map(2, LABELS_BYTES / 2),
                ..Default::default()
            }),
            "annotations",
            LABELS_BYTES,
        );
        let linux = |l: LinuxContainerConfig| ContainerConfig {
            linux: Some(l),
            ..Default::default()
        };
        refused(
            check_container_config(&linux(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    unified: kv_map(UNIFIED + 1, 1),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            "linux.resources.unified",
            UNIFIED,
        );
        let sc = |sc: LinuxContainerSecurityContext| {
            linux(LinuxContainerConfig {
                security_context: Some(sc),
                ..Default::default()
            })
        };
        refused(
            check_container_config(&sc(LinuxContainerSecurityContext {
                supplemental_groups: vec![1; SUPPLEMENTAL_GROUPS + 1],
                ..Default::default()
            })),
            "supplemental_groups",
            SUPPLEMENTAL_GROUPS,
        );
        refused(
            check_container_config(&sc(LinuxContainerSecurityContext {
                capabilities: Some(Capability {
                    add_capabilities: strs(CAPABILITIES + 1, 1),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            "add_capabilities",
            CAPABILITIES,
        );
        refused(
            check_container_config(&sc(LinuxContainerSecurityContext {
                masked_paths: strs(PATHS + 1, 1),
                ..Default::default()
            })),
            "masked_paths",
            PATHS,
        );
    }

    #[test]
    fn pod_config_lists() {
        check_pod_config(&PodSandboxConfig::default()).unwrap();
        refused(
            check_pod_config(&PodSandboxConfig {
                labels: kv_map(LABELS_ENTRIES + 1, 1),
                ..Default::default()
            }),
            "pod labels",
            LABELS_ENTRIES,
        );
        refused(
            check_pod_config(&PodSandboxConfig {
                annotations: kv_map(ANNOTATIONS_ENTRIES + 1, 1),
                ..Default::default()
            }),
            "pod annotations",
            ANNOTATIONS_ENTRIES,
        );
        refused(
            check_pod_config(&PodSandboxConfig {
                port_mappings: vec![PortMapping::default(); PORT_MAPPINGS + 1],
                ..Default::default()
            }),
            "port_mappings",
            PORT_MAPPINGS,
        );
        let dns = |d: DnsConfig| PodSandboxConfig {
            dns_config: Some(d),
            ..Default::default()
        };
        check_pod_config(&dns(DnsConfig {
            servers: strs(3, 8),
            searches: strs(6, 8),
            options: strs(2, 8),
        }))
        .unwrap();
        refused(
            check_pod_config(&dns(DnsConfig {
                servers: strs(DNS_SERVERS + 1, 1),
                ..Default::default()
            })),
            "dns_config.servers",
            DNS_SERVERS,
        );
        refused(
            check_pod_config(&dns(DnsConfig {
                searches: strs(DNS_SEARCHES + 1, 1),
                ..Default::default()
            })),
            "dns_config.searches",
            DNS_SEARCHES,
        );
        refused(
            check_pod_config(&dns(DnsConfig {
                options: strs(DNS_OPTIONS + 1, 1),
                ..Default::default()
            })),
            "dns_config.options",
            DNS_OPTIONS,
        );
        refused(
            check_pod_config(&dns(DnsConfig {
                searches: strs(1, DNS_BYTES + 1),
                ..Default::default()
            })),
            "dns_config",
            DNS_BYTES,
        );
        let linux = |l: LinuxPodSandboxConfig| PodSandboxConfig {
            linux: Some(l),
            ..Default::default()
        };
        refused(
            check_pod_config(&linux(LinuxPodSandboxConfig {
                sysctls: kv_map(SYSCTLS + 1, 1),
                ..Default::default()
            })),
            "linux.sysctls",
            SYSCTLS,
        );
        refused(
            check_pod_config(&linux(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    supplemental_groups: vec![1; SUPPLEMENTAL_GROUPS + 1],
                    ..Default::default()
                }),
                ..Default::default()
            })),
            "supplemental_groups",
            SUPPLEMENTAL_GROUPS,
        );
        refused(
            check_pod_config(&linux(LinuxPodSandboxConfig {
                overhead: Some(LinuxContainerResources {
                    unified: kv_map(UNIFIED + 1, 1),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            "linux.overhead.unified",
            UNIFIED,
        );
    }
}
