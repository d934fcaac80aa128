//! Every variant names the field and the bad value, so the person reading
//! the CreateContainer error can fix their pod spec. crustd answers them
//! with gRPC InvalidArgument, except crust's own failures
//! ([`SpecError::is_request_error`]), which are Internal.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A field holds a value crust will not translate.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },

    #[error(
        "no command to run: CRI command and args are empty and the image has no Entrypoint or Cmd"
    )]
    NoCommand,

    #[error("{field}: user {name:?} not found in the image's /etc/passwd{detail}")]
    UnknownUser {
        field: String,
        name: String,
        detail: String,
    },

    #[error("{field}: group {name:?} not found in the image's /etc/group{detail}")]
    UnknownGroup {
        field: String,
        name: String,
        detail: String,
    },

    /// A field crust understands but does not implement yet; failing is
    /// better than silently running with weaker isolation.
    #[error("unsupported {field} {value:?}: {reason}")]
    Unsupported {
        field: String,
        value: String,
        reason: String,
    },

    #[error("seccomp profile {profile:?}: {reason}")]
    Seccomp { profile: String, reason: String },

    #[error("{what} {path:?}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path:?} inside the rootfs is {size} bytes, over the {limit} byte limit")]
    TooLarge { path: String, size: u64, limit: u64 },

    /// A list from an image config or a CRI request is over one of
    /// [`crate::limits`]'s bounds.
    #[error("{list} has {actual} {unit}, over crust's limit of {limit}")]
    TooMany {
        list: String,
        actual: usize,
        limit: usize,
        unit: &'static str,
    },

    #[error("building the OCI spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}

impl SpecError {
    /// Whether the request or image is at fault (a person must change
    /// them), rather than crust: the OCI builder refusing what crust built
    /// from checked input is crust's bug.
    pub fn is_request_error(&self) -> bool {
        !matches!(self, SpecError::Build(_))
    }

    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        SpecError::Invalid {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        SpecError::Unsupported {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// Rejects NUL and other control characters: they cannot cross execve or
/// the kernel's string interfaces intact, and in sysctl values they were
/// an injection vector (CRI-O CVE-2022-0811).
pub(crate) fn reject_control(field: &str, value: &str) -> Result<(), SpecError> {
    if value.chars().any(char::is_control) {
        return Err(SpecError::invalid(
            field,
            value,
            "contains a control character",
        ));
    }
    Ok(())
}

/// execve cannot carry NUL; everything else is the program's business.
pub(crate) fn reject_nul(field: &str, value: &str) -> Result<(), SpecError> {
    if value.contains('\0') {
        return Err(SpecError::invalid(field, value, "contains a NUL byte"));
    }
    Ok(())
}
