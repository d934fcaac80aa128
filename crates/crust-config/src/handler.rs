//! RuntimeClass handlers: which shim v2 binary serves a handler, and the
//! options crust hands it.
//!
//! crust knows two shims by name: its own (`crust-shim`, which takes no
//! options) and containerd's runc shim (`containerd-shim-runc-v2`, whose
//! options are containerd's `runc.v2` Options, passed the way containerd
//! passes them: as a `containerd.runc.v1.Options` message in
//! CreateTaskRequest). Options for any other shim would need that shim's
//! own message type, which crust cannot know, so they are refused rather
//! than dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One handler: its shim binary and the options for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    pub shim: String,
    #[serde(default)]
    pub options: BTreeMap<String, OptionValue>,
}

/// An option's value as written in the YAML: `true`, `1000` or a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OptionValue {
    Bool(bool),
    Int(u64),
    Str(String),
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionValue::Bool(b) => write!(f, "{b}"),
            OptionValue::Int(n) => write!(f, "{n}"),
            OptionValue::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// The shims crust knows how to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShimKind {
    /// crust's own shim: one per pod, CRI logs and attach built in.
    Crust,
    /// containerd's `containerd-shim-runc-v2` (any version): one per pod
    /// (grouped by the pod's id), stdio through FIFOs or a logging binary.
    RuncV2,
    /// Any other shim v2 binary: driven like the runc shim, without options.
    Other,
}

impl ShimKind {
    /// Known by the binary's file name, wherever it lives.
    pub fn of(shim: &str) -> ShimKind {
        match Path::new(shim).file_name().and_then(|n| n.to_str()) {
            Some("crust-shim") => ShimKind::Crust,
            Some("containerd-shim-runc-v2") => ShimKind::RuncV2,
            _ => ShimKind::Other,
        }
    }
}

/// containerd's `runc.v2` runtime options (`containerd.runc.v1.Options`),
/// under the names containerd's config uses for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuncOptions {
    pub binary_name: String,
    pub root: String,
    pub systemd_cgroup: bool,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
    pub shim_cgroup: String,
    pub io_uid: u32,
    pub io_gid: u32,
    pub criu_image_path: String,
    pub criu_work_path: String,
}

/// The keys [`RuncOptions`] accepts, as containerd names them.
pub const RUNC_OPTION_KEYS: &[&str] = &[
    "BinaryName",
    "Root",
    "SystemdCgroup",
    "NoPivotRoot",
    "NoNewKeyring",
    "ShimCgroup",
    "IoUid",
    "IoGid",
    "CriuImagePath",
    "CriuWorkPath",
];

impl HandlerConfig {
    pub fn kind(&self) -> ShimKind {
        ShimKind::of(&self.shim)
    }

    /// The runc shim's options; an unknown key or a value of the wrong
    /// type is an error naming it.
    pub fn runc_options(&self) -> Result<RuncOptions, String> {
        let mut o = RuncOptions::default();
        for (key, value) in &self.options {
            let text = |v: &OptionValue| match v {
                OptionValue::Str(s) => Ok(s.clone()),
                other => Err(format!("{key} must be a string, not {other}")),
            };
            let flag = |v: &OptionValue| match v {
                OptionValue::Bool(b) => Ok(*b),
                other => Err(format!("{key} must be true or false, not {other}")),
            };
            let id = |v: &OptionValue| match v {
                OptionValue::Int(n) => u32::try_from(*n)
                    .map_err(|_| format!("{key} {n} is out of range for a uid/gid")),
                other => Err(format!("{key} must be a number, not {other}")),
            };
            match key.as_str() {
                "BinaryName" => o.binary_name = text(value)?,
                "Root" => o.root = text(value)?,
                "SystemdCgroup" => o.systemd_cgroup = flag(value)?,
                "NoPivotRoot" => o.no_pivot_root = flag(value)?,
                "NoNewKeyring" => o.no_new_keyring = flag(value)?,
                "ShimCgroup" => o.shim_cgroup = text(value)?,
                "IoUid" => o.io_uid = id(value)?,
                "IoGid" => o.io_gid = id(value)?,
                "CriuImagePath" => o.criu_image_path = text(value)?,
                "CriuWorkPath" => o.criu_work_path = text(value)?,
                other => {
                    return Err(format!(
                        "unknown option {other:?} for containerd-shim-runc-v2 (known: {})",
                        RUNC_OPTION_KEYS.join(", ")
                    ));
                }
            }
        }
        // BinaryName may be a bare name: the shim looks it up on PATH.
        for (key, path) in [
            ("Root", &o.root),
            ("CriuImagePath", &o.criu_image_path),
            ("CriuWorkPath", &o.criu_work_path),
        ] {
            if !path.is_empty() && !Path::new(path).is_absolute() {
                return Err(format!("{key} {path:?} must be an absolute path"));
            }
        }
        Ok(o)
    }

