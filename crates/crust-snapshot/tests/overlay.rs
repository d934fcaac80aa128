//! End to end, as root: unpack layers, commit them, prepare a container's
//! read-write snapshot, overlay-mount it and look at the merged view.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crust_snapshot::{SnapshotError, Snapshotter, dir_usage, unpack_layer};
use nix::mount::{MntFlags, umount2};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root (overlay mounts)");
            return;
        }
    };
}

/// A tar stream from (path, kind, content-or-link) triples.
fn tar(entries: &[(&str, char, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match kind {
            'd' => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
            'f' => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_bytes()).unwrap();
            }
            'h' => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, path, data).unwrap();
            }
            's' => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, data).unwrap();
            }
            k => panic!("kind {k}"),
        }
    }
    b.into_inner().unwrap()
}

fn chain_id(n: u32) -> String {
    format!("sha256:{:064x}", n)
}

fn add_layer(s: &Snapshotter, id: &str, tar_bytes: &[u8]) {
    let p = s.begin_layer().unwrap();
    unpack_layer(tar_bytes, p.path()).unwrap();
    p.commit(id).unwrap();
}

/// Unmounts on drop so a failed assertion leaves no mount behind.
struct Mounted(PathBuf);

impl Mounted {
    fn unmount(self) {
        umount2(&self.0, MntFlags::empty()).unwrap();
        std::mem::forget(self);
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn two_layers_merged_through_overlay() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let s = Snapshotter::new(&t.path().join("snapshots")).unwrap();
    assert_eq!(
        fs::metadata(t.path().join("snapshots"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let (lower, upper) = (chain_id(1), chain_id(2));
    add_layer(
        &s,
        &lower,
        &tar(&[
            ("data", 'd', ""),
            ("data/a", 'f', "a"),
            ("data/dir", 'd', ""),
            ("data/dir/f", 'f', "f"),
            ("data/dir/g", 'f', "g"),
            ("data/opq", 'd', ""),
            ("data/opq/old", 'f', "old"),
        ]),
    );
    add_layer(
        &s,
        &upper,
        &tar(&[
            ("data", 'd', ""),
            ("data/dir", 'd', ""),
            ("data/dir/.wh.f", 'f', ""),
            ("data/opq", 'd', ""),
            ("data/opq/.wh..wh..opq", 'f', ""),
            ("data/opq/new", 'f', "new"),
        ]),
    );
    assert!(s.has_layer(&lower) && s.has_layer(&upper));
    assert_eq!(s.layers().unwrap(), vec![lower.clone(), upper.clone()]);

    let rw = s
        .prepare_rw("ctr1", &[lower.clone(), upper.clone()])
        .unwrap();
    assert_eq!(rw.lowers, vec![s.layer_dir(&upper), s.layer_dir(&lower)]);
    assert_eq!(rw.upper, t.path().join("snapshots/rw/ctr1/upper"));
    assert!(matches!(
        s.prepare_rw("ctr1", std::slice::from_ref(&lower)),
        Err(SnapshotError::RwExists(_))
    ));

    let target = t.path().join("rootfs");
    fs::create_dir(&target).unwrap();
    s.mount_rw(&rw, &target).unwrap();
    let m = Mounted(target.clone());

    assert_eq!(fs::read(target.join("data/a")).unwrap(), b"a");
    assert!(
        !target.join("data/dir/f").exists(),
        "whiteout hides the lower file"
    );
    assert_eq!(names(&target.join("data/dir")), ["g"]);
    assert_eq!(
        names(&target.join("data/opq")),
        ["new"],
        "opaque dir hides lower content"
    );

    fs::write(target.join("data/written"), b"w").unwrap();
    fs::remove_file(target.join("data/a")).unwrap();
    assert_eq!(fs::read(rw.upper.join("data/written")).unwrap(), b"w");
    let wh = fs::symlink_metadata(rw.upper.join("data/a")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "delete became a whiteout in upper"
    );
    assert!(!s.layer_dir(&upper).join("data/written").exists());
    assert_eq!(fs::read(s.layer_dir(&lower).join("data/a")).unwrap(), b"a");

    // Nothing in use may be removed.
    match s.remove_rw("ctr1") {
        Err(e @ SnapshotError::StillMounted { .. }) => {
            assert!(e.to_string().contains(target.to_str().unwrap()), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.remove_layer(&lower),
        Err(SnapshotError::StillMounted { .. })
    ));
    assert!(rw.upper.exists());

    m.unmount();
    s.remove_rw("ctr1").unwrap();
    assert!(!t.path().join("snapshots/rw/ctr1").exists());
    s.remove_rw("ctr1").unwrap();
    s.remove_layer(&lower).unwrap();
    s.remove_layer(&lower).unwrap();
    assert!(!s.has_layer(&lower));
    assert_eq!(s.layers().unwrap(), vec![upper]);
    assert!(
        !names(&t.path().join("snapshots"))
            .iter()
            .any(|n| n.starts_with("tmp-"))
    );
}

/// More layers than mount(2)'s one-page option string holds: the new mount
/// API with one lowerdir+ per layer.
#[test]
fn many_layers_use_the_new_mount_api() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let s = Snapshotter::new(&t.path().join("snapshots")).unwrap();
    let chain: Vec<String> = (1..=60).map(chain_id).collect();
    for (i, id) in chain.iter().enumerate() {
        let body = format!("layer {i}");
        add_layer(
            &s,
            id,
            &tar(&[
                ("l", 'd', ""),
                (&format!("l/{i}"), 'f', &body),
                ("top", 'f', &body),
            ]),
        );
    }
    let rw = s.prepare_rw("many", &chain).unwrap();
    let opts_len: usize = rw.lowers.iter().map(|p| p.as_os_str().len() + 1).sum();
    assert!(
        opts_len > 4096,
        "the test must exceed one page ({opts_len})"
    );
    let target = t.path().join("rootfs");
    fs::create_dir(&target).unwrap();
    s.mount_rw(&rw, &target).unwrap();
    let m = Mounted(target.clone());
    assert_eq!(fs::read_dir(target.join("l")).unwrap().count(), 60);
    assert_eq!(
        fs::read(target.join("top")).unwrap(),
        b"layer 59",
        "top-most layer wins"
    );
    assert!(matches!(
        s.remove_rw("many"),
        Err(SnapshotError::StillMounted { .. })
    ));
    assert!(matches!(
        s.remove_layer(&chain[0]),
        Err(SnapshotError::StillMounted { .. })
    ));
    m.unmount();
    s.remove_rw("many").unwrap();
}

#[test]
fn image_without_layers_gets_an_empty_lower() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let s = Snapshotter::new(&t.path().join("snapshots")).unwrap();
    let rw = s.prepare_rw("empty", &[]).unwrap();
    assert_eq!(rw.lowers, vec![t.path().join("snapshots/rw/empty/lower")]);
    let target = t.path().join("rootfs");
    fs::create_dir(&target).unwrap();
    s.mount_rw(&rw, &target).unwrap();
    let m = Mounted(target.clone());
    assert!(names(&target).is_empty());
    fs::write(target.join("x"), b"x").unwrap();
    m.unmount();
    s.remove_rw("empty").unwrap();
}

/// The container's `/` takes the top layer's root owner and mode.
#[test]
fn upper_root_mirrors_top_layer_root() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let s = Snapshotter::new(&t.path().join("snapshots")).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o750);
    h.set_uid(7);
    h.set_gid(8);
    h.set_size(0);
    b.append_data(&mut h, "./", &[][..]).unwrap();
    add_layer(&s, &chain_id(9), &b.into_inner().unwrap());
    let rw = s.prepare_rw("c", &[chain_id(9)]).unwrap();
    let md = fs::metadata(&rw.upper).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o750, 7, 8));
}

