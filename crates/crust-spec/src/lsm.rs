//! AppArmor and SELinux: applied when the host has them, ignored with a
//! log line when it does not, and never silently dropped on a host that
//! has them (a request crust cannot honour there fails CreateContainer).
//!
//! The decision ([`labels`]) is a pure function of the request and of what
//! the host supports ([`SecurityModules`], detected once per process) and
//! has loaded (a callback, so tests need no AppArmor). It follows
//! containerd: no AppArmor request, or RuntimeDefault, means crust's
//! default profile ([`APPARMOR_DEFAULT_PROFILE`], loaded by crustd) unless
//! the container is privileged; Unconfined sets nothing; a Localhost
//! profile must already be loaded. SELinux options become the process
//! label `user:role:type:level` and the mount label
//! `user:object_r:container_file_t:level`, each part defaulting to
//! container-selinux's (`system_u`, `system_r`, `container_t`, `s0`).

#![allow(deprecated)] // LinuxContainerSecurityContext.apparmor_profile: old kubelets send it

use crust_cri_api::v1::security_profile::ProfileType;
use crust_cri_api::v1::{
    LinuxContainerSecurityContext, LinuxSandboxSecurityContext, SeLinuxOption,
};

use crate::SpecError;
use crate::error::reject_control;

/// The AppArmor profile crust gives containers that ask for RuntimeDefault
/// (or for nothing), as containerd's `cri-containerd.apparmor.d`.
pub const APPARMOR_DEFAULT_PROFILE: &str = "crust-default";

/// Which Linux security modules this host has enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecurityModules {
    pub apparmor: bool,
    pub selinux: bool,
}

impl SecurityModules {
    /// This host's, read once per process: AppArmor when
    /// `/sys/module/apparmor/parameters/enabled` says `Y` (what youki
    /// checks before applying a profile), SELinux when selinuxfs is
    /// mounted (`/sys/fs/selinux/enforce` exists).
    pub fn host() -> SecurityModules {
        static HOST: std::sync::OnceLock<SecurityModules> = std::sync::OnceLock::new();
        *HOST.get_or_init(|| {
            let host = SecurityModules {
                apparmor: std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
                    .is_ok_and(|s| s.starts_with('Y')),
                selinux: std::path::Path::new("/sys/fs/selinux/enforce").exists(),
            };
            tracing::info!(
                apparmor = host.apparmor,
                selinux = host.selinux,
                "Linux security modules on this host"
            );
            host
        })
    }
}

/// Whether AppArmor has a profile of this name loaded (the names in
/// `/sys/kernel/security/apparmor/profiles`, one `name (mode)` a line).
pub fn apparmor_profile_loaded(name: &str) -> bool {
    std::fs::read_to_string("/sys/kernel/security/apparmor/profiles")
        .is_ok_and(|list| profile_listed(&list, name))
}

fn profile_listed(list: &str, name: &str) -> bool {
    list.lines()
        .any(|l| l.rsplit_once(" (").map_or(l, |(n, _)| n) == name)
}

/// What the spec gets: `process.apparmorProfile`, `process.selinuxLabel`,
/// `linux.mountLabel`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Labels {
    pub apparmor_profile: Option<String>,
    pub selinux_label: Option<String>,
    pub mount_label: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
enum AppArmor {
    Unset,
    RuntimeDefault,
    Unconfined,
    Localhost(String),
}

