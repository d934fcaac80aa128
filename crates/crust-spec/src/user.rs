//! The container's uid, gid and additional gids: CRI security context
//! first, then the image's USER, resolved against the image's /etc/passwd
//! and /etc/group (contents read by the caller, size-limited).

use std::collections::BTreeSet;

use crust_cri_api::v1::{LinuxContainerSecurityContext, SupplementalGroupsPolicy};

use crate::{ImageFacts, SpecError};

/// Parses a numeric uid or gid strictly: ASCII digits only (no sign, no
/// whitespace), within u32, and not 4294967295 — that value is (uid_t)-1,
/// which setresuid(2) reads as "leave unchanged", i.e. stay root.
pub fn parse_uid(s: &str) -> Result<u32, SpecError> {
    parse_id("uid", s)
}

pub(crate) fn parse_id(field: &str, s: &str) -> Result<u32, SpecError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SpecError::invalid(
            field,
            s,
            "must be a decimal number (digits only, no sign or spaces)",
        ));
    }
    check_id(field, s, s.parse::<u32>().ok())
}

/// CRI carries ids as int64.
pub(crate) fn id_from_i64(field: &str, v: i64) -> Result<u32, SpecError> {
    check_id(field, &v.to_string(), u32::try_from(v).ok())
}

fn check_id(field: &str, shown: &str, v: Option<u32>) -> Result<u32, SpecError> {
    match v {
        Some(v) if v != u32::MAX => Ok(v),
        _ => Err(SpecError::invalid(
            field,
            shown,
            "out of range: ids are 0 to 4294967294",
        )),
    }
}

/// A user or group as written: all digits means an id, anything else a name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IdRef {
    Id(u32),
    Name(String),
}

impl IdRef {
    fn parse(field: &str, s: &str) -> Result<Self, SpecError> {
        if s.is_empty() {
            return Err(SpecError::invalid(field, s, "empty user or group"));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            // Digits that overflow are an error, never a name and never a wrap.
            return parse_id(field, s).map(IdRef::Id);
        }
        Ok(IdRef::Name(s.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Sorted, deduplicated, always holding `gid` (containerd's fix for
    /// CVE-2023-25173: the primary group must be in the supplementary list).
    pub additional_gids: Vec<u32>,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: &'a str,
}

/// Well-formed lines only; anything malformed is skipped, as libc does.
fn passwd_entries(contents: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    contents.lines().filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let uid = parse_id("uid", f.next()?).ok()?;
        let gid = parse_id("gid", f.next()?).ok()?;
        (!name.is_empty() && !name.starts_with(['#', '+', '-'])).then_some(PasswdEntry {
            name,
            uid,
            gid,
        })
    })
}

fn group_entries(contents: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    contents.lines().filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let gid = parse_id("gid", f.next()?).ok()?;
        let members = f.next().unwrap_or("");
        (!name.is_empty() && !name.starts_with(['#', '+', '-'])).then_some(GroupEntry {
            name,
            gid,
            members,
        })
    })
}

