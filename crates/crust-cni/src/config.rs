//! Loading and validating network configuration lists (CNI spec 1.0.0,
//! section "Configuration format"), plus the pure helpers that build what
//! each plugin gets on stdin.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::CniError;

/// Largest config file read (bigger ones are rejected, not truncated).
pub const MAX_CONFIG_SIZE: u64 = 1 << 20;

/// The `cniVersion`s this invoker speaks. Results of 0.1.0/0.2.0 (ip4/ip6),
/// 0.3.x/0.4.0 (ips with "version") and 1.x are all converted to
/// [`crate::CniResult`].
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// File name extensions looked at in the conf dir, as libcni does.
const EXTENSIONS: &[&str] = &["conflist", "conf", "json"];

/// A network configuration list, validated: every plugin binary was found.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    /// `disableCheck` from the list: CHECK is skipped when set.
    pub disable_check: bool,
    /// The plugins in the order they are ADDed.
    pub plugins: Vec<PluginConf>,
    /// The file it was loaded from.
    pub source: PathBuf,
}

/// One plugin of a list: its config object as written in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    /// The `type` field: the binary's file name.
    pub plugin_type: String,
    /// The capabilities the plugin declares with `true` in `capabilities`.
    pub capabilities: BTreeSet<String>,
    /// The plugin's config object exactly as in the file.
    pub conf: Map<String, Value>,
    /// Where the binary was found when the list was loaded.
    pub binary: PathBuf,
}

/// Whether `v` is a valid network name / container id per the spec:
/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub(crate) fn valid_name(v: &str) -> bool {
    let mut chars = v.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Plugin `type`s are file names in the bin dirs: nothing that walks out.
fn valid_plugin_type(v: &str) -> bool {
    !v.is_empty() && v != "." && v != ".." && !v.contains('/') && !v.contains('\0')
}

/// Version string -> comparable triple; None for anything malformed.
pub(crate) fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// `v >= min`, both well formed (malformed compares as false).
pub(crate) fn version_at_least(v: &str, min: (u32, u32, u32)) -> bool {
    parse_version(v).is_some_and(|p| p >= min)
}

/// Finds plugin `plugin_type` in `bin_dirs`, in order: a regular file
/// with an execute bit.
pub fn find_plugin(bin_dirs: &[PathBuf], plugin_type: &str) -> Option<PathBuf> {
    if !valid_plugin_type(plugin_type) {
        return None;
    }
    bin_dirs.iter().map(|d| d.join(plugin_type)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The bin dirs as an error message lists them: "/opt/cni/bin, /usr/lib/cni".
pub(crate) fn dirs_display(bin_dirs: &[PathBuf]) -> String {
    if bin_dirs.is_empty() {
        return "(no bin dirs configured)".to_string();
    }
    bin_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The candidate files of `conf_dir` in lexical order of their names.
pub(crate) fn config_files(conf_dir: &Path) -> Result<Vec<PathBuf>, CniError> {
    let entries = match std::fs::read_dir(conf_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CniError::NoConfig {
                dir: conf_dir.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(CniError::Io {
                path: conf_dir.to_path_buf(),
                reason: e.to_string(),
            });
        }
    };
    let mut names: Vec<OsString> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CniError::Io {
            path: conf_dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let path = entry.path();
        let ext_ok = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e));
        // metadata() follows symlinks: configs are often links (ConfigMaps).
        if ext_ok && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            names.push(entry.file_name());
        }
    }
    names.sort();
    Ok(names.into_iter().map(|n| conf_dir.join(n)).collect())
}

/// Loads the first valid config of `conf_dir` (lexical order).
pub(crate) fn load_dir(conf_dir: &Path, bin_dirs: &[PathBuf]) -> Result<NetworkList, CniError> {
    let files = config_files(conf_dir)?;
    let mut rejected: Vec<CniError> = Vec::new();
    for file in &files {
        match load_file(file, bin_dirs) {
            Ok(list) => {
                for r in &rejected {
                    tracing::debug!(error = %r, "skipped network config");
                }
                return Ok(list);
            }
            Err(e) => rejected.push(e),
        }
    }
    match rejected.len() {
        0 => Err(CniError::NoConfig {
            dir: conf_dir.to_path_buf(),
        }),
        1 => Err(rejected.pop().expect("one element")),
        _ => Err(CniError::NoValidConfig {
            dir: conf_dir.to_path_buf(),
            reasons: rejected.iter().map(|e| e.to_string()).collect(),
        }),
    }
}

/// Reads and validates one config file: `.conflist` is a list; `.conf` and
/// `.json` are a single plugin wrapped into a list (or a list, when they
/// have `plugins`).
pub fn load_file(path: &Path, bin_dirs: &[PathBuf]) -> Result<NetworkList, CniError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let io_err = |e: std::io::Error| CniError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let f = std::fs::File::open(path).map_err(io_err)?;
    let mut bytes = Vec::new();
    f.take(MAX_CONFIG_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_CONFIG_SIZE {
        return Err(CniError::InvalidConfig {
            file: file_name,
            reason: format!("larger than {MAX_CONFIG_SIZE} bytes"),
        });
    }
    let is_list_file = path.extension().and_then(|e| e.to_str()) == Some("conflist");
    let mut list = parse_config(&bytes, &file_name, is_list_file)?;
    list.source = path.to_path_buf();
    for p in &mut list.plugins {
        p.binary =
            find_plugin(bin_dirs, &p.plugin_type).ok_or_else(|| CniError::PluginNotFound {
                plugin: p.plugin_type.clone(),
                dirs: dirs_display(bin_dirs),
                needed_by: file_name.clone(),
            })?;
    }
    Ok(list)
}

/// Parses and validates config bytes (pure: binaries are not looked up,
/// `binary` and `source` are left empty).
pub fn parse_config(bytes: &[u8], file: &str, is_list: bool) -> Result<NetworkList, CniError> {
    let invalid = |reason: String| CniError::InvalidConfig {
        file: file.to_string(),
        reason,
    };
    let value: Value = serde_json::from_slice(bytes).map_err(|e| CniError::InvalidJson {
        file: file.to_string(),
        reason: e.to_string(),
    })?;
    let Value::Object(top) = value else {
        return Err(invalid("the top level is not a JSON object".into()));
    };

    let cni_version = match top.get("cniVersion") {
        Some(Value::String(v)) => v.clone(),
        Some(_) => return Err(invalid("\"cniVersion\" is not a string".into())),
        None => return Err(invalid("\"cniVersion\" is missing".into())),
    };
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(invalid(format!(
            "cniVersion \"{cni_version}\" is not supported (supported: {})",
            SUPPORTED_VERSIONS.join(", ")
        )));
    }
    let name = match top.get("name") {
        Some(Value::String(n)) if valid_name(n) => n.clone(),
        Some(Value::String(n)) => {
            return Err(invalid(format!(
                "network name \"{n}\" is invalid (letters, digits, '_', '.', '-'; starting with a letter or digit)"
            )));
        }
        Some(_) => return Err(invalid("\"name\" is not a string".into())),
        None => return Err(invalid("\"name\" is missing".into())),
    };
    let disable_check = match top.get("disableCheck") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s == "true" => true,
        Some(Value::String(s)) if s == "false" => false,
        Some(other) => {
            return Err(invalid(format!(
                "\"disableCheck\" must be true or false, not {other}"
            )));
        }
    };

    let raw_plugins: Vec<Map<String, Value>> = match top.get("plugins") {
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Object(o) => out.push(o.clone()),
                    _ => return Err(invalid(format!("plugins[{i}] is not a JSON object"))),
                }
            }
            out
        }
        Some(_) => return Err(invalid("\"plugins\" is not an array".into())),
        None if is_list => return Err(invalid("\"plugins\" is missing".into())),
        // A single-plugin .conf: the whole object is the plugin.
        None => vec![top.clone()],
    };
    if raw_plugins.is_empty() {
        return Err(invalid("\"plugins\" is empty".into()));
    }
    if raw_plugins.len() > 1 && !version_at_least(&cni_version, (0, 3, 0)) {
        return Err(invalid(format!(
            "cniVersion \"{cni_version}\" cannot chain plugins (0.3.0 or later needed for a list of {})",
            raw_plugins.len()
        )));
    }

    let mut plugins = Vec::with_capacity(raw_plugins.len());
    for (i, conf) in raw_plugins.into_iter().enumerate() {
        let plugin_type = match conf.get("type") {
            Some(Value::String(t)) if valid_plugin_type(t) => t.clone(),
            Some(Value::String(t)) => {
                return Err(invalid(format!(
                    "plugins[{i}]: type \"{t}\" is not a file name"
                )));
            }
            Some(_) => return Err(invalid(format!("plugins[{i}]: \"type\" is not a string"))),
            None => return Err(invalid(format!("plugins[{i}]: \"type\" is missing"))),
        };
        let capabilities = match conf.get("capabilities") {
            None | Some(Value::Null) => BTreeSet::new(),
            Some(Value::Object(caps)) => caps
                .iter()
                .filter(|(_, v)| v.as_bool() == Some(true))
                .map(|(k, _)| k.clone())
                .collect(),
            Some(_) => {
                return Err(invalid(format!(
                    "plugins[{i}] ({plugin_type}): \"capabilities\" is not an object"
                )));
            }
        };
        plugins.push(PluginConf {
            plugin_type,
            capabilities,
            conf,
            binary: PathBuf::new(),
        });
    }

    Ok(NetworkList {
        name,
        cni_version,
        disable_check,
        plugins,
        source: PathBuf::new(),
    })
}

