//! Seccomp: profile choice (container, then pod, else unconfined) and
//! Docker-format profiles (`archMap`, `includes`/`excludes` on caps,
//! arches and minKernel) turned into the OCI form.

use std::path::Path;

use crust_cri_api::v1::security_profile::ProfileType;
use crust_cri_api::v1::{LinuxContainerSecurityContext, PodSandboxConfig, SecurityProfile};
use oci_spec::runtime::{
    Arch, Capabilities, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscallBuilder,
};
use serde::Deserialize;

use crate::SpecError;
use crate::security::parse_cap;

/// crust's RuntimeDefault profile: Docker/moby's default profile (Apache-2.0)
/// with the io_uring syscalls removed, as containerd and moby now do. It
/// refuses unshare/setns/mount and namespace-creating clone flags unless
/// the container holds CAP_SYS_ADMIN.
const DEFAULT_PROFILE: &str = include_str!("seccomp_default.json");

/// Localhost profiles larger than this are refused.
const MAX_PROFILE_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Choice {
    Unconfined,
    RuntimeDefault,
    Localhost(String),
}

fn from_profile(field: &str, p: &SecurityProfile) -> Result<Choice, SpecError> {
    match ProfileType::try_from(p.profile_type) {
        Ok(ProfileType::RuntimeDefault) => Ok(Choice::RuntimeDefault),
        Ok(ProfileType::Unconfined) => Ok(Choice::Unconfined),
        Ok(ProfileType::Localhost) => Ok(Choice::Localhost(p.localhost_ref.clone())),
        Err(_) => Err(SpecError::invalid(
            field,
            p.profile_type.to_string(),
            "expected RuntimeDefault, Unconfined or Localhost",
        )),
    }
}

/// The deprecated string form: runtime/default, docker/default,
/// unconfined, localhost/<absolute path>.
fn from_path(field: &str, s: &str) -> Result<Choice, SpecError> {
    match s {
        "runtime/default" | "docker/default" => Ok(Choice::RuntimeDefault),
        "unconfined" => Ok(Choice::Unconfined),
        _ => match s.strip_prefix("localhost/") {
            Some(p) => Ok(Choice::Localhost(p.to_string())),
            None => Err(SpecError::invalid(
                field,
                s,
                "expected runtime/default, unconfined or localhost/<path>",
            )),
        },
    }
}

/// Container's profile, else the pod's, else unconfined: the CRI's meaning
/// of no profile, which the conformance suite checks and containerd
/// follows. kubelet always sends one (RuntimeDefault with seccompDefault).
pub(crate) fn choose(
    sc: Option<&LinuxContainerSecurityContext>,
    pod: &PodSandboxConfig,
) -> Result<Choice, SpecError> {
    #[allow(deprecated)]
    if let Some(sc) = sc {
        if let Some(p) = &sc.seccomp {
            return from_profile("seccomp", p);
        }
        if !sc.seccomp_profile_path.is_empty() {
            return from_path("seccomp_profile_path", &sc.seccomp_profile_path);
        }
    }
    #[allow(deprecated)]
    if let Some(psc) = pod.linux.as_ref().and_then(|l| l.security_context.as_ref()) {
        if let Some(p) = &psc.seccomp {
            return from_profile("pod seccomp", p);
        }
        if !psc.seccomp_profile_path.is_empty() {
            return from_path("pod seccomp_profile_path", &psc.seccomp_profile_path);
        }
    }
    Ok(Choice::Unconfined)
}

/// The Docker profile format (what kubelet's Localhost profiles use).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: Option<LinuxSeccompAction>,
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<Arch>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    flags: Vec<LinuxSeccompFilterFlag>,
    listener_path: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<Syscall>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Option<Vec<Arch>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Syscall {
    name: Option<String>,
    #[serde(default)]
    names: Vec<String>,
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<Arg>>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: usize,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: LinuxSeccompOperator,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    min_kernel: Option<String>,
}

/// What a profile's conditions are evaluated against.
pub(crate) struct Host {
    /// GOARCH-style name as profiles use ("amd64", "arm64", ...).
    pub arch: &'static str,
    pub seccomp_arch: Option<Arch>,
    pub kernel: (u32, u32),
}