    /// Checks the options against what the shim takes.
    pub fn validate(&self) -> Result<(), String> {
        match self.kind() {
            ShimKind::RuncV2 => self.runc_options().map(drop),
            kind if !self.options.is_empty() => Err(format!(
                "{} takes no options ({} given); crust knows the options of containerd-shim-runc-v2 only",
                if kind == ShimKind::Crust {
                    "crust-shim"
                } else {
                    "this shim"
                },
                self.options.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler(yaml: &str) -> HandlerConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn shims_are_known_by_file_name() {
        assert_eq!(ShimKind::of("crust-shim"), ShimKind::Crust);
        assert_eq!(ShimKind::of("/opt/crust/bin/crust-shim"), ShimKind::Crust);
        assert_eq!(
            ShimKind::of("/usr/bin/containerd-shim-runc-v2"),
            ShimKind::RuncV2
        );
        assert_eq!(ShimKind::of("containerd-shim-kata-v2"), ShimKind::Other);
    }

    #[test]
    fn runc_options_take_containerds_names_and_types() {
        let h = handler(
            "shim: containerd-shim-runc-v2\noptions: {BinaryName: /usr/sbin/runc, SystemdCgroup: true, Root: /run/r, IoUid: 1000}\n",
        );
        h.validate().unwrap();
        let o = h.runc_options().unwrap();
        assert_eq!(o.binary_name, "/usr/sbin/runc");
        assert!(o.systemd_cgroup);
        assert_eq!(o.root, "/run/r");
        assert_eq!(o.io_uid, 1000);
        assert!(!o.no_pivot_root);
    }

    #[test]
    fn an_unknown_runc_option_or_a_wrong_type_is_named() {
        let e = handler("shim: containerd-shim-runc-v2\noptions: {BinaryNmae: runc}\n")
            .validate()
            .unwrap_err();
        assert!(
            e.contains("\"BinaryNmae\"") && e.contains("BinaryName"),
            "{e}"
        );
        let e = handler("shim: containerd-shim-runc-v2\noptions: {SystemdCgroup: yes-please}\n")
            .validate()
            .unwrap_err();
        assert!(e.contains("SystemdCgroup must be true or false"), "{e}");
        let e = handler("shim: containerd-shim-runc-v2\noptions: {Root: relative/dir}\n")
            .validate()
            .unwrap_err();
        assert!(e.contains("absolute"), "{e}");
    }

    #[test]
    fn other_shims_take_no_options() {
        let e = handler("shim: crust-shim\noptions: {BinaryName: runc}\n")
            .validate()
            .unwrap_err();
        assert!(e.contains("crust-shim takes no options"), "{e}");
        handler("shim: containerd-shim-kata-v2\n")
            .validate()
            .unwrap();
        assert!(
            handler("shim: containerd-shim-kata-v2\noptions: {ConfigPath: /x}\n")
                .validate()
                .is_err()
        );
    }
}