/// The config a plugin gets on stdin: its own object with `name` and
/// `cniVersion` of the list, `runtimeConfig` (only when non-empty) and
/// `prevResult` (only when given) set; any `prevResult` or `runtimeConfig`
/// written in the file is replaced, as libcni does.
pub(crate) fn plugin_stdin(
    list_name: &str,
    cni_version: &str,
    plugin_conf: &Map<String, Value>,
    runtime_config: Map<String, Value>,
    prev_result: Option<&Value>,
) -> Vec<u8> {
    let mut conf = plugin_conf.clone();
    conf.insert("name".into(), Value::String(list_name.into()));
    conf.insert("cniVersion".into(), Value::String(cni_version.into()));
    conf.remove("runtimeConfig");
    if !runtime_config.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }
    conf.remove("prevResult");
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    serde_json::to_vec(&Value::Object(conf)).expect("a JSON map serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("crust"));
        assert!(valid_name("a_b.c-1"));
        assert!(!valid_name(""));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a/b"));
        assert!(valid_plugin_type("bridge"));
        assert!(!valid_plugin_type("../bin/sh"));
        assert!(!valid_plugin_type(".."));
    }

    #[test]
    fn versions() {
        assert!(version_at_least("0.4.0", (0, 4, 0)));
        assert!(version_at_least("1.0.0", (0, 4, 0)));
        assert!(!version_at_least("0.3.1", (0, 4, 0)));
        assert!(!version_at_least("1.0", (0, 1, 0)));
        assert!(!version_at_least("x.y.z", (0, 1, 0)));
        assert_eq!(parse_version("0.3.1"), Some((0, 3, 1)));
        assert_eq!(parse_version("1.0.0.0"), None);
    }
}