#[test]
fn commit_race_and_crash_leftovers() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("snapshots");
    let s = Snapshotter::new(&root).unwrap();
    let id = chain_id(3);
    let first = s.begin_layer().unwrap();
    let second = s.begin_layer().unwrap();
    fs::write(first.path().join("who"), b"first").unwrap();
    fs::write(second.path().join("who"), b"second").unwrap();
    let second_tmp = second.path().parent().unwrap().to_path_buf();
    first.commit(&id).unwrap();
    second.commit(&id).unwrap();
    assert_eq!(fs::read(s.layer_dir(&id).join("who")).unwrap(), b"first");
    assert!(!second_tmp.exists(), "the loser's temp dir is gone");

    // Dropped without commit: removed.
    let p = s.begin_layer().unwrap();
    let tmp = p.path().parent().unwrap().to_path_buf();
    drop(p);
    assert!(!tmp.exists());

    // A crash leaves tmp-* behind; the next start removes it.
    let p = s.begin_layer().unwrap();
    fs::write(p.path().join("half"), b"h").unwrap();
    let tmp = p.path().parent().unwrap().to_path_buf();
    std::mem::forget(p);
    fs::create_dir_all(root.join("tmp-del-1/x")).unwrap();
    assert!(tmp.exists());
    let s = Snapshotter::new(&root).unwrap();
    assert!(!tmp.exists() && !root.join("tmp-del-1").exists());
    assert_eq!(s.layers().unwrap(), vec![id]);
}