pub(crate) fn resolve_user(
    sc: Option<&LinuxContainerSecurityContext>,
    image: &ImageFacts<'_>,
) -> Result<ResolvedUser, SpecError> {
    let run_as_group = match sc.and_then(|s| s.run_as_group.as_ref()) {
        Some(g) => Some(IdRef::Id(id_from_i64("run_as_group", g.value)?)),
        None => None,
    };

    // CRI's table (as containerd): username beats uid; run_as_group sets
    // the group, and only together with one of them (the conformance suite
    // checks that run_as_group alone is refused, as containerd does).
    let username = sc.map(|s| s.run_as_username.as_str()).unwrap_or("");
    if let Some(IdRef::Id(gid)) = &run_as_group
        && username.is_empty()
        && sc.and_then(|s| s.run_as_user.as_ref()).is_none()
    {
        return Err(SpecError::invalid(
            "run_as_group",
            gid.to_string(),
            "needs run_as_user or run_as_username as well",
        ));
    }
    let (field, user, group) = if !username.is_empty() {
        (
            "run_as_username",
            IdRef::parse("run_as_username", username)?,
            run_as_group,
        )
    } else if let Some(uid) = sc.and_then(|s| s.run_as_user.as_ref()) {
        (
            "run_as_user",
            IdRef::Id(id_from_i64("run_as_user", uid.value)?),
            run_as_group,
        )
    } else if !image.config.user.is_empty() {
        let spec = image.config.user.as_str();
        let (u, g) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        if g.is_some_and(|g| g.contains(':')) {
            return Err(SpecError::invalid(
                "image USER",
                spec,
                "expected user, uid, user:group or uid:gid",
            ));
        }
        let image_group = match g {
            Some(g) => Some(IdRef::parse("image USER group", g)?),
            None => None,
        };
        (
            "image USER",
            IdRef::parse("image USER", u)?,
            run_as_group.or(image_group),
        )
    } else {
        ("default user", IdRef::Id(0), run_as_group)
    };

    let passwd = image.passwd.unwrap_or("");
    let (uid, mut gid, name) = match &user {
        IdRef::Id(uid) => match passwd_entries(passwd).find(|e| e.uid == *uid) {
            Some(e) => (*uid, e.gid, Some(e.name)),
            // Unknown numeric uids run with gid 0, as containerd and Docker.
            None => (*uid, 0, None),
        },
        IdRef::Name(n) => match passwd_entries(passwd).find(|e| e.name == n) {
            Some(e) => (e.uid, e.gid, Some(e.name)),
            None => {
                return Err(SpecError::UnknownUser {
                    field: field.to_string(),
                    name: n.clone(),
                    detail: missing_file_detail(image.passwd, "/etc/passwd"),
                });
            }
        },
    };

    let groups = image.group.unwrap_or("");
    if let Some(g) = group {
        gid = match g {
            IdRef::Id(g) => g,
            IdRef::Name(n) => match group_entries(groups).find(|e| e.name == n) {
                Some(e) => e.gid,
                None => {
                    return Err(SpecError::UnknownGroup {
                        field: format!("{field} group"),
                        name: n,
                        detail: missing_file_detail(image.group, "/etc/group"),
                    });
                }
            },
        };
    }

    let mut extra = BTreeSet::from([gid]);
    let policy = sc.map(|s| s.supplemental_groups_policy).unwrap_or(0);
    match SupplementalGroupsPolicy::try_from(policy) {
        Ok(SupplementalGroupsPolicy::Merge) => {
            if let Some(name) = name {
                extra.extend(
                    group_entries(groups)
                        .filter(|e| e.members.split(',').any(|m| m.trim() == name))
                        .map(|e| e.gid),
                );
            }
        }
        // Strict: only the primary group and the pod's supplemental groups.
        Ok(SupplementalGroupsPolicy::Strict) => {}
        Err(_) => {
            return Err(SpecError::invalid(
                "supplemental_groups_policy",
                policy.to_string(),
                "expected Merge (0) or Strict (1)",
            ));
        }
    }
    for g in sc.map(|s| s.supplemental_groups.as_slice()).unwrap_or(&[]) {
        extra.insert(id_from_i64("supplemental_groups", *g)?);
    }

    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: extra.into_iter().collect(),
    })
}

