//! The main config file plus drop-ins, merged into one [`Config`].
//!
//! `config.d/*.yaml` (and `*.yml`) next to the main file are merged over it
//! in lexical order of their names, as crio.conf.d(5) does for CRI-O:
//!
//! - a scalar replaces the value before it (`root: /srv/crust`);
//! - a map merges key by key, recursively (a drop-in that names one
//!   registry mirror keeps the others);
//! - a list replaces the list before it, whole (`cni.bin_dirs: [...]`);
//! - an empty section (`registries:` with every line below commented out,
//!   a YAML null) changes nothing; a null scalar unsets it (`image_fs: ~`).
//!
//! The merge happens on YAML values, before anything is deserialized into
//! [`Config`], so `deny_unknown_fields` still applies to the result; every
//! error is traced back to the file (and, where it can be found, the line)
//! that set the offending key. Each leaf remembers which file set it last,
//! for `crustd config dump` ([`LoadedConfig::annotated_yaml`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use crate::{Config, ConfigError, DEFAULT_CONFIG_PATH, describe_yaml_error};

/// The drop-in directory's name, next to the main file.
pub const DROPIN_DIR_NAME: &str = "config.d";

/// At most this many drop-ins are read: more is a mistake (a directory of
/// generated files pointed at by accident), not a configuration.
pub const MAX_DROPINS: usize = 256;

/// The largest config file (main or drop-in) read: crust's whole default
/// config is under 3 KiB.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// `<dir of main>/config.d`: where drop-ins for `main` live by default.
pub fn default_dropin_dir(main: &Path) -> PathBuf {
    main.parent()
        .unwrap_or_else(|| Path::new("/"))
        .join(DROPIN_DIR_NAME)
}

/// Where the configuration is read from: a main file and a drop-in dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSources {
    pub main: PathBuf,
    /// An explicit `--config` must exist; the default path may be missing
    /// (then the built-in defaults, plus any drop-ins, apply).
    pub main_required: bool,
    pub dropin_dir: PathBuf,
    /// An explicit `--config-dir` must exist; the default one may not.
    pub dropin_dir_required: bool,
}

impl ConfigSources {
    /// From `--config` and `--config-dir` as given (None: the default).
    pub fn new(main: Option<&Path>, dropin_dir: Option<&Path>) -> ConfigSources {
        let main_path = main.unwrap_or(Path::new(DEFAULT_CONFIG_PATH)).to_path_buf();
        ConfigSources {
            dropin_dir: dropin_dir
                .map(Path::to_path_buf)
                .unwrap_or_else(|| default_dropin_dir(&main_path)),
            main: main_path,
            main_required: main.is_some(),
            dropin_dir_required: dropin_dir.is_some(),
        }
    }

    /// The drop-ins that will be merged, in merge order: regular files (a
    /// symlink to one counts) named `*.yaml` or `*.yml`, hidden names
    /// skipped, sorted by name.
    pub fn dropin_files(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let dir = &self.dropin_dir;
        let read_err = |source| ConfigError::Read {
            path: dir.clone(),
            source,
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.dropin_dir_required => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(read_err(e)),
        };
        let mut names: Vec<OsString> = Vec::new();
        for entry in entries {
            let name = entry.map_err(read_err)?.file_name();
            let text = name.to_string_lossy();
            let yaml = text.ends_with(".yaml") || text.ends_with(".yml");
            // Hidden names are editor and ConfigMap debris (`..data`, `.x.swp`).
            if !yaml || text.starts_with('.') {
                continue;
            }
            let path = dir.join(&name);
            // metadata() follows a symlink: a linked file is read, a linked
            // (or real) directory is skipped, a dangling link is an error.
            let meta = std::fs::metadata(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            if meta.is_file() {
                names.push(name);
            }
        }
        if names.len() > MAX_DROPINS {
            return Err(ConfigError::TooManyDropins {
                dir: dir.clone(),
                count: names.len(),
                limit: MAX_DROPINS,
            });
        }
        names.sort();
        Ok(names.into_iter().map(|n| dir.join(n)).collect())
    }

    /// Reads, merges and validates everything; errors name the file.
    pub fn load(&self) -> Result<LoadedConfig, ConfigError> {
        let mut layers = Vec::new();
        match read_capped(&self.main) {
            Ok(text) => layers.push(Layer::parse(self.main.clone(), text)?),
            Err(ConfigError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && !self.main_required => {}
            Err(e) => return Err(e),
        }
        for path in self.dropin_files()? {
            let text = read_capped(&path)?;
            layers.push(Layer::parse(path, text)?);
        }
        LoadedConfig::from_layers(layers)
    }
}

/// Reads a config file of at most [`MAX_CONFIG_FILE_BYTES`].
pub(crate) fn read_capped(path: &Path) -> Result<String, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_CONFIG_FILE_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text: {e}"),
        ))
    })
}