fn apparmor_request(sc: &LinuxContainerSecurityContext) -> Result<AppArmor, SpecError> {
    let localhost = |field: &str, name: &str| {
        reject_control(field, name)?;
        if name.is_empty() {
            return Err(SpecError::invalid(
                field,
                name,
                "a Localhost AppArmor profile needs a profile name",
            ));
        }
        Ok(AppArmor::Localhost(name.to_string()))
    };
    if let Some(p) = &sc.apparmor {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(AppArmor::RuntimeDefault),
            Ok(ProfileType::Unconfined) => Ok(AppArmor::Unconfined),
            Ok(ProfileType::Localhost) => localhost("apparmor.localhost_ref", &p.localhost_ref),
            Err(_) => Err(SpecError::invalid(
                "apparmor.profile_type",
                p.profile_type.to_string(),
                "expected RuntimeDefault, Unconfined or Localhost",
            )),
        };
    }
    match sc.apparmor_profile.as_str() {
        "" => Ok(AppArmor::Unset),
        "runtime/default" => Ok(AppArmor::RuntimeDefault),
        "unconfined" => Ok(AppArmor::Unconfined),
        other => match other.strip_prefix("localhost/") {
            Some(name) => localhost("apparmor_profile", name),
            None => Err(SpecError::invalid(
                "apparmor_profile",
                other,
                "expected runtime/default, unconfined or localhost/<profile>",
            )),
        },
    }
}

fn apparmor_profile(
    sc: &LinuxContainerSecurityContext,
    privileged: bool,
    host: SecurityModules,
    loaded: &dyn Fn(&str) -> bool,
) -> Result<Option<String>, SpecError> {
    let request = apparmor_request(sc)?;
    if !host.apparmor {
        match &request {
            AppArmor::Localhost(name) => tracing::info!(
                profile = %name,
                "AppArmor Localhost profile requested but this host has no AppArmor; ignored"
            ),
            AppArmor::Unset => {}
            other => tracing::debug!(request = ?other, "no AppArmor on this host; ignored"),
        }
        return Ok(None);
    }
    match request {
        // Privileged containers run unconfined, as containerd's.
        AppArmor::Unset | AppArmor::RuntimeDefault if privileged => Ok(None),
        AppArmor::Unset | AppArmor::RuntimeDefault => {
            if !loaded(APPARMOR_DEFAULT_PROFILE) {
                return Err(SpecError::unsupported(
                    "apparmor",
                    "RuntimeDefault",
                    format!(
                        "AppArmor is enabled on this host but crust's default profile {APPARMOR_DEFAULT_PROFILE} is not loaded (crustd loads it with apparmor_parser; see its log); refusing to run the container unconfined"
                    ),
                ));
            }
            Ok(Some(APPARMOR_DEFAULT_PROFILE.to_string()))
        }
        AppArmor::Unconfined => Ok(None),
        AppArmor::Localhost(name) => {
            if !loaded(&name) {
                return Err(SpecError::invalid(
                    "apparmor localhost profile",
                    &name,
                    "is not loaded on this host (not in /sys/kernel/security/apparmor/profiles); load it with apparmor_parser first",
                ));
            }
            Ok(Some(name))
        }
    }
}