fn missing_file_detail(contents: Option<&str>, file: &str) -> String {
    match contents {
        Some(_) => String::new(),
        None => format!(" (the image has no {file})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_cri_api::v1::Int64Value;
    use crust_store::ImageConfig;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1::/:/bin/false\n\
        # a comment:x:5:5\n\
        broken line\n\
        overflow:x:4294967296:0::/:/bin/sh\n\
        app:x:1000:1000::/home/app:/bin/sh\n\
        web:x:33:33::/var/www:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        wheel:x:10:root,app\n\
        app:x:1000:\n\
        audio:x:29:app\n\
        www-data:x:33:web\n\
        staff:x:50: app , web\n\
        bad:x:notanumber:app\n";

    fn image(user: &str) -> ImageConfig {
        ImageConfig {
            user: user.into(),
            ..Default::default()
        }
    }

    fn facts<'a>(cfg: &'a ImageConfig) -> ImageFacts<'a> {
        ImageFacts {
            config: cfg,
            passwd: Some(PASSWD),
            group: Some(GROUP),
        }
    }

    fn resolve(
        sc: Option<LinuxContainerSecurityContext>,
        user: &str,
    ) -> Result<ResolvedUser, SpecError> {
        let cfg = image(user);
        resolve_user(sc.as_ref(), &facts(&cfg))
    }

    fn ru(uid: u32, gid: u32, extra: &[u32]) -> ResolvedUser {
        ResolvedUser {
            uid,
            gid,
            additional_gids: extra.to_vec(),
        }
    }

    #[test]
    fn parse_uid_is_strict() {
        assert_eq!(parse_uid("0").unwrap(), 0);
        assert_eq!(parse_uid("1000").unwrap(), 1000);
        assert_eq!(parse_uid("4294967294").unwrap(), 4294967294);
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1\n",
            "0x10",
            "1e3",
            "4294967295",
            "4294967296",
            "18446744073709551616",
            "99999999999999999999999",
            "１",
        ] {
            assert!(parse_uid(bad).is_err(), "{bad:?} must be refused");
        }
        let msg = parse_uid("4294967296").unwrap_err().to_string();
        assert!(msg.contains("uid") && msg.contains("4294967296"), "{msg}");
    }

    #[test]
    fn cri_ids_out_of_range_are_refused() {
        assert!(id_from_i64("run_as_user", -1).is_err());
        assert!(id_from_i64("run_as_user", 4294967295).is_err());
        assert!(id_from_i64("run_as_user", 4294967296).is_err());
        assert_eq!(id_from_i64("run_as_user", 65534).unwrap(), 65534);
    }

    #[test]
    fn default_is_root_with_roots_groups() {
        assert_eq!(resolve(None, "").unwrap(), ru(0, 0, &[0, 10]));
    }

    #[test]
    fn image_user_forms() {
        assert_eq!(
            resolve(None, "app").unwrap(),
            ru(1000, 1000, &[10, 29, 50, 1000])
        );
        assert_eq!(
            resolve(None, "1000").unwrap(),
            ru(1000, 1000, &[10, 29, 50, 1000])
        );
        assert_eq!(
            resolve(None, "app:audio").unwrap(),
            ru(1000, 29, &[10, 29, 50])
        );
        assert_eq!(
            resolve(None, "1000:33").unwrap(),
            ru(1000, 33, &[10, 29, 33, 50])
        );
        assert_eq!(
            resolve(None, "web:1234").unwrap(),
            ru(33, 1234, &[33, 50, 1234])
        );
        // Unknown numeric uid: gid 0, no memberships.
        assert_eq!(resolve(None, "4242").unwrap(), ru(4242, 0, &[0]));
        assert_eq!(resolve(None, "4242:wheel").unwrap(), ru(4242, 10, &[10]));
    }

    #[test]
    fn image_user_errors_name_field_and_value() {
        let e = resolve(None, "nobody").unwrap_err().to_string();
        assert!(e.contains("image USER") && e.contains("nobody"), "{e}");
        let e = resolve(None, "app:nogroup").unwrap_err().to_string();
        assert!(e.contains("nogroup"), "{e}");
        for bad in [
            "4294967296",
            "4294967295",
            "1:4294967296",
            "a:b:c",
            ":5",
            "5:",
        ] {
            assert!(resolve(None, bad).is_err(), "{bad:?} must be refused");
        }
        // "-1" and "+0" are names, and no such user exists: never root.
        assert!(matches!(
            resolve(None, "-1"),
            Err(SpecError::UnknownUser { .. })
        ));
        assert!(matches!(
            resolve(None, "+0"),
            Err(SpecError::UnknownUser { .. })
        ));
        // The malformed passwd line with an overflowing uid is ignored.
        assert!(matches!(
            resolve(None, "overflow"),
            Err(SpecError::UnknownUser { .. })
        ));
    }

    #[test]
    fn named_user_without_passwd_says_so() {
        let cfg = image("app");
        let f = ImageFacts {
            config: &cfg,
            passwd: None,
            group: None,
        };
        let e = resolve_user(None, &f).unwrap_err().to_string();
        assert!(e.contains("has no /etc/passwd"), "{e}");
        // Numeric users need no passwd.
        let cfg = image("1000:1000");
        let f = ImageFacts {
            config: &cfg,
            passwd: None,
            group: None,
        };
        assert_eq!(resolve_user(None, &f).unwrap(), ru(1000, 1000, &[1000]));
    }

    #[test]
    fn security_context_overrides_image() {
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 33 }),
            ..Default::default()
        };
        assert_eq!(resolve(Some(sc), "app").unwrap(), ru(33, 33, &[33, 50]));

        // Username beats uid; run_as_group sets the group.
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 33 }),
            run_as_username: "app".into(),
            run_as_group: Some(Int64Value { value: 7 }),
            ..Default::default()
        };
        assert_eq!(
            resolve(Some(sc), "").unwrap(),
            ru(1000, 7, &[7, 10, 29, 50])
        );

        // run_as_group alone is refused.
        let sc = LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 7 }),
            ..Default::default()
        };
        let e = resolve(Some(sc), "app:audio").unwrap_err().to_string();
        assert!(
            e.contains("run_as_group") && e.contains("run_as_user"),
            "{e}"
        );

        let sc = LinuxContainerSecurityContext {
            run_as_username: "ghost".into(),
            ..Default::default()
        };
        let e = resolve(Some(sc), "").unwrap_err().to_string();
        assert!(e.contains("run_as_username") && e.contains("ghost"), "{e}");

        for bad in [-1, 4294967295, 4294967296, i64::MAX, i64::MIN] {
            let sc = LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: bad }),
                ..Default::default()
            };
            assert!(resolve(Some(sc), "").is_err(), "{bad}");
            let sc = LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: 1 }),
                run_as_group: Some(Int64Value { value: bad }),
                ..Default::default()
            };
            assert!(resolve(Some(sc), "").is_err(), "{bad}");
        }
    }

    #[test]
    fn supplemental_groups_and_policy() {
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            supplemental_groups: vec![2000, 10, 2000],
            ..Default::default()
        };
        assert_eq!(
            resolve(Some(sc.clone()), "").unwrap(),
            ru(1000, 1000, &[10, 29, 50, 1000, 2000])
        );
        let strict = LinuxContainerSecurityContext {
            supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
            ..sc
        };
        assert_eq!(
            resolve(Some(strict.clone()), "").unwrap(),
            ru(1000, 1000, &[10, 1000, 2000])
        );
        let bad = LinuxContainerSecurityContext {
            supplemental_groups: vec![-5],
            ..strict.clone()
        };
        assert!(resolve(Some(bad), "").is_err());
        let unknown = LinuxContainerSecurityContext {
            supplemental_groups_policy: 7,
            ..strict
        };
        assert!(resolve(Some(unknown), "").is_err());
    }
}