impl Host {
    pub(crate) fn current() -> Host {
        let (arch, seccomp_arch) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", Some(Arch::ScmpArchX86_64)),
            "aarch64" => ("arm64", Some(Arch::ScmpArchAarch64)),
            "x86" => ("386", Some(Arch::ScmpArchX86)),
            "arm" => ("arm", Some(Arch::ScmpArchArm)),
            "s390x" => ("s390x", Some(Arch::ScmpArchS390x)),
            "powerpc64" => ("ppc64le", Some(Arch::ScmpArchPpc64le)),
            "riscv64" => ("riscv64", Some(Arch::ScmpArchRiscv64)),
            "loongarch64" => ("loong64", Some(Arch::ScmpArchLoongarch64)),
            other => (other, None),
        };
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        Host {
            arch,
            seccomp_arch,
            kernel: parse_kernel(&release).unwrap_or((0, 0)),
        }
    }
}

fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

fn reject(profile: &str, reason: impl Into<String>) -> SpecError {
    SpecError::Seccomp {
        profile: profile.to_string(),
        reason: reason.into(),
    }
}

/// Turns a Docker-format profile into the OCI form for this container's
/// capability set (bounding) and host.
pub(crate) fn convert(
    profile_name: &str,
    json: &str,
    caps: &Capabilities,
    host: &Host,
) -> Result<LinuxSeccomp, SpecError> {
    let p: Profile = serde_json::from_str(json)
        .map_err(|e| reject(profile_name, format!("invalid profile JSON: {e}")))?;
    let default_action = p
        .default_action
        .ok_or_else(|| reject(profile_name, "defaultAction is missing"))?;
    if default_action == LinuxSeccompAction::ScmpActNotify || p.listener_path.is_some() {
        return Err(reject(
            profile_name,
            "SCMP_ACT_NOTIFY and listenerPath are not supported",
        ));
    }
    if !p.architectures.is_empty() && p.arch_map.is_some() {
        return Err(reject(
            profile_name,
            "'architectures' and 'archMap' are both set",
        ));
    }
    let mut arches = p.architectures.clone();
    for m in p.arch_map.iter().flatten() {
        if Some(m.architecture) == host.seccomp_arch {
            arches.push(m.architecture);
            arches.extend(m.sub_architectures.iter().flatten().copied());
        }
    }

    let has = |cap: &str| -> Result<bool, SpecError> {
        let c = parse_cap("seccomp includes/excludes caps", cap)
            .map_err(|_| reject(profile_name, format!("unknown capability {cap:?}")))?;
        Ok(caps.contains(&c))
    };
    let kernel_at_least = |v: &str| -> Result<bool, SpecError> {
        let want =
            parse_kernel(v).ok_or_else(|| reject(profile_name, format!("bad minKernel {v:?}")))?;
        Ok(host.kernel >= want)
    };

    let mut rules = Vec::new();
    for (i, s) in p.syscalls.into_iter().flatten().enumerate() {
        let mut names = s.names;
        if let Some(n) = s.name {
            if !names.is_empty() {
                return Err(reject(
                    profile_name,
                    format!("syscalls[{i}] sets both name and names"),
                ));
            }
            names.push(n);
        }
        if names.is_empty() {
            return Err(reject(
                profile_name,
                format!("syscalls[{i}] names no syscall"),
            ));
        }
        if let Some(n) = names
            .iter()
            .find(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            return Err(reject(
                profile_name,
                format!("syscalls[{i}] has a bad syscall name {n:?}"),
            ));
        }
        if s.action == LinuxSeccompAction::ScmpActNotify {
            return Err(reject(
                profile_name,
                format!("syscalls[{i}] uses SCMP_ACT_NOTIFY, which is not supported"),
            ));
        }
        // Includes: all must hold. Excludes: any one holding drops the rule.
        let inc = s.includes.unwrap_or_default();
        if let Some(cs) = &inc.caps {
            let mut all = true;
            for c in cs {
                all &= has(c)?;
            }
            if !all {
                continue;
            }
        }
        if inc
            .arches
            .as_ref()
            .is_some_and(|a| !a.iter().any(|a| a == host.arch))
        {
            continue;
        }
        if let Some(k) = &inc.min_kernel
            && !kernel_at_least(k)?
        {
            continue;
        }
        let exc = s.excludes.unwrap_or_default();
        if let Some(cs) = &exc.caps {
            let mut any = false;
            for c in cs {
                any |= has(c)?;
            }
            if any {
                continue;
            }
        }
        if exc
            .arches
            .as_ref()
            .is_some_and(|a| a.iter().any(|a| a == host.arch))
        {
            continue;
        }
        if let Some(k) = &exc.min_kernel
            && kernel_at_least(k)?
        {
            continue;
        }

        let mut rule = LinuxSyscallBuilder::default().names(names).action(s.action);
        if let Some(e) = s.errno_ret {
            rule = rule.errno_ret(e);
        }
        if let Some(args) = s.args {
            if args.len() > 6 || args.iter().any(|a| a.index > 5) {
                return Err(reject(
                    profile_name,
                    format!("syscalls[{i}] has an argument index over 5"),
                ));
            }
            let mut out = Vec::with_capacity(args.len());
            for a in args {
                let mut b = LinuxSeccompArgBuilder::default()
                    .index(a.index)
                    .value(a.value)
                    .op(a.op);
                if a.value_two != 0 {
                    b = b.value_two(a.value_two);
                }
                out.push(b.build()?);
            }
            rule = rule.args(out);
        }
        rules.push(rule.build()?);
    }

    let mut b = LinuxSeccompBuilder::default()
        .default_action(default_action)
        .syscalls(rules);
    if let Some(e) = p.default_errno_ret {
        b = b.default_errno_ret(e);
    }
    if !arches.is_empty() {
        b = b.architectures(arches);
    }
    if !p.flags.is_empty() {
        b = b.flags(p.flags);
    }
    Ok(b.build()?)
}

