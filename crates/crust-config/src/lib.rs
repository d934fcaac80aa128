//! crustd's configuration.
//!
//! One YAML file, every key optional. The defaults live in `default.yaml`,
//! which is also what `crustd config default` prints, so the documented
//! defaults and the real ones cannot drift apart (a unit test checks it).
//! Drop-ins in `config.d/` are merged over the main file ([`layers`]).

#![forbid(unsafe_code)]

pub mod handler;
pub mod layers;
pub mod policy;

pub use handler::{HandlerConfig, OptionValue, RuncOptions, ShimKind};
pub use policy::{DefaultRule, ImagesConfig, PolicyConfig, Rule as PolicyRule, ScopeConfig};

pub use layers::{
    ConfigSources, DROPIN_DIR_NAME, LoadedConfig, MAX_CONFIG_FILE_BYTES, MAX_DROPINS, Origin,
    default_dropin_dir,
};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The commented default configuration, as printed by `crustd config default`.
pub const DEFAULT_YAML: &str = include_str!("default.yaml");

/// Where crustd looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/crust/config.yaml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid config {origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("config file {path} is larger than {limit} bytes; a crust config is a few KiB")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error(
        "{dir} holds {count} drop-ins (*.yaml, *.yml), more than the {limit} crust reads; remove the ones not meant for crust"
    )]
    TooManyDropins {
        dir: PathBuf,
        count: usize,
        limit: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub root: PathBuf,
    /// A separate dir (normally its own disk) for image content and
    /// unpacked layers: kubelet's split image filesystem (KEP-4191).
    /// Unset: they live under `root` with everything else.
    pub image_fs: Option<PathBuf>,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub cgroup_driver: CgroupDriverSetting,
    pub registries: RegistriesConfig,
    pub images: ImagesConfig,
    pub cni: CniConfig,
    pub cdi: CdiConfig,
    pub runtime: RuntimeConfig,
    pub streaming: StreamingConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriverSetting {
    Auto,
    Cgroupfs,
    Systemd,
}

/// The cgroup driver actually in use, once `auto` is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistriesConfig {
    pub mirrors: BTreeMap<String, Vec<String>>,
    pub plain_http: Vec<String>,
    pub skip_verify: Vec<String>,
    pub ca_files: Vec<PathBuf>,
    pub max_concurrent_downloads: usize,
    pub pull_progress_timeout_seconds: u64,
    /// Largest uncompressed size of one layer: a layer whose decompressed
    /// stream grows past it is refused while it unpacks (decompression
    /// bombs never fill the disk).
    pub max_layer_uncompressed_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
}

/// CDI (Container Device Interface) spec directories, lowest priority first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdiConfig {
    pub spec_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    pub default_handler: String,
    pub handlers: BTreeMap<String, HandlerConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    pub address: String,
    pub tls_cert: String,
    pub tls_key: String,
    pub idle_timeout_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: "/var/lib/crust".into(),
            image_fs: None,
            state: "/run/crust".into(),
            socket: "/run/crust/crust.sock".into(),
            cgroup_driver: CgroupDriverSetting::Auto,
            registries: RegistriesConfig::default(),
            images: ImagesConfig::default(),
            cni: CniConfig::default(),
            cdi: CdiConfig::default(),
            runtime: RuntimeConfig::default(),
            streaming: StreamingConfig::default(),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// 64 GiB: far above any real layer (the largest CUDA/ML layers are a few
/// tens of GiB uncompressed), far below what a gzip bomb would expand to.
pub const DEFAULT_MAX_LAYER_UNCOMPRESSED_BYTES: u64 = 64 << 30;

/// The smallest `registries.max_layer_uncompressed_bytes` accepted.
pub const MIN_MAX_LAYER_UNCOMPRESSED_BYTES: u64 = 1 << 20;

