//! crust's default AppArmor profile: loaded on a host with AppArmor before
//! a container that needs it is created, as containerd loads its
//! `cri-containerd.apparmor.d`. Whether a container needs it, and what
//! happens when it could not be loaded (CreateContainer fails; nothing
//! runs unconfined in its place), is crust-spec's decision.

use std::io::Write;
use std::process::{Command, Stdio};

use crust_spec::{APPARMOR_DEFAULT_PROFILE, SecurityModules, apparmor_profile_loaded};

/// The profile's text (`apparmor_default.profile` next to this file).
const PROFILE: &str = include_str!("apparmor_default.profile");

/// Loads [`APPARMOR_DEFAULT_PROFILE`] with `apparmor_parser -Kr` when the
/// host has AppArmor and the profile is not loaded; logs a failure (the
/// spec then refuses containers that need the profile, with the reason).
pub(crate) fn ensure_default_apparmor_profile() {
    if !SecurityModules::host().apparmor || apparmor_profile_loaded(APPARMOR_DEFAULT_PROFILE) {
        return;
    }
    static LOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOADING.lock().unwrap_or_else(|p| p.into_inner());
    if apparmor_profile_loaded(APPARMOR_DEFAULT_PROFILE) {
        return;
    }
    match load(PROFILE) {
        Ok(()) => tracing::info!(
            profile = APPARMOR_DEFAULT_PROFILE,
            "AppArmor profile loaded"
        ),
        Err(e) => tracing::warn!(
            profile = APPARMOR_DEFAULT_PROFILE,
            error = %e,
            "cannot load crust's default AppArmor profile; containers that need it will fail to create"
        ),
    }
}

/// Runs `apparmor_parser -Kr` (replace, do not write the cache) on `text`.
fn load(text: &str) -> Result<(), String> {
    let mut child = Command::new("apparmor_parser")
        .arg("-Kr")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running apparmor_parser: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("writing to apparmor_parser: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for apparmor_parser: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "apparmor_parser {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_is_crusts() {
        assert!(PROFILE.contains(&format!("profile {APPARMOR_DEFAULT_PROFILE} ")));
        assert!(PROFILE.contains("deny mount,"));
        // Balanced braces: apparmor_parser is not here to check it.
        assert_eq!(PROFILE.matches('{').count(), PROFILE.matches('}').count());
        // Without AppArmor (this CI host), nothing happens.
        if !SecurityModules::host().apparmor {
            ensure_default_apparmor_profile();
        }
    }
}