/// One file's settings, parsed but not yet merged.
struct Layer {
    path: PathBuf,
    text: String,
    /// A mapping, or Null for an empty file.
    value: Value,
}

impl Layer {
    fn parse(path: PathBuf, text: String) -> Result<Layer, ConfigError> {
        let origin = path.display().to_string();
        let value: Value = serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Parse {
            origin: origin.clone(),
            message: describe_yaml_error(&e, &text),
        })?;
        if !matches!(value, Value::Mapping(_) | Value::Null) {
            return Err(ConfigError::Parse {
                origin,
                message: format!(
                    "the top level must be a map of keys (root: ..., registries: ...), not {}",
                    kind(&value)
                ),
            });
        }
        Ok(Layer { path, text, value })
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Nothing set it: the built-in default.
    Default,
    /// The main file or a drop-in set it last.
    File(PathBuf),
    /// A command-line flag overrode it (`--log-level`).
    Flag(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Flag(flag) => f.write_str(flag),
        }
    }
}

/// The effective configuration and, for each key, where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    files: Vec<PathBuf>,
    /// Dotted key path (`registries.mirrors.docker.io`) -> who set it
    /// last. Leaves, and maps a file named, are here; a missing path is a
    /// default.
    origins: BTreeMap<String, Origin>,
}

impl LoadedConfig {
    fn from_layers(layers: Vec<Layer>) -> Result<LoadedConfig, ConfigError> {
        let mut merged = serde_yaml_ng::to_value(Config::default()).expect("Config serializes");
        let mut origins = BTreeMap::new();
        for layer in &layers {
            if let Value::Mapping(over) = &layer.value {
                let origin = Origin::File(layer.path.clone());
                merge_mapping(&mut merged, over, "", &origin, &mut origins);
            }
        }
        let config: Config = match serde_yaml_ng::from_value(merged.clone()) {
            Ok(config) => config,
            Err(e) => return Err(attribute_type_error(&merged, &e, &layers, &origins)),
        };
        let loaded = LoadedConfig {
            config,
            files: layers.into_iter().map(|l| l.path).collect(),
            origins,
        };
        loaded.validate()?;
        Ok(loaded)
    }

    /// The files read, in merge order (the main file first when it exists).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Who set the value at dotted `path` (`cni.bin_dirs`) last.
    pub fn origin(&self, path: &str) -> Origin {
        self.origins.get(path).cloned().unwrap_or(Origin::Default)
    }

    /// Records that a command-line flag set `path` (after
    /// [`ConfigSources::load`], on [`LoadedConfig::config`]).
    pub fn set_by_flag(&mut self, path: &str, flag: &str) {
        self.origins
            .insert(path.to_string(), Origin::Flag(flag.to_string()));
    }