fn selinux_labels(
    options: Option<&SeLinuxOption>,
    privileged: bool,
    host: SecurityModules,
) -> Result<(Option<String>, Option<String>), SpecError> {
    let requested = options.filter(|o| {
        !(o.user.is_empty() && o.role.is_empty() && o.r#type.is_empty() && o.level.is_empty())
    });
    let Some(o) = requested else {
        return Ok((None, None));
    };
    if !host.selinux {
        tracing::info!(options = ?o, "SELinux options requested but this host has no SELinux; ignored");
        return Ok((None, None));
    }
    if privileged {
        // As containerd: privileged containers keep the runtime's label.
        return Ok((None, None));
    }
    for (field, v) in [
        ("selinux_options.user", &o.user),
        ("selinux_options.role", &o.role),
        ("selinux_options.type", &o.r#type),
    ] {
        reject_control(field, v)?;
        if v.contains(':') {
            return Err(SpecError::invalid(field, v, "may not contain ':'"));
        }
    }
    reject_control("selinux_options.level", &o.level)?;
    let or = |v: &str, default: &str| {
        if v.is_empty() {
            default.to_string()
        } else {
            v.to_string()
        }
    };
    let (user, level) = (or(&o.user, "system_u"), or(&o.level, "s0"));
    let process = format!(
        "{user}:{}:{}:{level}",
        or(&o.role, "system_r"),
        or(&o.r#type, "container_t")
    );
    let mount = format!("{user}:object_r:container_file_t:{level}");
    Ok((Some(process), Some(mount)))
}

/// The AppArmor profile and SELinux labels for a container. `pod_sc`'s
/// SELinux options apply when the container has none. `loaded` says
/// whether AppArmor has a profile loaded (only asked on an AppArmor host).
pub(crate) fn labels(
    sc: &LinuxContainerSecurityContext,
    pod_sc: Option<&LinuxSandboxSecurityContext>,
    privileged: bool,
    host: SecurityModules,
    loaded: &dyn Fn(&str) -> bool,
) -> Result<Labels, SpecError> {
    let apparmor_profile = apparmor_profile(sc, privileged, host, loaded)?;
    let options = sc
        .selinux_options
        .as_ref()
        .or_else(|| pod_sc.and_then(|p| p.selinux_options.as_ref()));
    let (selinux_label, mount_label) = selinux_labels(options, privileged, host)?;
    Ok(Labels {
        apparmor_profile,
        selinux_label,
        mount_label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_cri_api::v1::SecurityProfile;

    const NONE: SecurityModules = SecurityModules {
        apparmor: false,
        selinux: false,
    };
    const BOTH: SecurityModules = SecurityModules {
        apparmor: true,
        selinux: true,
    };

    fn aa(t: ProfileType, name: &str) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            apparmor: Some(SecurityProfile {
                profile_type: t as i32,
                localhost_ref: name.into(),
            }),
            ..Default::default()
        }
    }

    fn se(user: &str, role: &str, t: &str, level: &str) -> Option<SeLinuxOption> {
        Some(SeLinuxOption {
            user: user.into(),
            role: role.into(),
            r#type: t.into(),
            level: level.into(),
        })
    }

    fn only(names: &'static [&'static str]) -> impl Fn(&str) -> bool {
        move |n| names.contains(&n)
    }

    #[test]
    fn without_the_modules_nothing_is_applied() {
        let all = only(&["crust-default", "mine"]);
        for sc in [
            LinuxContainerSecurityContext::default(),
            aa(ProfileType::RuntimeDefault, ""),
            aa(ProfileType::Localhost, "mine"),
            aa(ProfileType::Localhost, "not-loaded"),
            LinuxContainerSecurityContext {
                apparmor_profile: "localhost/mine".into(),
                selinux_options: se("u", "r", "t", "s0:c1,c2"),
                ..Default::default()
            },
        ] {
            assert_eq!(
                labels(&sc, None, false, NONE, &all).unwrap(),
                Labels::default(),
                "{sc:?}"
            );
        }
        // Malformed requests are refused everywhere.
        let bad = LinuxContainerSecurityContext {
            apparmor_profile: "bogus".into(),
            ..Default::default()
        };
        assert!(labels(&bad, None, false, NONE, &all).is_err());
        assert!(labels(&aa(ProfileType::Localhost, ""), None, false, NONE, &all).is_err());
    }

    #[test]
    fn apparmor_on_a_host_that_has_it() {
        let host = SecurityModules {
            apparmor: true,
            selinux: false,
        };
        let loaded = only(&["crust-default", "mine"]);
        let profile = |sc: &LinuxContainerSecurityContext, privileged: bool| {
            labels(sc, None, privileged, host, &loaded).map(|l| l.apparmor_profile)
        };
        let default = Some("crust-default".to_string());
        assert_eq!(profile(&Default::default(), false).unwrap(), default);
        assert_eq!(
            profile(&aa(ProfileType::RuntimeDefault, ""), false).unwrap(),
            default
        );
        let old = LinuxContainerSecurityContext {
            apparmor_profile: "runtime/default".into(),
            ..Default::default()
        };
        assert_eq!(profile(&old, false).unwrap(), default);
        assert_eq!(
            profile(&aa(ProfileType::RuntimeDefault, ""), true).unwrap(),
            None
        );
        assert_eq!(
            profile(&aa(ProfileType::Unconfined, ""), false).unwrap(),
            None
        );
        let mine = Some("mine".to_string());
        assert_eq!(
            profile(&aa(ProfileType::Localhost, "mine"), false).unwrap(),
            mine
        );
        assert_eq!(
            profile(&aa(ProfileType::Localhost, "mine"), true).unwrap(),
            mine
        );
        let old = LinuxContainerSecurityContext {
            apparmor_profile: "localhost/mine".into(),
            ..Default::default()
        };
        assert_eq!(profile(&old, false).unwrap(), mine);
        // Never dropped: a profile that is not loaded fails the container.
        let e = profile(&aa(ProfileType::Localhost, "gone"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gone") && e.contains("not loaded"), "{e}");
        let nothing = only(&[]);
        let e = labels(&Default::default(), None, false, host, &nothing)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("crust-default") && e.contains("unconfined"),
            "{e}"
        );
        // ...but a privileged container never needed it.
        assert!(labels(&Default::default(), None, true, host, &nothing).is_ok());
    }

    #[test]
    fn selinux_on_a_host_that_has_it() {
        let loaded = only(&["crust-default"]);
        let sc = LinuxContainerSecurityContext {
            selinux_options: se("", "", "", "s0:c100,c200"),
            ..Default::default()
        };
        let l = labels(&sc, None, false, BOTH, &loaded).unwrap();
        assert_eq!(
            l.selinux_label.as_deref(),
            Some("system_u:system_r:container_t:s0:c100,c200")
        );
        assert_eq!(
            l.mount_label.as_deref(),
            Some("system_u:object_r:container_file_t:s0:c100,c200")
        );
        let sc = LinuxContainerSecurityContext {
            selinux_options: se("user_u", "user_r", "spc_t", ""),
            ..Default::default()
        };
        let l = labels(&sc, None, false, BOTH, &loaded).unwrap();
        assert_eq!(l.selinux_label.as_deref(), Some("user_u:user_r:spc_t:s0"));
        assert_eq!(
            l.mount_label.as_deref(),
            Some("user_u:object_r:container_file_t:s0")
        );
        // The pod's options when the container has none.
        let pod = LinuxSandboxSecurityContext {
            selinux_options: se("", "", "", "s0:c1,c2"),
            ..Default::default()
        };
        let l = labels(&Default::default(), Some(&pod), false, BOTH, &loaded).unwrap();
        assert_eq!(
            l.selinux_label.as_deref(),
            Some("system_u:system_r:container_t:s0:c1,c2")
        );
        // Privileged: the runtime's label; no options: none.
        assert_eq!(
            labels(&sc, None, true, BOTH, &loaded)
                .unwrap()
                .selinux_label,
            None
        );
        assert_eq!(
            labels(&Default::default(), None, false, BOTH, &loaded)
                .unwrap()
                .selinux_label,
            None
        );
        let bad = LinuxContainerSecurityContext {
            selinux_options: se("a:b", "", "", ""),
            ..Default::default()
        };
        assert!(labels(&bad, None, false, BOTH, &loaded).is_err());
    }

    #[test]
    fn loaded_profiles_are_read_by_name() {
        let list = "crust-default (enforce)\nmy profile (complain)\n/usr/bin/x (enforce)\n";
        assert!(profile_listed(list, "crust-default"));
        assert!(profile_listed(list, "my profile"));
        assert!(profile_listed(list, "/usr/bin/x"));
        assert!(!profile_listed(list, "crust"));
        assert!(!profile_listed("", "crust-default"));
        // This host's answer, whatever it is, does not panic.
        let _ = SecurityModules::host();
        let _ = apparmor_profile_loaded("crust-default");
    }
}