/// The OCI seccomp section, or None for unconfined. Privileged containers
/// are unconfined (as containerd). Localhost reads the file now, so a
/// missing or invalid profile fails CreateContainer.
pub(crate) fn seccomp(
    choice: &Choice,
    privileged: bool,
    caps: &Capabilities,
    host: &Host,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if privileged {
        return Ok(None);
    }
    match choice {
        Choice::Unconfined => Ok(None),
        Choice::RuntimeDefault => convert("RuntimeDefault", DEFAULT_PROFILE, caps, host).map(Some),
        Choice::Localhost(path) => {
            if !path.starts_with('/') || path.contains('\0') {
                return Err(reject(path, "a Localhost profile must be an absolute path"));
            }
            let json = read_profile(Path::new(path)).map_err(|e| reject(path, e))?;
            convert(path, &json, caps, host).map(Some)
        }
    }
}

fn read_profile(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let md = f.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !md.is_file() {
        return Err("not a regular file".into());
    }
    let mut s = String::new();
    f.take(MAX_PROFILE_BYTES + 1)
        .read_to_string(&mut s)
        .map_err(|e| format!("cannot read: {e}"))?;
    if s.len() as u64 > MAX_PROFILE_BYTES {
        return Err(format!("larger than {MAX_PROFILE_BYTES} bytes"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::capabilities;
    use crust_cri_api::v1::{
        Capability as CriCaps, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    };
    use std::io::Write;

    fn amd64() -> Host {
        Host {
            arch: "amd64",
            seccomp_arch: Some(Arch::ScmpArchX86_64),
            kernel: (6, 1),
        }
    }

    fn default_caps() -> Capabilities {
        capabilities(None, false).unwrap().set
    }

    fn allowed(s: &LinuxSeccomp, name: &str) -> Vec<(LinuxSeccompAction, usize)> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().iter().any(|n| n == name))
            .map(|r| (r.action(), r.args().as_ref().map_or(0, |a| a.len())))
            .collect()
    }

    fn unconditional_allow(s: &LinuxSeccomp, name: &str) -> bool {
        allowed(s, name).contains(&(LinuxSeccompAction::ScmpActAllow, 0))
    }

    #[test]
    fn default_profile_blocks_io_uring_and_namespaces() {
        let s = convert("RuntimeDefault", DEFAULT_PROFILE, &default_caps(), &amd64()).unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(1));
        assert_eq!(
            s.architectures().clone().unwrap(),
            [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        for blocked in [
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "unshare",
            "setns",
            "mount",
            "bpf",
            "keyctl",
            "add_key",
            "kexec_load",
            "open_by_handle_at",
            "init_module",
            "userfaultfd",
        ] {
            assert!(
                allowed(&s, blocked).is_empty(),
                "{blocked} must not be allowed"
            );
        }
        for ok in [
            "read",
            "write",
            "execve",
            "chroot",
            "arch_prctl",
            "ptrace",
            "openat2",
        ] {
            assert!(unconditional_allow(&s, ok), "{ok} must be allowed");
        }
        // clone only without namespace flags; clone3 answers ENOSYS.
        let clone = allowed(&s, "clone");
        assert_eq!(clone, [(LinuxSeccompAction::ScmpActAllow, 1)]);
        let rule = s
            .syscalls()
            .iter()
            .flatten()
            .find(|r| r.names() == &["clone".to_string()])
            .unwrap();
        let arg = &rule.args().as_ref().unwrap()[0];
        assert_eq!(
            (arg.index(), arg.value(), arg.op()),
            (0, 0x7E020000, LinuxSeccompOperator::ScmpCmpMaskedEq)
        );
        let clone3 = s
            .syscalls()
            .iter()
            .flatten()
            .find(|r| r.names() == &["clone3".to_string()])
            .unwrap();
        assert_eq!(
            (clone3.action(), clone3.errno_ret()),
            (LinuxSeccompAction::ScmpActErrno, Some(38))
        );
        // socket without AF_VSOCK; personality only for a few values.
        assert_eq!(
            allowed(&s, "socket"),
            [(LinuxSeccompAction::ScmpActAllow, 1)]
        );
        assert!(allowed(&s, "personality").iter().all(|(_, n)| *n == 1));
        // s390-only and arm-only rules are absent on amd64.
        assert!(allowed(&s, "s390_runtime_instr").is_empty() && allowed(&s, "set_tls").is_empty());
    }

    #[test]
    fn default_profile_follows_capabilities() {
        let mut caps = default_caps();
        caps.insert(oci_spec::runtime::Capability::SysAdmin);
        let s = convert("RuntimeDefault", DEFAULT_PROFILE, &caps, &amd64()).unwrap();
        for name in ["unshare", "setns", "mount", "clone", "clone3"] {
            assert!(unconditional_allow(&s, name), "{name} with CAP_SYS_ADMIN");
        }
        // The masked clone and ENOSYS clone3 rules go away with SYS_ADMIN.
        assert!(
            !allowed(&s, "clone3")
                .iter()
                .any(|(a, _)| *a == LinuxSeccompAction::ScmpActErrno)
        );
        assert!(
            allowed(&s, "io_uring_setup").is_empty(),
            "io_uring stays blocked"
        );

        let mut dropped = default_caps();
        dropped.remove(&oci_spec::runtime::Capability::SysChroot);
        let s = convert("RuntimeDefault", DEFAULT_PROFILE, &dropped, &amd64()).unwrap();
        assert!(allowed(&s, "chroot").is_empty());

        // Old kernels lose the minKernel 4.8 ptrace rule.
        let old = Host {
            kernel: (4, 4),
            ..amd64()
        };
        let s = convert("RuntimeDefault", DEFAULT_PROFILE, &default_caps(), &old).unwrap();
        assert!(allowed(&s, "ptrace").is_empty());
    }

    fn write_profile(body: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(body.as_bytes()).unwrap();
        f
    }

    #[test]
    fn localhost_profiles() {
        let f = write_profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                            {"name":"chmod","action":"SCMP_ACT_ERRNO","args":null,"includes":null,"comment":"x"}]}"#,
        );
        let path = f.path().to_str().unwrap().to_string();
        let s = seccomp(
            &Choice::Localhost(path.clone()),
            false,
            &default_caps(),
            &amd64(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(
            allowed(&s, "mkdirat"),
            [(LinuxSeccompAction::ScmpActErrno, 0)]
        );
        assert_eq!(
            allowed(&s, "chmod"),
            [(LinuxSeccompAction::ScmpActErrno, 0)]
        );

        let missing = seccomp(
            &Choice::Localhost("/nonexistent/profile.json".into()),
            false,
            &default_caps(),
            &amd64(),
        );
        let e = missing.unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/profile.json") && e.contains("cannot open"),
            "{e}"
        );
        let rel = seccomp(
            &Choice::Localhost("profiles/x.json".into()),
            false,
            &default_caps(),
            &amd64(),
        );
        assert!(rel.unwrap_err().to_string().contains("absolute"));

        for bad in [
            "not json",
            "{}",
            r#"{"defaultAction":"SCMP_ACT_BOGUS"}"#,
            r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"action":"SCMP_ACT_ERRNO"}]}"#,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["a b"],"action":"SCMP_ACT_ERRNO"}]}"#,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["x"],"action":"SCMP_ACT_NOTIFY"}]}"#,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["x"],"action":"SCMP_ACT_ERRNO","includes":{"caps":["CAP_BOGUS"]}}]}"#,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["x"],"action":"SCMP_ACT_ERRNO","args":[{"index":9,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],"archMap":[]}"#,
        ] {
            let f = write_profile(bad);
            let choice = Choice::Localhost(f.path().to_str().unwrap().into());
            assert!(
                seccomp(&choice, false, &default_caps(), &amd64()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn unconfined_and_privileged() {
        assert!(
            seccomp(&Choice::Unconfined, false, &default_caps(), &amd64())
                .unwrap()
                .is_none()
        );
        assert!(
            seccomp(&Choice::RuntimeDefault, true, &default_caps(), &amd64())
                .unwrap()
                .is_none()
        );
        assert!(
            seccomp(&Choice::RuntimeDefault, false, &default_caps(), &amd64())
                .unwrap()
                .is_some()
        );
    }

    #[test]
    #[allow(deprecated)]
    fn profile_choice_order() {
        let prof = |t: ProfileType, r: &str| SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        };
        let pod_with = |p: Option<SecurityProfile>, path: &str| PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    seccomp: p,
                    seccomp_profile_path: path.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let none = PodSandboxConfig::default();
        assert_eq!(choose(None, &none).unwrap(), Choice::Unconfined);
        let pod = pod_with(Some(prof(ProfileType::Localhost, "/p.json")), "");
        assert_eq!(
            choose(None, &pod).unwrap(),
            Choice::Localhost("/p.json".into())
        );
        let sc = LinuxContainerSecurityContext {
            seccomp: Some(prof(ProfileType::Unconfined, "")),
            ..Default::default()
        };
        assert_eq!(choose(Some(&sc), &pod).unwrap(), Choice::Unconfined);
        let sc = LinuxContainerSecurityContext {
            seccomp_profile_path: "localhost//x.json".into(),
            ..Default::default()
        };
        assert_eq!(
            choose(Some(&sc), &none).unwrap(),
            Choice::Localhost("/x.json".into())
        );
        let sc = LinuxContainerSecurityContext {
            seccomp_profile_path: "docker/default".into(),
            ..Default::default()
        };
        assert_eq!(choose(Some(&sc), &pod).unwrap(), Choice::RuntimeDefault);
        assert_eq!(
            choose(None, &pod_with(None, "unconfined")).unwrap(),
            Choice::Unconfined
        );
        let sc = LinuxContainerSecurityContext {
            seccomp_profile_path: "bogus".into(),
            ..Default::default()
        };
        assert!(choose(Some(&sc), &none).is_err());
        let sc = LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: 9,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        };
        assert!(choose(Some(&sc), &none).is_err());
        // Capabilities feed the profile: a dropped-all container still gets confined.
        let sc = LinuxContainerSecurityContext {
            capabilities: Some(CriCaps {
                drop_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let caps = capabilities(Some(&sc), false).unwrap().set;
        assert!(
            seccomp(&Choice::RuntimeDefault, false, &caps, &amd64())
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel("5"), Some((5, 0)));
        assert_eq!(parse_kernel("x"), None);
        assert!(Host::current().kernel >= (3, 0));
    }
}