impl Default for RegistriesConfig {
    fn default() -> Self {
        RegistriesConfig {
            mirrors: BTreeMap::new(),
            plain_http: Vec::new(),
            skip_verify: Vec::new(),
            ca_files: Vec::new(),
            max_concurrent_downloads: 4,
            pull_progress_timeout_seconds: 60,
            max_layer_uncompressed_bytes: DEFAULT_MAX_LAYER_UNCOMPRESSED_BYTES,
        }
    }
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
        }
    }
}

impl Default for CdiConfig {
    fn default() -> Self {
        CdiConfig {
            spec_dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()],
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let crust = HandlerConfig {
            shim: "crust-shim".into(),
            options: BTreeMap::new(),
        };
        RuntimeConfig {
            default_handler: "crust".into(),
            handlers: BTreeMap::from([("crust".to_string(), crust)]),
        }
    }
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: "127.0.0.1:0".into(),
            tls_cert: String::new(),
            tls_key: String::new(),
            idle_timeout_seconds: 4 * 60 * 60,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            address: "127.0.0.1:1338".into(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Parses and validates YAML text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        // An empty document (or only comments) means "all defaults".
        let config = if text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#') || l == "---"
        }) {
            Config::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
                origin: origin.to_string(),
                message: describe_yaml_error(&e, text),
            })?
        };
        config.validate().map_err(|message| ConfigError::Invalid {
            origin: origin.to_string(),
            message,
        })?;
        Ok(config)
    }

    /// Loads `path`. When `required` is false a missing file means defaults
    /// (crustd runs with no file at all); an explicit `--config` must exist.
    /// Drop-ins are not read: see [`ConfigSources`] for that.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        match layers::read_capped(path) {
            Ok(text) => Config::from_yaml(&text, &path.display().to_string()),
            Err(ConfigError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && !required =>
            {
                Ok(Config::default())
            }
            Err(e) => Err(e),
        }
    }

    /// Where image content and layers live: `image_fs`, else `root`.
    pub fn image_root(&self) -> &Path {
        self.image_fs.as_deref().unwrap_or(&self.root)
    }

    /// Checks what the types alone cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.images.policy.validate()?;
        for (key, path) in [
            ("root", &self.root),
            ("state", &self.state),
            ("socket", &self.socket),
            ("cni.conf_dir", &self.cni.conf_dir),
        ] {
            if !path.is_absolute() {
                return Err(format!("{key} must be an absolute path, got {path:?}"));
            }
        }
        if let Some(dir) = &self.image_fs {
            if !dir.is_absolute() {
                return Err(format!("image_fs must be an absolute path, got {dir:?}"));
            }
            // One inside the other would count every byte twice.
            if dir.starts_with(&self.root) || self.root.starts_with(dir) {
                return Err(format!(
                    "image_fs {dir:?} must be outside root {:?} (and root outside it)",
                    self.root
                ));
            }
        }
        if self.cni.bin_dirs.is_empty() {
            return Err("cni.bin_dirs must name at least one directory".into());
        }
        if let Some(dir) = self.cni.bin_dirs.iter().find(|d| !d.is_absolute()) {
            return Err(format!(
                "cni.bin_dirs entries must be absolute, got {dir:?}"
            ));
        }
        if let Some(dir) = self.cdi.spec_dirs.iter().find(|d| !d.is_absolute()) {
            return Err(format!(
                "cdi.spec_dirs entries must be absolute, got {dir:?}"
            ));
        }
        let r = &self.registries;
        if !(1..=64).contains(&r.max_concurrent_downloads) {
            return Err(format!(
                "registries.max_concurrent_downloads must be between 1 and 64, got {}",
                r.max_concurrent_downloads
            ));
        }
        if r.pull_progress_timeout_seconds == 0 {
            return Err("registries.pull_progress_timeout_seconds must be above 0".into());
        }
        if r.max_layer_uncompressed_bytes < MIN_MAX_LAYER_UNCOMPRESSED_BYTES {
            return Err(format!(
                "registries.max_layer_uncompressed_bytes must be at least {MIN_MAX_LAYER_UNCOMPRESSED_BYTES} (1 MiB), got {}",
                r.max_layer_uncompressed_bytes
            ));
        }
        for (host, mirrors) in &r.mirrors {
            if host.is_empty() || host.contains('/') {
                return Err(format!(
                    "registries.mirrors: {host:?} is not a registry host (e.g. docker.io or 127.0.0.1:5000)"
                ));
            }
            if let Some(m) = mirrors
                .iter()
                .find(|m| !(m.starts_with("http://") || m.starts_with("https://")))
            {
                return Err(format!(
                    "registries.mirrors.{host}: mirror {m:?} must start with http:// or https://"
                ));
            }
        }
        self.validate_runtime()?;
        let s = &self.streaming;
        s.address.parse::<SocketAddr>().map_err(|e| {
            format!(
                "streaming.address {:?} is not an IP:port address: {e}",
                s.address
            )
        })?;
        if s.tls_cert.is_empty() != s.tls_key.is_empty() {
            return Err("streaming.tls_cert and streaming.tls_key must be set together".into());
        }
        if s.idle_timeout_seconds == 0 {
            return Err("streaming.idle_timeout_seconds must be above 0".into());
        }
        if !self.metrics.address.is_empty() {
            self.metrics.address.parse::<SocketAddr>().map_err(|e| {
                format!(
                    "metrics.address {:?} is not an IP:port address (leave it empty to turn metrics off): {e}",
                    self.metrics.address
                )
            })?;
        }
        if self.log.level.trim().is_empty() {
            return Err("log.level must not be empty".into());
        }
        Ok(())
    }

    fn validate_runtime(&self) -> Result<(), String> {
        let rt = &self.runtime;
        for (name, handler) in &rt.handlers {
            if !is_handler_name(name) {
                return Err(format!(
                    "runtime.handlers: {name:?} is not a valid handler name (lowercase letters, digits, '-' and '.', at most 63 characters)"
                ));
            }
            if handler.shim.trim().is_empty() {
                return Err(format!("runtime.handlers.{name}.shim must not be empty"));
            }
            handler
                .validate()
                .map_err(|e| format!("runtime.handlers.{name}.options: {e}"))?;
            // crust writes cgroupsPath in its driver's form; runc must read
            // it the same way (unset, crust sets it to match).
            if handler.kind() == ShimKind::RuncV2
                && let Some(OptionValue::Bool(systemd)) = handler.options.get("SystemdCgroup")
                && *systemd != (self.effective_cgroup_driver() == CgroupDriver::Systemd)
            {
                return Err(format!(
                    "runtime.handlers.{name}.options.SystemdCgroup is {systemd} but cgroup_driver is {:?}: remove SystemdCgroup (crust sets it to match) or make them agree",
                    self.effective_cgroup_driver()
                ));
            }
        }
        if !rt.handlers.contains_key(&rt.default_handler) {
            return Err(format!(
                "runtime.default_handler {:?} is not one of runtime.handlers ({})",
                rt.default_handler,
                rt.handlers.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(())
    }

    /// Resolves `auto` the way kubelet's users expect: systemd when the host
    /// was booted by systemd (sd_booted(3) checks the same directory).
    pub fn effective_cgroup_driver(&self) -> CgroupDriver {
        match self.cgroup_driver {
            CgroupDriverSetting::Cgroupfs => CgroupDriver::Cgroupfs,
            CgroupDriverSetting::Systemd => CgroupDriver::Systemd,
            CgroupDriverSetting::Auto if Path::new("/run/systemd/system").is_dir() => {
                CgroupDriver::Systemd
            }
            CgroupDriverSetting::Auto => CgroupDriver::Cgroupfs,
        }
    }

    /// The handler a pod gets: the named one, or the default for "".
    pub fn handler(&self, name: &str) -> Option<(&str, &HandlerConfig)> {
        let name = if name.is_empty() {
            self.runtime.default_handler.as_str()
        } else {
            name
        };
        self.runtime
            .handlers
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v))
    }
}