    /// [`Config::validate`], the error naming the file that set the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.config
            .validate()
            .map_err(|message| ConfigError::Invalid {
                origin: self.origin_of_message(&message),
                message,
            })
    }

    /// Which file a validation message is about: its leading key path
    /// (`cni.bin_dirs entries must ...`), refined by a quoted name right
    /// after it (`runtime.handlers: "Bad_Name" ...`), then the nearest
    /// ancestor a file set.
    fn origin_of_message(&self, message: &str) -> String {
        let key: String = message
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .collect();
        let rest = message[key.len()..].trim_start_matches(':').trim_start();
        let quoted = rest
            .strip_prefix('"')
            .and_then(|r| r.split('"').next())
            .filter(|name| !name.is_empty());
        let start = match quoted {
            Some(name) => format!("{key}.{name}"),
            None => key,
        };
        match nearest_origin(&self.origins, &start) {
            Some(Origin::File(path)) => path.display().to_string(),
            Some(Origin::Flag(flag)) => flag.clone(),
            Some(Origin::Default) | None => self.describe_sources(),
        }
    }

    fn describe_sources(&self) -> String {
        if self.files.is_empty() {
            return "(built-in defaults)".to_string();
        }
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        format!("merged from {}", files.join(", "))
    }

    /// The effective configuration as YAML, each value followed by a
    /// comment naming where it came from (`# from /etc/crust/config.d/10-x.yaml`
    /// or `# default`). Parses back to the same [`Config`].
    pub fn annotated_yaml(&self) -> String {
        let mut out =
            String::from("# The effective crust configuration, merged from (in order):\n");
        out.push_str("#   built-in defaults\n");
        for file in &self.files {
            out.push_str(&format!("#   {}\n", file.display()));
        }
        let value = serde_yaml_ng::to_value(&self.config).expect("Config serializes");
        if let Value::Mapping(map) = &value {
            self.render_mapping(map, "", 0, &mut out);
        }
        out
    }

    fn comment(&self, path: &str) -> String {
        match self.origin(path) {
            Origin::Default => "# default".to_string(),
            other => format!("# from {other}"),
        }
    }

    fn render_mapping(&self, map: &Mapping, parent: &str, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        for (key, value) in map {
            let path = join(parent, &key_name(key));
            let key = key_text(key);
            match value {
                Value::Mapping(inner) if !inner.is_empty() => {
                    out.push_str(&format!("{pad}{key}:\n"));
                    self.render_mapping(inner, &path, indent + 2, out);
                }
                Value::Sequence(items) if !items.is_empty() => {
                    out.push_str(&format!("{pad}{key}: {}\n", self.comment(&path)));
                    for item in items {
                        let text = yaml_text(item);
                        let mut lines = text.lines();
                        out.push_str(&format!("{pad}- {}\n", lines.next().unwrap_or("")));
                        for line in lines {
                            out.push_str(&format!("{pad}  {line}\n"));
                        }
                    }
                }
                _ => {
                    // A scalar, or an empty map or list ({} / []). A block
                    // string (`|-` and its lines) takes the comment on its
                    // header line.
                    let text = yaml_text(value);
                    let mut lines = text.lines();
                    let first = lines.next().unwrap_or("");
                    out.push_str(&format!("{pad}{key}: {first} {}\n", self.comment(&path)));
                    for line in lines {
                        out.push_str(&format!("{pad}{line}\n"));
                    }
                }
            }
        }
    }
}

