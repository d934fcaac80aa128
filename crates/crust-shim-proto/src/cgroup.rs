//! Where a container's cgroup is, as both sides must agree: crust-shim
//! creates it, crustd reads its usage. cgroupfs paths are taken as they
//! are; the systemd driver's forms are laid out as systemd lays out units:
//! `slice:prefix:name` is the scope `prefix-name.scope` in that slice, and
//! a bare slice name such as `kubepods-besteffort-pod1.slice` nests in its
//! parents (`kubepods.slice/kubepods-besteffort.slice/...`).

/// A systemd-driver cgroups path split into its unit and slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdUnit {
    /// `prefix-name.scope` (or the name, when it is itself a slice).
    pub unit: String,
    /// The slice the unit goes in (`system.slice` when empty).
    pub slice: String,
}

/// `slice:prefix:name` (the OCI spec's systemd form), or None.
pub fn systemd_unit(path: &str) -> Option<SystemdUnit> {
    if path.contains('/') {
        return None;
    }
    let [slice, prefix, name] = path.split(':').collect::<Vec<_>>()[..] else {
        return None;
    };
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    Some(SystemdUnit {
        unit,
        slice: slice.to_string(),
    })
}

/// The cgroup's directory relative to a hierarchy's root (no leading `/`).
pub fn relative_dir(path: &str) -> String {
    let dir = if let Some(u) = systemd_unit(path) {
        format!("{}/{}", expand_slice(&u.slice), u.unit)
    } else if !path.contains('/') && path.ends_with(".slice") {
        expand_slice(path)
    } else {
        path.to_string()
    };
    dir.trim_start_matches('/').to_string()
}

/// systemd's slice nesting: `a-b-c.slice` lives at
/// `a.slice/a-b.slice/a-b-c.slice`; `-.slice` is the root.
fn expand_slice(slice: &str) -> String {
    let name = slice.trim_end_matches(".slice");
    if name == "-" || name.is_empty() {
        return String::new();
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push_str(&format!("/{prefix}.slice"));
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_paths_are_laid_out_as_systemd_does() {
        assert_eq!(
            relative_dir("kubepods-besteffort-pod1.slice:cri-crust:abc"),
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-crust-abc.scope"
        );
        assert_eq!(
            relative_dir("system.slice:cri-crust:abc"),
            "system.slice/cri-crust-abc.scope"
        );
        assert_eq!(
            relative_dir(":cri-crust:abc"),
            "system.slice/cri-crust-abc.scope"
        );
        assert_eq!(relative_dir("-.slice:x:y"), "x-y.scope");
        assert_eq!(
            relative_dir("kubepods-pod2.slice"),
            "kubepods.slice/kubepods-pod2.slice"
        );
        // cgroupfs paths stay as they are.
        assert_eq!(
            relative_dir("/kubepods/besteffort/pod1/abc"),
            "kubepods/besteffort/pod1/abc"
        );
        assert_eq!(
            relative_dir("/kubepods.slice/x.slice"),
            "kubepods.slice/x.slice"
        );
        assert_eq!(
            systemd_unit("kubepods-pod1.slice:cri-crust:abc"),
            Some(SystemdUnit {
                unit: "cri-crust-abc.scope".into(),
                slice: "kubepods-pod1.slice".into()
            })
        );
        assert_eq!(systemd_unit("/a:b:c"), None);
        assert_eq!(systemd_unit("a:b"), None);
    }
}
