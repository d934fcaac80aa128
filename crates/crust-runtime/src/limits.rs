//! The process limits containers start with. crustd raises its own
//! RLIMIT_NOFILE soft limit to the hard one (it holds many connections);
//! containers must not inherit that, or a container gets whatever crustd
//! needed (containerd dropped `LimitNOFILE=infinity` for this reason).
//! They get the limit crustd was started with, as a runc container run
//! from the same unit would.

use std::sync::OnceLock;

use oci_spec::runtime::{PosixRlimitBuilder, PosixRlimitType, Spec};

use crate::RuntimeError;

static CONTAINER_NOFILE: OnceLock<(u64, u64)> = OnceLock::new();

/// Records RLIMIT_NOFILE (soft, hard) as crustd found it, before raising
/// its own: containers without an rlimit of their own get it. Only the
/// first call counts.
pub fn set_container_nofile(soft: u64, hard: u64) {
    let _ = CONTAINER_NOFILE.set((soft, hard));
}

/// Puts the recorded RLIMIT_NOFILE into a spec that names none.
pub(crate) fn give_container_nofile(spec: &mut Spec) -> Result<(), RuntimeError> {
    let Some(&(soft, hard)) = CONTAINER_NOFILE.get() else {
        return Ok(());
    };
    with_nofile(spec, soft, hard)
}

fn with_nofile(spec: &mut Spec, soft: u64, hard: u64) -> Result<(), RuntimeError> {
    let Some(mut process) = spec.process().clone() else {
        return Ok(());
    };
    let mut rlimits = process.rlimits().clone().unwrap_or_default();
    if rlimits
        .iter()
        .any(|r| r.typ() == PosixRlimitType::RlimitNofile)
    {
        return Ok(());
    }
    rlimits.push(
        PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(soft)
            .hard(hard)
            .build()
            .map_err(|e| RuntimeError::Internal(format!("RLIMIT_NOFILE for the spec: {e}")))?,
    );
    process.set_rlimits(Some(rlimits));
    spec.set_process(Some(process));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_without_nofile_gets_it_and_one_with_it_keeps_its_own() {
        let mut spec = Spec::default();
        let mut process = spec.process().clone().unwrap();
        process.set_rlimits(None);
        spec.set_process(Some(process));
        with_nofile(&mut spec, 1024, 4096).unwrap();
        let limits = spec.process().as_ref().unwrap().rlimits().clone().unwrap();
        assert_eq!(limits.len(), 1);
        assert_eq!(
            (limits[0].typ(), limits[0].soft(), limits[0].hard()),
            (PosixRlimitType::RlimitNofile, 1024, 4096)
        );
        with_nofile(&mut spec, 1, 2).unwrap();
        let limits = spec.process().as_ref().unwrap().rlimits().clone().unwrap();
        assert_eq!((limits.len(), limits[0].soft()), (1, 1024));
    }
}