/// Merges `over` into `base` (a mapping) under the rules in the module
/// doc, recording who set each path.
fn merge_mapping(
    base: &mut Value,
    over: &Mapping,
    parent: &str,
    origin: &Origin,
    origins: &mut BTreeMap<String, Origin>,
) {
    let Value::Mapping(base) = base else {
        return;
    };
    for (key, value) in over {
        let path = join(parent, &key_name(key));
        match (base.get_mut(key), value) {
            (Some(existing @ Value::Mapping(_)), Value::Mapping(inner)) => {
                origins.insert(path.clone(), origin.clone());
                merge_mapping(existing, inner, &path, origin, origins);
            }
            // An empty section: nothing to merge.
            (Some(Value::Mapping(_)), Value::Null) => {}
            _ => {
                // Replaced whole: what was recorded below it is gone.
                let below = format!("{path}.");
                origins.retain(|p, _| p != &path && !p.starts_with(&below));
                record_all(value, &path, origin, origins);
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Records `origin` for `path` and every path inside `value`.
fn record_all(value: &Value, path: &str, origin: &Origin, origins: &mut BTreeMap<String, Origin>) {
    origins.insert(path.to_string(), origin.clone());
    if let Value::Mapping(map) = value {
        for (key, inner) in map {
            record_all(inner, &join(path, &key_name(key)), origin, origins);
        }
    }
}

/// The recorded origin of `path` or of its nearest recorded ancestor.
fn nearest_origin<'a>(origins: &'a BTreeMap<String, Origin>, path: &str) -> Option<&'a Origin> {
    let mut path = path;
    loop {
        if let Some(origin) = origins.get(path) {
            return Some(origin);
        }
        path = &path[..path.rfind('.')?];
    }
}

/// A deserialization error of the merged value, named with the file that
/// set the key. The merged value is printed and parsed again, as text,
/// because only then does serde_yaml_ng say which key (`registries.mirrors.x:
/// invalid type ...`); the line it gives is in that text, so it is dropped
/// and the file's own line looked up instead.
fn attribute_type_error(
    merged: &Value,
    from_value: &serde_yaml_ng::Error,
    layers: &[Layer],
    origins: &BTreeMap<String, Origin>,
) -> ConfigError {
    let printed = serde_yaml_ng::to_string(merged).unwrap_or_default();
    let message = match serde_yaml_ng::from_str::<Config>(&printed) {
        Err(e) => strip_location(&e.to_string()).to_string(),
        Ok(_) => from_value.to_string(),
    };
    let path = error_key_path(&message);
    let layer = match nearest_origin(origins, &path) {
        Some(Origin::File(file)) => layers.iter().find(|l| &l.path == file),
        _ => None,
    };
    let Some(layer) = layer else {
        let files: Vec<String> = layers
            .iter()
            .map(|l| l.path.display().to_string())
            .collect();
        return ConfigError::Parse {
            origin: format!("merged from {}", files.join(", ")),
            message,
        };
    };
    let origin = layer.path.display().to_string();
    // The file alone usually fails the same way, with its own line and
    // column; otherwise (its error depends on what the others set) find
    // the key's line by name.
    if let Err(e) = serde_yaml_ng::from_str::<Config>(&layer.text)
        && strip_location(&e.to_string()) == message
    {
        return ConfigError::Parse {
            origin,
            message: describe_yaml_error(&e, &layer.text),
        };
    }
    let last = path.rsplit('.').next().unwrap_or(&path);
    let message = match find_key_line(&layer.text, last) {
        Some(line) => format!("{message} at line {line}"),
        None => message,
    };
    ConfigError::Parse { origin, message }
}

/// `... at line 3 column 5` off the end of a serde_yaml_ng message.
fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

/// The dotted key a serde_yaml_ng message is about: its `path: ` prefix,
/// plus the field of an `unknown field `x`` error.
fn error_key_path(message: &str) -> String {
    let (prefix, rest) = match message.split_once(": ") {
        Some((p, rest)) if !p.is_empty() && !p.contains(' ') && !p.contains('`') => {
            (p.to_string(), rest)
        }
        _ => (String::new(), message),
    };
    let unknown = rest
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next());
    match unknown {
        Some(field) => join(&prefix, field),
        None => prefix,
    }
}

/// The 1-based line where `key:` appears in `text`, if it does.
pub(crate) fn find_key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("- ").unwrap_or(line);
            let unquoted = line
                .strip_prefix(key)
                .or_else(|| line.strip_prefix(&format!("\"{key}\"")))
                .or_else(|| line.strip_prefix(&format!("'{key}'")));
            unquoted.is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|i| i + 1)
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// A map key as it appears in a dotted path.
fn key_name(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => yaml_text(other),
    }
}