#[test]
fn bad_ids_and_keys() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("snapshots");
    let s = Snapshotter::new(&root).unwrap();
    for bad in [
        "sha256:../../etc",
        "sha256:ABC",
        "md5:00",
        "",
        &format!("sha256:{}", "g".repeat(64)),
    ] {
        assert!(s.layer_dir(bad).starts_with(root.join("layers")), "{bad}");
        assert!(!s.has_layer(bad));
        assert!(matches!(
            s.remove_layer(bad),
            Err(SnapshotError::InvalidChainId(_))
        ));
        let p = s.begin_layer().unwrap();
        assert!(matches!(
            p.commit(bad),
            Err(SnapshotError::InvalidChainId(_))
        ));
    }
    for bad in ["", "..", "../x", "a/b", ".hidden", &"k".repeat(129)] {
        assert!(
            matches!(s.prepare_rw(bad, &[]), Err(SnapshotError::InvalidKey(_))),
            "{bad}"
        );
        assert!(
            matches!(s.remove_rw(bad), Err(SnapshotError::InvalidKey(_))),
            "{bad}"
        );
    }
    match s.prepare_rw("c", &[chain_id(5)]) {
        Err(e @ SnapshotError::LayerNotFound(_)) => assert!(e.to_string().contains(&chain_id(5))),
        other => panic!("{other:?}"),
    }
    assert!(s.layers().unwrap().is_empty());
}

/// Hardlinked inodes count once; symlinks are not followed.
#[test]
fn usage_counts_each_inode_once() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("tree");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("big"), vec![1u8; 1 << 20]).unwrap();
    fs::hard_link(d.join("big"), d.join("big2")).unwrap();
    std::os::unix::fs::symlink("/usr", d.join("usr")).unwrap();
    fs::create_dir(d.join("sub")).unwrap();
    let u = dir_usage(&d).unwrap();
    assert_eq!(u.inodes, 4, "tree, big (once), usr link, sub");
    assert!(u.bytes >= 1 << 20 && u.bytes < 2 << 20, "{}", u.bytes);

    let s = Snapshotter::new(&t.path().join("snapshots")).unwrap();
    let before = s.usage().unwrap();
    let p = s.begin_layer().unwrap();
    fs::write(p.path().join("f"), vec![2u8; 1 << 20]).unwrap();
    p.commit(&chain_id(4)).unwrap();
    let after = s.usage().unwrap();
    assert!(after.bytes >= before.bytes + (1 << 20));
    assert!(after.inodes >= before.inodes + 3, "layer dir, fs, f");
}

/// An image volume's view: read-only whatever the number of layers, the
/// layers merged as in a rootfs, and nothing written to a layer.
#[test]
fn read_only_views_of_zero_one_and_two_layers() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let s = Snapshotter::new(&t.path().join("snapshots")).unwrap();
    let (lower, upper) = (chain_id(11), chain_id(12));
    add_layer(
        &s,
        &lower,
        &tar(&[("a", 'f', "lower a"), ("b", 'f', "b"), ("dir", 'd', "")]),
    );
    add_layer(
        &s,
        &upper,
        &tar(&[("a", 'f', "upper a"), (".wh.b", 'f', "")]),
    );
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let cases: [(&[String], Vec<&str>); 3] = [
        (&[], vec![]),
        (std::slice::from_ref(&lower), vec!["a", "b", "dir"]),
        (&[lower.clone(), upper.clone()], vec!["a", "dir"]),
    ];
    for (i, (chain, want)) in cases.into_iter().enumerate() {
        let target = t.path().join(format!("view{i}"));
        fs::create_dir(&target).unwrap();
        let lowers = s.lower_dirs(chain).unwrap();
        s.mount_view(&lowers, &empty, &target).unwrap();
        let m = Mounted(target.clone());
        assert_eq!(names(&target), want, "view of {} layers", chain.len());
        if chain.len() == 2 {
            assert_eq!(fs::read(target.join("a")).unwrap(), b"upper a");
        }
        let err = fs::write(target.join("new"), b"x").unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EROFS),
            "view {i} is read-only"
        );
        if !chain.is_empty() {
            let err = fs::remove_file(target.join("a")).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EROFS));
        }
        m.unmount();
    }
    assert_eq!(fs::read(s.layer_dir(&lower).join("a")).unwrap(), b"lower a");
    assert!(names(&empty).is_empty(), "the empty bottom stays empty");
    assert!(matches!(
        s.lower_dirs(&[chain_id(99)]),
        Err(SnapshotError::LayerNotFound(_))
    ));
}