/// serde_yaml_ng leaves the position out of some messages (an unknown key
/// at the top level); add it so a person can find the line to fix.
fn describe_yaml_error(e: &serde_yaml_ng::Error, text: &str) -> String {
    let message = e.to_string();
    if message.contains(" line ") {
        return message;
    }
    if let Some(loc) = e.location() {
        return format!("{message} at line {} column {}", loc.line(), loc.column());
    }
    let unknown_key = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next());
    if let Some(line) = unknown_key.and_then(|key| layers::find_key_line(text, key)) {
        return format!("{message} at line {line}");
    }
    message
}

/// RuntimeClass handler names are DNS labels (Kubernetes validates the same).
fn is_handler_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_yaml_is_exactly_the_builtin_default() {
        let parsed: Config = serde_yaml_ng::from_str(DEFAULT_YAML).unwrap();
        assert_eq!(parsed, Config::default());
        parsed.validate().unwrap();
    }

    #[test]
    fn empty_or_comment_only_file_means_defaults() {
        assert_eq!(Config::from_yaml("", "t").unwrap(), Config::default());
        assert_eq!(
            Config::from_yaml("# nothing\n\n", "t").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn partial_sections_keep_other_defaults() {
        let c = Config::from_yaml("registries:\n  plain_http: [myreg:5000]\n", "t").unwrap();
        assert_eq!(c.registries.plain_http, vec!["myreg:5000"]);
        assert_eq!(c.registries.max_concurrent_downloads, 4);
        assert_eq!(c.root, PathBuf::from("/var/lib/crust"));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = "root: /x\nregistries:\n  mirors: {}\n";
        let err = Config::from_yaml(text, "cfg.yaml").unwrap_err().to_string();
        assert!(err.contains("mirors"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("cfg.yaml"), "{err}");
    }

    #[test]
    fn unknown_top_level_key_is_rejected() {
        let err = Config::from_yaml("sockett: /x\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sockett") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn wrong_type_is_rejected_with_location() {
        let err = Config::from_yaml("registries:\n  max_concurrent_downloads: many\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_cgroup_driver_names_the_choices() {
        let err = Config::from_yaml("cgroup_driver: cgroupv3\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cgroupv3") && err.contains("cgroupfs"),
            "{err}"
        );
    }

    #[test]
    fn image_fs_must_be_absolute_and_apart_from_root() {
        let c = Config::from_yaml("root: /var/lib/crust\nimage_fs: /srv/images\n", "t").unwrap();
        assert_eq!(c.image_root(), Path::new("/srv/images"));
        assert_eq!(Config::default().image_root(), Path::new("/var/lib/crust"));
        for (yaml, want) in [
            ("image_fs: srv/images\n", "absolute"),
            ("image_fs: /var/lib/crust/images\n", "outside root"),
            (
                "root: /srv/images/crust\nimage_fs: /srv/images\n",
                "outside root",
            ),
        ] {
            let err = Config::from_yaml(yaml, "t").unwrap_err().to_string();
            assert!(
                err.contains("image_fs") && err.contains(want),
                "{yaml}: {err}"
            );
        }
    }

    #[test]
    fn relative_paths_are_rejected() {
        let err = Config::from_yaml("root: var/lib/crust\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("root must be an absolute path"), "{err}");
    }

    #[test]
    fn default_handler_must_exist() {
        let err = Config::from_yaml("runtime:\n  default_handler: runc\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"runc\"") && err.contains("crust"), "{err}");
    }

    #[test]
    fn handler_names_are_dns_labels() {
        let text = "runtime:\n  handlers:\n    Bad_Name:\n      shim: x\n";
        let err = Config::from_yaml(text, "t").unwrap_err().to_string();
        assert!(err.contains("Bad_Name"), "{err}");
    }

    #[test]
    fn a_runc_systemd_cgroup_setting_must_agree_with_the_driver() {
        let text = |driver: &str, systemd: bool| {
            format!(
                "cgroup_driver: {driver}\nruntime:\n  default_handler: runc\n  handlers:\n    runc:\n      shim: containerd-shim-runc-v2\n      options: {{SystemdCgroup: {systemd}}}\n"
            )
        };
        Config::from_yaml(&text("systemd", true), "t").unwrap();
        Config::from_yaml(&text("cgroupfs", false), "t").unwrap();
        let e = Config::from_yaml(&text("cgroupfs", true), "t")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("runtime.handlers.runc.options.SystemdCgroup is true"),
            "{e}"
        );
    }

    #[test]
    fn handler_lookup_uses_default_for_empty_name() {
        let text = "runtime:\n  default_handler: runc\n  handlers:\n    runc:\n      shim: containerd-shim-runc-v2\n      options: {BinaryName: crun}\n";
        let c = Config::from_yaml(text, "t").unwrap();
        let (name, h) = c.handler("").unwrap();
        assert_eq!(name, "runc");
        assert_eq!(h.shim, "containerd-shim-runc-v2");
        assert_eq!(h.options["BinaryName"], OptionValue::Str("crun".into()));
        assert!(c.handler("kata").is_none());
    }

    #[test]
    fn addresses_are_validated_and_metrics_can_be_off() {
        assert!(Config::from_yaml("metrics:\n  address: \"\"\n", "t").is_ok());
        let err = Config::from_yaml("metrics:\n  address: localhost\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics.address"), "{err}");
        let err = Config::from_yaml("streaming:\n  address: \":x\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("streaming.address"), "{err}");
    }

    #[test]
    fn tls_needs_cert_and_key() {
        let err = Config::from_yaml("streaming:\n  tls_cert: /c.pem\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls_key"), "{err}");
    }

    #[test]
    fn mirrors_must_be_urls() {
        let err = Config::from_yaml(
            "registries:\n  mirrors:\n    docker.io: [mirror:5000]\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("docker.io") && err.contains("http"), "{err}");
    }

    #[test]
    fn download_concurrency_is_bounded() {
        assert!(Config::from_yaml("registries:\n  max_concurrent_downloads: 0\n", "t").is_err());
        assert!(Config::from_yaml("registries:\n  max_concurrent_downloads: 8\n", "t").is_ok());
        let err = Config::from_yaml("registries:\n  max_layer_uncompressed_bytes: 4096\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_layer_uncompressed_bytes"), "{err}");
        let c = Config::from_yaml(
            "registries:\n  max_layer_uncompressed_bytes: 4194304\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.registries.max_layer_uncompressed_bytes, 4 << 20);
        assert_eq!(
            Config::default().registries.max_layer_uncompressed_bytes,
            64 << 30
        );
    }

    #[test]
    fn log_format_is_text_or_json() {
        let c = Config::from_yaml("log:\n  format: json\n", "t").unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert!(Config::from_yaml("log:\n  format: xml\n", "t").is_err());
    }

    #[test]
    fn explicit_cgroup_driver_wins_over_detection() {
        let c = Config::from_yaml("cgroup_driver: systemd\n", "t").unwrap();
        assert_eq!(c.effective_cgroup_driver(), CgroupDriver::Systemd);
        let c = Config::from_yaml("cgroup_driver: cgroupfs\n", "t").unwrap();
        assert_eq!(c.effective_cgroup_driver(), CgroupDriver::Cgroupfs);
    }

    #[test]
    fn load_missing_file_is_default_only_when_optional() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.yaml");
        assert_eq!(Config::load(&missing, false).unwrap(), Config::default());
        let err = Config::load(&missing, true).unwrap_err().to_string();
        assert!(err.contains("none.yaml"), "{err}");
    }

    #[test]
    fn config_serializes_to_json_for_crictl_info() {
        let json = serde_json::to_value(Config::default()).unwrap();
        assert_eq!(json["socket"], "/run/crust/crust.sock");
        assert_eq!(json["runtime"]["handlers"]["crust"]["shim"], "crust-shim");
    }
}