/// A map key as YAML text: plain or quoted by serde_yaml_ng, or
/// double-quoted when it would need more than one line.
fn key_text(key: &Value) -> String {
    let text = yaml_text(key);
    if !text.contains('\n') {
        return text;
    }
    let mut quoted = String::from("\"");
    for c in key_name(key).chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// One value as YAML text, without the trailing newline.
fn yaml_text(value: &Value) -> String {
    serde_yaml_ng::to_string(value)
        .unwrap_or_default()
        .trim_end_matches('\n')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A main file and drop-ins in a temp dir, laid out as /etc/crust is.
    struct Etc {
        dir: tempfile::TempDir,
    }

    impl Etc {
        fn new(main: Option<&str>) -> Etc {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join(DROPIN_DIR_NAME)).unwrap();
            if let Some(text) = main {
                std::fs::write(dir.path().join("config.yaml"), text).unwrap();
            }
            Etc { dir }
        }

        fn main(&self) -> PathBuf {
            self.dir.path().join("config.yaml")
        }

        fn dropin(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(DROPIN_DIR_NAME).join(name);
            std::fs::write(&path, text).unwrap();
            path
        }

        /// As crustd without `--config`: the main file may be missing.
        fn sources(&self) -> ConfigSources {
            ConfigSources {
                main: self.main(),
                main_required: false,
                dropin_dir: default_dropin_dir(&self.main()),
                dropin_dir_required: false,
            }
        }

        fn load(&self) -> Result<LoadedConfig, ConfigError> {
            self.sources().load()
        }
    }

    #[test]
    fn default_dropin_dir_is_next_to_the_main_file() {
        assert_eq!(
            default_dropin_dir(Path::new("/etc/crust/config.yaml")),
            Path::new("/etc/crust/config.d")
        );
        let s = ConfigSources::new(None, None);
        assert_eq!(s.main, Path::new(DEFAULT_CONFIG_PATH));
        assert_eq!(s.dropin_dir, Path::new("/etc/crust/config.d"));
        assert!(!s.main_required && !s.dropin_dir_required);
        let s = ConfigSources::new(Some(Path::new("/srv/c.yaml")), Some(Path::new("/srv/d")));
        assert_eq!(s.dropin_dir, Path::new("/srv/d"));
        assert!(s.main_required && s.dropin_dir_required);
        let s = ConfigSources::new(Some(Path::new("/srv/c.yaml")), None);
        assert_eq!(s.dropin_dir, Path::new("/srv/config.d"));
    }

    #[test]
    fn dropins_merge_over_the_main_file_in_lexical_order() {
        let etc = Etc::new(Some("root: /main\nstate: /run/main\n"));
        // Written out of order: the name decides, not the write.
        let b = etc.dropin("20-b.yaml", "root: /b\n");
        let a = etc.dropin("10-a.yaml", "root: /a\nsocket: /run/a/crust.sock\n");
        let loaded = etc.load().unwrap();
        assert_eq!(loaded.files(), [etc.main(), a.clone(), b.clone()]);
        assert_eq!(loaded.config.root, Path::new("/b"));
        assert_eq!(loaded.config.socket, Path::new("/run/a/crust.sock"));
        assert_eq!(loaded.config.state, Path::new("/run/main"));
        assert_eq!(loaded.origin("root"), Origin::File(b));
        assert_eq!(loaded.origin("socket"), Origin::File(a));
        assert_eq!(loaded.origin("state"), Origin::File(etc.main()));
        assert_eq!(loaded.origin("cni.conf_dir"), Origin::Default);
    }

    #[test]
    fn scalars_replace_maps_merge_lists_replace() {
        let etc = Etc::new(Some(
            "registries:\n  mirrors:\n    docker.io: [https://m1.example]\n  plain_http: [a:5000, b:5000]\n  max_concurrent_downloads: 2\nruntime:\n  handlers:\n    runc:\n      shim: containerd-shim-runc-v2\n",
        ));
        let d = etc.dropin(
            "50-x.yml",
            "registries:\n  mirrors:\n    quay.io: [https://q.example]\n  plain_http: [c:5000]\nruntime:\n  handlers:\n    kata:\n      shim: containerd-shim-kata-v2\n    runc:\n      options: {BinaryName: /usr/sbin/runc}\n",
        );
        let loaded = etc.load().unwrap();
        let r = &loaded.config.registries;
        // Maps merge: both registries' mirrors are there.
        assert_eq!(r.mirrors["docker.io"], ["https://m1.example"]);
        assert_eq!(r.mirrors["quay.io"], ["https://q.example"]);
        // Lists replace, whole.
        assert_eq!(r.plain_http, ["c:5000"]);
        // Untouched scalars keep the main file's value.
        assert_eq!(r.max_concurrent_downloads, 2);
        // Nested maps merge too: the runc handler keeps its shim.
        let handlers = &loaded.config.runtime.handlers;
        assert_eq!(handlers["runc"].shim, "containerd-shim-runc-v2");
        assert_eq!(
            handlers["runc"].options["BinaryName"],
            crate::OptionValue::Str("/usr/sbin/runc".into())
        );
        assert_eq!(handlers["crust"].shim, "crust-shim");
        assert_eq!(handlers["kata"].shim, "containerd-shim-kata-v2");
        assert_eq!(
            loaded.origin("registries.mirrors.docker.io"),
            Origin::File(etc.main())
        );
        assert_eq!(
            loaded.origin("registries.mirrors.quay.io"),
            Origin::File(d.clone())
        );
        assert_eq!(
            loaded.origin("registries.plain_http"),
            Origin::File(d.clone())
        );
        assert_eq!(
            loaded.origin("runtime.handlers.crust.shim"),
            Origin::Default
        );
        assert_eq!(loaded.origin("runtime.handlers.kata.shim"), Origin::File(d));
    }

    #[test]
    fn an_empty_section_changes_nothing_and_a_null_scalar_unsets() {
        let etc = Etc::new(Some(
            "image_fs: /srv/images\nregistries:\n  plain_http: [a:5000]\n",
        ));
        etc.dropin("10-empty.yaml", "registries:\n  # plain_http: []\n");
        etc.dropin("20-unset.yaml", "image_fs: ~\n");
        etc.dropin("30-comments.yaml", "# nothing yet\n");
        let loaded = etc.load().unwrap();
        assert_eq!(loaded.config.registries.plain_http, ["a:5000"]);
        assert_eq!(loaded.config.image_fs, None);
    }

    #[test]
    fn missing_main_file_means_defaults_plus_dropins() {
        let etc = Etc::new(None);
        let d = etc.dropin("10-a.yaml", "log:\n  level: debug\n");
        let loaded = etc.load().unwrap();
        assert_eq!(loaded.files(), [d]);
        assert_eq!(loaded.config.log.level, "debug");
        let mut want = Config::default();
        want.log.level = "debug".into();
        assert_eq!(loaded.config, want);
        // An explicit --config must exist.
        let err = ConfigSources {
            main_required: true,
            ..etc.sources()
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(err.contains("config.yaml"), "{err}");
    }

    #[test]
    fn no_dropin_dir_is_fine_unless_named() {
        let etc = Etc::new(Some("root: /x\n"));
        std::fs::remove_dir(etc.dir.path().join(DROPIN_DIR_NAME)).unwrap();
        assert_eq!(etc.load().unwrap().config.root, Path::new("/x"));
        let err = ConfigSources {
            dropin_dir_required: true,
            ..etc.sources()
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(err.contains(DROPIN_DIR_NAME), "{err}");
    }

    #[test]
    fn unknown_key_in_a_dropin_is_named_with_its_file_and_line() {
        let etc = Etc::new(Some("root: /x\n"));
        etc.dropin("10-good.yaml", "state: /run/y\n");
        let bad = etc.dropin("20-bad.yaml", "# a comment\nregistries:\n  mirors: {}\n");
        let err = etc.load().unwrap_err().to_string();
        assert!(err.contains(&bad.display().to_string()), "{err}");
        assert!(err.contains("registries: unknown field `mirors`"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(!err.contains("10-good"), "{err}");
        // At the top level, too.
        std::fs::write(&bad, "sockett: /x\n").unwrap();
        let err = etc.load().unwrap_err().to_string();
        assert!(
            err.contains("20-bad.yaml") && err.contains("`sockett`") && err.contains("line 1"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_inside_a_handler_a_later_dropin_completes() {
        // 10 adds a handler without its shim (valid once 20 names it), 30
        // misspells one of its keys: 30 is the culprit, found by path even
        // though the file alone fails differently (missing shim).
        let etc = Etc::new(None);
        etc.dropin(
            "10-a.yaml",
            "runtime:\n  handlers:\n    kata:\n      options: {}\n",
        );
        etc.dropin(
            "20-b.yaml",
            "runtime:\n  handlers:\n    kata:\n      shim: kata-shim\n",
        );
        assert_eq!(
            etc.load().unwrap().config.runtime.handlers["kata"].shim,
            "kata-shim"
        );
        etc.dropin(
            "30-c.yaml",
            "runtime:\n  handlers:\n    kata:\n      optoins: {}\n",
        );
        let err = etc.load().unwrap_err().to_string();
        assert!(err.contains("30-c.yaml"), "{err}");
        assert!(err.contains("optoins") && err.contains("line 4"), "{err}");
    }

    #[test]
    fn wrong_type_in_a_dropin_is_named_with_its_file() {
        let etc = Etc::new(Some("registries:\n  max_concurrent_downloads: 2\n"));
        etc.dropin(
            "10-x.yaml",
            "registries:\n  max_concurrent_downloads: many\n",
        );
        let err = etc.load().unwrap_err().to_string();
        assert!(err.contains("10-x.yaml"), "{err}");
        assert!(
            err.contains("registries.max_concurrent_downloads") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn bad_yaml_is_named_with_its_file() {
        let etc = Etc::new(Some("root: /x\n"));
        etc.dropin("10-bad.yaml", "root: [\n");
        let err = etc.load().unwrap_err().to_string();
        assert!(
            err.contains("10-bad.yaml") && err.contains("line 2"),
            "{err}"
        );
        etc.dropin("10-bad.yaml", "- root\n- state\n");
        let err = etc.load().unwrap_err().to_string();
        assert!(
            err.contains("10-bad.yaml") && err.contains("not a list"),
            "{err}"
        );
    }

    #[test]
    fn validation_errors_name_the_file_that_set_the_key() {
        let etc = Etc::new(Some("root: /x\n"));
        etc.dropin("10-a.yaml", "cni:\n  bin_dirs: [relative/bin]\n");
        let err = etc.load().unwrap_err().to_string();
        assert!(
            err.contains("10-a.yaml") && err.contains("cni.bin_dirs"),
            "{err}"
        );
        etc.dropin(
            "10-a.yaml",
            "runtime:\n  handlers:\n    Bad_Name: {shim: x}\n",
        );
        etc.dropin(
            "20-b.yaml",
            "runtime:\n  handlers:\n    crust: {options: {a: b}}\n",
        );
        let err = etc.load().unwrap_err().to_string();
        assert!(
            err.contains("10-a.yaml") && err.contains("Bad_Name"),
            "{err}"
        );
    }

    #[test]
    fn only_regular_yaml_files_are_read() {
        let etc = Etc::new(None);
        let d = etc.dir.path().join(DROPIN_DIR_NAME);
        etc.dropin("10-a.yaml", "root: /a\n");
        etc.dropin("20-b.yml", "state: /run/b\n");
        // Not drop-ins: other suffixes, hidden names, directories.
        etc.dropin("30-c.yaml.bak", "root: /bak\n");
        etc.dropin("README", "root: /readme\n");
        etc.dropin(".40-hidden.yaml", "root: /hidden\n");
        etc.dropin("50-x.yaml~", "root: /tilde\n");
        std::fs::create_dir(d.join("60-dir.yaml")).unwrap();
        // A symlink to a regular file is read (ConfigMaps mount as links).
        let target = etc.dir.path().join("elsewhere.yaml");
        std::fs::write(&target, "socket: /run/linked/crust.sock\n").unwrap();
        std::os::unix::fs::symlink(&target, d.join("70-linked.yaml")).unwrap();
        std::os::unix::fs::symlink(etc.dir.path(), d.join("80-dirlink.yaml")).unwrap();
        let loaded = etc.load().unwrap();
        let names: Vec<String> = loaded
            .files()
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10-a.yaml", "20-b.yml", "70-linked.yaml"]);
        assert_eq!(loaded.config.root, Path::new("/a"));
        assert_eq!(loaded.config.socket, Path::new("/run/linked/crust.sock"));
        // A dangling link is a mistake worth saying.
        std::os::unix::fs::symlink(d.join("nowhere"), d.join("90-dangling.yaml")).unwrap();
        let err = etc.load().unwrap_err().to_string();
        assert!(err.contains("90-dangling.yaml"), "{err}");
    }

    #[test]
    fn count_and_size_are_capped() {
        let etc = Etc::new(None);
        for i in 0..=MAX_DROPINS {
            etc.dropin(&format!("{i:04}.yaml"), "");
        }
        let err = etc.load().unwrap_err().to_string();
        assert!(err.contains("257 drop-ins") && err.contains("256"), "{err}");
        let etc = Etc::new(None);
        let big = format!("# {}\n", "x".repeat(MAX_CONFIG_FILE_BYTES as usize));
        etc.dropin("10-big.yaml", &big);
        let err = etc.load().unwrap_err().to_string();
        assert!(
            err.contains("10-big.yaml") && err.contains("larger"),
            "{err}"
        );
    }

    #[test]
    fn main_file_errors_read_as_they_did_without_dropins() {
        let etc = Etc::new(Some("root: /x\nregistries:\n  mirors: {}\n"));
        let err = etc.load().unwrap_err().to_string();
        let alone = Config::from_yaml(
            "root: /x\nregistries:\n  mirors: {}\n",
            &etc.main().display().to_string(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, alone);
    }

    #[test]
    fn annotated_yaml_names_origins_and_parses_back() {
        let etc = Etc::new(Some("root: /main\nlog:\n  level: debug\n"));
        let a = etc.dropin(
            "10-a.yaml",
            "registries:\n  mirrors:\n    docker.io: [https://m.example]\n  plain_http: [\"x:5000\"]\nstreaming:\n  address: 127.0.0.1:10010\n",
        );
        let b = etc.dropin("20-b.yaml", "root: /b\nimage_fs: /srv/img\n");
        let mut loaded = etc.load().unwrap();
        loaded.config.log.format = crate::LogFormat::Json;
        loaded.set_by_flag("log.format", "--log-format");
        let text = loaded.annotated_yaml();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} in:\n{text}"))
                .to_string()
        };
        let from = |p: &Path| format!("# from {}", p.display());
        assert!(line("root:").ends_with(&from(&b)), "{text}");
        assert!(line("image_fs:").ends_with(&from(&b)), "{text}");
        assert!(line("level:").ends_with(&from(&etc.main())), "{text}");
        assert!(line("format:").ends_with("# from --log-format"), "{text}");
        assert!(line("docker.io:").ends_with(&from(&a)), "{text}");
        assert!(line("plain_http:").ends_with(&from(&a)), "{text}");
        assert!(
            line("address: 127.0.0.1:10010").ends_with(&from(&a)),
            "{text}"
        );
        assert!(line("state:").ends_with("# default"), "{text}");
        assert!(line("mirrors:").ends_with("mirrors:"), "{text}");
        assert!(text.contains(&format!("#   {}\n#   {}\n", a.display(), b.display())));
        // Comments aside, it is the effective config itself.
        assert_eq!(Config::from_yaml(&text, "dump").unwrap(), loaded.config);
        let defaults = LoadedConfig::from_layers(Vec::new()).unwrap();
        let text = defaults.annotated_yaml();
        assert_eq!(Config::from_yaml(&text, "dump").unwrap(), Config::default());
        assert!(
            text.lines()
                .filter(|l| l.contains(": "))
                .all(|l| l.ends_with("# default")),
            "{text}"
        );
    }

    #[test]
    fn annotated_yaml_quotes_what_needs_quoting() {
        let etc = Etc::new(None);
        etc.dropin(
            "10-a.yaml",
            "runtime:\n  handlers:\n    \"yes\":\n      shim: \"containerd-shim-runc-v2\"\n      options:\n        BinaryName: \"a # b\"\n        ShimCgroup: \"line one\\nline two\"\n        Root: \"\"\n        NoPivotRoot: true\n        IoUid: 7\n",
        );
        let loaded = etc.load().unwrap();
        let text = loaded.annotated_yaml();
        assert_eq!(
            Config::from_yaml(&text, "dump").unwrap(),
            loaded.config,
            "{text}"
        );
    }
}
