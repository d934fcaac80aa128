//! The one error type of this crate. Every message names what to fix: the
//! file, the plugin, the directories searched, or the plugin's own message.

use std::path::PathBuf;
use std::time::Duration;

use crate::Attachment;

/// What went wrong loading a network config or running a plugin.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The conf dir is missing or holds no `.conflist`/`.conf`/`.json` file.
    #[error("no network config found in {}", dir.display())]
    NoConfig { dir: PathBuf },

    /// The conf dir or a file in it could not be read.
    #[error("cannot read {}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },

    /// A config file is not valid JSON.
    #[error("invalid JSON in {file}: {reason}")]
    InvalidJson { file: String, reason: String },

    /// A config file is JSON but not a valid CNI network config.
    #[error("invalid network config {file}: {reason}")]
    InvalidConfig { file: String, reason: String },

    /// A plugin named by the config is in none of the bin dirs.
    #[error("plugin \"{plugin}\" not found in {dirs} (needed by {needed_by})")]
    PluginNotFound {
        plugin: String,
        dirs: String,
        needed_by: String,
    },

    /// Several config files, none valid: the reason for each, in order.
    #[error("no valid network config in {}: {}", dir.display(), reasons.join("; "))]
    NoValidConfig { dir: PathBuf, reasons: Vec<String> },

    /// The caller's input cannot be passed to a plugin (e.g. a pod name with ';').
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The plugin ran and reported an error (the CNI error JSON
    /// `{code, msg, details}`, or its stderr when it printed none).
    #[error(
        "CNI plugin \"{plugin}\" {command} failed (code {code}): {msg}{}",
        details_suffix(details)
    )]
    Plugin {
        plugin: String,
        command: &'static str,
        code: u64,
        msg: String,
        details: String,
    },

    /// The plugin did not finish in time; it and its process group were killed.
    #[error("CNI plugin \"{plugin}\" {command} timed out after {timeout:?} and was killed")]
    Timeout {
        plugin: String,
        command: &'static str,
        timeout: Duration,
    },

    /// The plugin binary could not be started (it did not run).
    #[error("CNI plugin \"{plugin}\" {command}: cannot run {}: {reason}", binary.display())]
    Spawn {
        plugin: String,
        command: &'static str,
        binary: PathBuf,
        reason: String,
    },

    /// The plugin ran but its output could not be read or was not a valid result.
    #[error("CNI plugin \"{plugin}\" {command}: {reason}")]
    Exec {
        plugin: String,
        command: &'static str,
        reason: String,
    },

    /// ADD failed, and so did the DEL that was to undo the plugins already
    /// added. `attachment` describes what may still be set up: store it and
    /// retry [`crate::Cni::del`] with it until it succeeds.
    #[error("{error}; the DEL undoing the failed ADD also failed (retry DEL): {cleanup}")]
    AddCleanupFailed {
        error: Box<CniError>,
        cleanup: Box<CniError>,
        attachment: Box<Attachment>,
    },
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!("; {details}")
    }
}

impl CniError {
    /// For a failed ADD whose cleanup also failed: what still needs a DEL.
    pub fn pending_attachment(&self) -> Option<&Attachment> {
        match self {
            CniError::AddCleanupFailed { attachment, .. } => Some(attachment),
            _ => None,
        }
    }

    /// True when the error comes from the config (NetworkReady=false
    /// material), not from running a plugin.
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            CniError::NoConfig { .. }
                | CniError::Io { .. }
                | CniError::InvalidJson { .. }
                | CniError::InvalidConfig { .. }
                | CniError::PluginNotFound { .. }
                | CniError::NoValidConfig { .. }
        )
    }

    /// True when a plugin timed out (maps to gRPC DeadlineExceeded).
    pub fn is_timeout(&self) -> bool {
        match self {
            CniError::Timeout { .. } => true,
            CniError::AddCleanupFailed { error, .. } => error.is_timeout(),
            _ => false,
        }
    }
}
