//! Unpack tests. Hostile tars are written header by header (tar::Builder
//! refuses `..` and friends), and every hostile test checks that nothing
//! outside the destination changed: a sentinel dir beside it, the tempdir
//! around it, and /etc.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::*;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root (chown, mknod, trusted.* xattrs)");
            return;
        }
    };
}

const MTIME: u64 = 1_600_000_000;

/// A tar stream built one raw header at a time.
#[derive(Default)]
struct Tar {
    buf: Vec<u8>,
}

fn header(path: &[u8], kind: u8, link: &[u8], mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    assert!(
        path.len() <= 100 && link.len() <= 100,
        "use PAX for long names"
    );
    // Raw bytes: set_path would refuse the hostile names under test.
    h.as_old_mut().name = [0; 100];
    h.as_old_mut().name[..path.len()].copy_from_slice(path);
    h.as_old_mut().linkname = [0; 100];
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(size);
    h.set_cksum();
    h
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    assert_eq!(r.len(), len);
    r
}

impl Tar {
    fn raw(&mut self, h: &tar::Header, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len().div_ceil(512) * 512, 0);
        self
    }
    fn add(&mut self, path: &str, kind: u8, link: &str, mode: u32, data: &[u8]) -> &mut Self {
        let h = header(
            path.as_bytes(),
            kind,
            link.as_bytes(),
            mode,
            data.len() as u64,
        );
        self.raw(&h, data)
    }
    fn pax(&mut self, recs: &[(&str, &[u8])]) -> &mut Self {
        let data: Vec<u8> = recs.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let h = header(b"PaxHeaders/x", b'x', b"", 0o644, data.len() as u64);
        self.raw(&h, &data)
    }
    fn dir(&mut self, p: &str) -> &mut Self {
        self.add(p, b'5', "", 0o755, b"")
    }
    fn file(&mut self, p: &str, data: &[u8]) -> &mut Self {
        self.add(p, b'0', "", 0o644, data)
    }
    fn symlink(&mut self, p: &str, target: &str) -> &mut Self {
        self.add(p, b'2', target, 0o777, b"")
    }
    fn hardlink(&mut self, p: &str, target: &str) -> &mut Self {
        self.add(p, b'1', target, 0o644, b"")
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = self.buf.clone();
        b.extend_from_slice(&[0; 1024]);
        b
    }
}

/// A test area: `t/outside/keep` (the sentinel) beside `t/a/b/dest`, so that
/// `../` and `../../` escapes would land inside `t` where they are seen.
struct Area {
    _t: tempfile::TempDir,
    top: PathBuf,
    dest: PathBuf,
    outside: PathBuf,
    before: BTreeMap<PathBuf, String>,
    etc_before: String,
}

/// What the hostile tars aim at in /etc (not all of /etc: other programs
/// may change it while tests run).
fn etc_targets() -> String {
    let pw = fs::symlink_metadata("/etc/passwd").unwrap();
    format!(
        "passwd n{} s{} m{} ino{}; evil exists: {}",
        pw.nlink(),
        pw.size(),
        pw.mtime(),
        pw.ino(),
        fs::symlink_metadata("/etc/evil").is_ok()
    )
}

/// Type, size, mode, owner, nlink, mtime and xattr names of every path under
/// `dir` (not following symlinks), skipping `skip`.
fn snapshot(dir: &Path, skip: &Path, depth: usize) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p == skip {
            continue;
        }
        let md = fs::symlink_metadata(&p).unwrap();
        let xattrs = sys::lgetxattr(&p, "trusted.overlay.opaque").ok().flatten();
        out.insert(
            p.clone(),
            format!(
                "{:o} {} {}:{} n{} m{} {:?}",
                md.mode(),
                md.size(),
                md.uid(),
                md.gid(),
                md.nlink(),
                md.mtime(),
                xattrs
            ),
        );
        if md.is_dir() && depth > 0 {
            out.extend(snapshot(&p, skip, depth - 1));
        }
    }
    out
}

impl Area {
    fn new() -> Area {
        let t = tempfile::tempdir().unwrap();
        let top = t.path().to_path_buf();
        let dest = top.join("a/b/dest");
        fs::create_dir_all(&dest).unwrap();
        let outside = top.join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"sentinel").unwrap();
        let before = snapshot(&top, &dest, 16);
        let etc_before = etc_targets();
        Area {
            _t: t,
            top,
            dest,
            outside,
            before,
            etc_before,
        }
    }

    fn unpack(&self, tar: &Tar) -> Result<UnpackStats, UnpackError> {
        unpack_layer(&tar.bytes()[..], &self.dest)
    }

    /// Nothing outside `dest` changed.
    fn assert_untouched(&self) {
        assert_eq!(
            snapshot(&self.top, &self.dest, 16),
            self.before,
            "files outside dest changed"
        );
        assert_eq!(fs::read(self.outside.join("keep")).unwrap(), b"sentinel");
        assert_eq!(
            etc_targets(),
            self.etc_before,
            "/etc/passwd or /etc/evil changed"
        );
        assert!(!Path::new("/evil").exists());
    }

    fn outside_abs(&self) -> String {
        self.outside.to_str().unwrap().to_string()
    }
}

fn assert_refused(r: Result<UnpackStats, UnpackError>, needle: &str) {
    match r {
        Err(e @ UnpackError::Refused { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
        }
        other => panic!("expected a refusal mentioning {needle:?}, got {other:?}"),
    }
}

// ---- hostile tars ----

#[test]
fn dotdot_is_refused() {
    require_root!();
    let a = Area::new();
    assert_refused(a.unpack(Tar::default().file("../evil", b"x")), "'..'");
    assert_refused(a.unpack(Tar::default().file("a/../../evil", b"x")), "'..'");
    assert_refused(
        a.unpack(Tar::default().dir("ok/").file("ok/../../../evil", b"x")),
        "'..'",
    );
    a.assert_untouched();
}

/// Decision: an absolute path is relative to the layer root, as OCI layers
/// are written; it lands inside dest.
#[test]
fn absolute_path_lands_inside() {
    require_root!();
    let a = Area::new();
    a.unpack(Tar::default().file("/etc/evil", b"x").file("//evil2", b"y"))
        .unwrap();
    assert_eq!(fs::read(a.dest.join("etc/evil")).unwrap(), b"x");
    assert_eq!(fs::read(a.dest.join("evil2")).unwrap(), b"y");
    assert!(!Path::new("/etc/evil").exists());
    a.assert_untouched();
}

/// Symlinks to `/` or far up are followed only as if dest were `/`.
#[test]
fn symlink_to_root_is_confined() {
    require_root!();
    let a = Area::new();
    let mut t = Tar::default();
    t.symlink("a", "/")
        .file("a/evil", b"1")
        .symlink("b", "../../..")
        .file("b/evil2", b"2")
        .symlink("c", "/../../../../")
        .file("c/etc/evil3", b"3");
    a.unpack(&t).unwrap();
    assert_eq!(fs::read(a.dest.join("evil")).unwrap(), b"1");
    assert_eq!(fs::read(a.dest.join("evil2")).unwrap(), b"2");
    assert_eq!(fs::read(a.dest.join("etc/evil3")).unwrap(), b"3");
    assert_eq!(fs::read_link(a.dest.join("a")).unwrap(), Path::new("/"));
    a.assert_untouched();
}

/// A symlink holding the host's absolute path of a real directory outside
/// must not reach it: inside dest that path does not exist.
#[test]
fn symlink_to_host_path_is_refused() {
    require_root!();
    let a = Area::new();
    let t = Tar::default()
        .symlink("s", &a.outside_abs())
        .file("s/evil", b"x")
        .bytes();
    let r = unpack_layer(&t[..], &a.dest);
    assert_refused(r, "does not lead to a directory inside the layer");
    a.assert_untouched();
}

/// A chain of relative and absolute symlinks still resolves inside dest.
#[test]
fn symlink_chain_is_confined() {
    require_root!();
    let a = Area::new();
    let mut t = Tar::default();
    t.dir("d/")
        .symlink("d/l1", "../l2")
        .symlink("l2", "d/l3")
        .symlink("d/l3", "../../../../..")
        .file("d/l1/chained", b"c")
        .symlink("up", "d/l1/a/b")
        .dir("a/")
        .dir("a/b/")
        .file("up/deeper", b"d");
    a.unpack(&t).unwrap();
    assert_eq!(fs::read(a.dest.join("chained")).unwrap(), b"c");
    assert_eq!(fs::read(a.dest.join("a/b/deeper")).unwrap(), b"d");
    a.assert_untouched();

    // The same chain ending at the sentinel's absolute path is refused.
    let b = Area::new();
    let mut t = Tar::default();
    t.symlink("x1", "x2")
        .symlink("x2", &b.outside_abs())
        .file("x1/evil", b"e");
    assert_refused(b.unpack(&t), "inside the layer");
    b.assert_untouched();
}

#[test]
fn hardlink_outside_is_refused() {
    require_root!();
    let a = Area::new();
    let passwd_links = fs::metadata("/etc/passwd").unwrap().nlink();
    assert_refused(
        a.unpack(Tar::default().hardlink("pw", "/etc/passwd")),
        "does not exist",
    );
    assert_refused(a.unpack(Tar::default().hardlink("x", "../../x")), "'..'");
    assert_refused(
        a.unpack(Tar::default().hardlink("k", &format!("{}/keep", a.outside_abs()))),
        "does not exist",
    );
    assert_refused(a.unpack(Tar::default().hardlink("r", "/")), "layer root");
    assert!(!a.dest.join("pw").exists());
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), passwd_links);
    a.assert_untouched();
}

#[test]
fn hardlink_through_symlinked_parent() {
    require_root!();
    let a = Area::new();
    // Escaping: the symlinked parent is resolved in dest, where the host path is absent.
    let mut t = Tar::default();
    t.symlink("s", &a.outside_abs()).hardlink("h", "s/keep");
    assert_refused(a.unpack(&t), "hardlink target");
    assert_eq!(fs::metadata(a.outside.join("keep")).unwrap().nlink(), 1);

    // Staying inside: a symlinked parent pointing into the layer works.
    let mut t = Tar::default();
    t.dir("d/")
        .file("d/f", b"data")
        .symlink("s2", "/d")
        .hardlink("h2", "s2/f");
    a.unpack(&t).unwrap();
    let f = fs::metadata(a.dest.join("d/f")).unwrap();
    let h = fs::metadata(a.dest.join("h2")).unwrap();
    assert_eq!((f.ino(), f.nlink()), (h.ino(), 2));
    a.assert_untouched();
}

/// A hardlink to a symlink links the symlink itself, never what it names.
#[test]
fn hardlink_to_symlink_does_not_follow() {
    require_root!();
    let a = Area::new();
    let passwd_links = fs::metadata("/etc/passwd").unwrap().nlink();
    let mut t = Tar::default();
    t.symlink("s", "/etc/passwd").hardlink("h", "s");
    a.unpack(&t).unwrap();
    let h = fs::symlink_metadata(a.dest.join("h")).unwrap();
    assert!(h.file_type().is_symlink());
    assert_eq!(h.nlink(), 2);
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), passwd_links);
    a.assert_untouched();
}

#[test]
fn hardlink_to_directory_is_refused() {
    require_root!();
    let a = Area::new();
    assert_refused(
        a.unpack(Tar::default().dir("d/").hardlink("h", "d")),
        "is a directory",
    );
    a.assert_untouched();
}

#[test]
fn whiteout_escapes_are_refused() {
    require_root!();
    let a = Area::new();
    assert_refused(a.unpack(Tar::default().file("../.wh.keep", b"")), "'..'");
    assert_refused(
        a.unpack(Tar::default().file("x/.wh...", b"")),
        "whiteout names no file",
    );
    let mut t = Tar::default();
    t.symlink("s", &a.outside_abs()).file("s/.wh.keep", b"");
    assert_refused(a.unpack(&t), "inside the layer");
    let mut t = Tar::default();
    t.symlink("o", &a.outside_abs()).file("o/.wh..wh..opq", b"");
    assert_refused(a.unpack(&t), "inside the layer");
    a.assert_untouched();
}

/// A dir replaced by a symlink, then an entry written "into" the dir: the
/// write goes through the symlink only as far as dest allows.
#[test]
fn dir_replaced_by_symlink_then_written_through() {
    require_root!();
    let a = Area::new();
    let mut t = Tar::default();
    t.dir("d/")
        .file("d/old", b"o")
        .symlink("d", &a.outside_abs())
        .file("d/evil", b"x");
    assert_refused(a.unpack(&t), "inside the layer");
    assert!(
        fs::symlink_metadata(a.dest.join("d"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    a.assert_untouched();

    let b = Area::new();
    let mut t = Tar::default();
    t.dir("d/").symlink("d", "/").file("d/evil", b"x");
    b.unpack(&t).unwrap();
    assert_eq!(fs::read(b.dest.join("evil")).unwrap(), b"x");
    b.assert_untouched();
}

/// A regular file over a symlink replaces the symlink; it never writes
/// through it.
#[test]
fn file_over_symlink_replaces_it() {
    require_root!();
    let a = Area::new();
    let mut t = Tar::default();
    t.symlink("f", &format!("{}/keep", a.outside_abs()))
        .file("f", b"new")
        .symlink("n", "/etc/passwd")
        .add("n", b'6', "", 0o600, b"")
        .symlink("dd", &a.outside_abs())
        .dir("dd/");
    a.unpack(&t).unwrap();
    assert_eq!(fs::read(a.dest.join("f")).unwrap(), b"new");
    assert!(
        fs::symlink_metadata(a.dest.join("n"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(fs::symlink_metadata(a.dest.join("dd")).unwrap().is_dir());
    a.assert_untouched();
}

#[test]
fn long_and_pax_names_are_checked_too() {
    require_root!();
    let a = Area::new();
    let mut t = Tar::default();
    t.pax(&[("path", b"../pax-evil")]).file("innocent", b"x");
    assert_refused(a.unpack(&t), "'..'");

    let mut t = Tar::default();
    t.add("././@LongLink", b'L', "", 0o644, b"../../gnu-evil\0")
        .file("innocent", b"x");
    assert_refused(a.unpack(&t), "'..'");

    let mut t = Tar::default();
    t.pax(&[("linkpath", b"../../../etc/passwd")])
        .hardlink("h", "innocent");
    assert_refused(a.unpack(&t), "'..'");

    let long = format!("{}/f", "d".repeat(4100));
    let mut t = Tar::default();
    t.pax(&[("path", long.as_bytes())]).file("x", b"x");
    assert_refused(a.unpack(&t), "longer than 4096");
    a.assert_untouched();
}

/// A PAX header claiming gigabytes is refused before anything is allocated.
#[test]
fn huge_pax_header_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let h = header(b"PaxHeaders/x", b'x', b"", 0o644, 4 << 30);
    let mut t = Tar::default();
    t.buf.extend_from_slice(h.as_bytes());
    match unpack_layer(&t.bytes()[..], a.path()) {
        Err(UnpackError::Malformed { reason, .. }) => {
            assert!(reason.contains("PAX header"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn entry_count_is_limited() {
    let a = tempfile::tempdir().unwrap();
    let mut t = Tar::default();
    for i in 0..11 {
        t.dir(&format!("d{i}/"));
    }
    match unpack_limited(&t.bytes()[..], a.path(), 10, u64::MAX) {
        Err(e @ UnpackError::TooManyEntries { .. }) => {
            assert!(e.to_string().contains("more than 10 entries"))
        }
        other => panic!("{other:?}"),
    }
    // Headers that are not entries (global PAX) cannot run on forever either.
    let g = header(b"g", b'g', b"", 0o644, 0);
    let mut t = Tar::default();
    for _ in 0..31 {
        t.raw(&g, b"");
    }
    assert!(matches!(
        unpack_limited(&t.bytes()[..], a.path(), 10, u64::MAX),
        Err(UnpackError::TooManyEntries { limit: 10 })
    ));
    assert_eq!(MAX_ENTRIES, 1_000_000);
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    let a = tempfile::tempdir().unwrap();
    let junk = vec![0x41u8; 2048];
    assert!(matches!(
        unpack_layer(&junk[..], a.path()),
        Err(UnpackError::Malformed { .. })
    ));
    // Truncated inside a file's data.
    let mut t = Tar::default();
    t.file("f", &[7u8; 4000]);
    let b = t.bytes();
    match unpack_layer(&b[..1500], a.path()) {
        Err(e @ UnpackError::Read { .. }) => assert!(e.to_string().contains("\"f\""), "{e}"),
        other => panic!("{other:?}"),
    }
}

// ---- the OCI and overlay forms ----

#[test]
fn whiteouts_and_opaque_dirs() {
    require_root!();
    let a = Area::new();
    let mut t = Tar::default();
    t.dir("etc/")
        .file("etc/.wh.gone", b"")
        .dir("opq/")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/new", b"n")
        .file(".wh..wh.plnk", b"")
        // Same-layer dir then its whiteout: the dir stays, made opaque.
        .dir("kept/")
        .file("kept/f", b"f")
        .file(".wh.kept", b"")
        // Whiteout then a dir of that name: the dir hides the lower one.
        .file(".wh.redo", b"")
        .dir("redo/");
    a.unpack(&t).unwrap();
    let gone = fs::symlink_metadata(a.dest.join("etc/gone")).unwrap();
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    assert!(!a.dest.join("etc/.wh.gone").exists());
    assert!(!a.dest.join("opq/.wh..wh..opq").exists());
    assert!(!a.dest.join(".wh..wh.plnk").exists());
    let opaque = |p: &str| sys::lgetxattr(&a.dest.join(p), "trusted.overlay.opaque").unwrap();
    assert_eq!(opaque("opq").as_deref(), Some(&b"y"[..]));
    assert_eq!(fs::read(a.dest.join("opq/new")).unwrap(), b"n");
    assert_eq!(opaque("etc"), None);
    assert_eq!(opaque("kept").as_deref(), Some(&b"y"[..]));
    assert_eq!(fs::read(a.dest.join("kept/f")).unwrap(), b"f");
    assert_eq!(opaque("redo").as_deref(), Some(&b"y"[..]));
    a.assert_untouched();
}

#[test]
fn metadata_is_applied() {
    require_root!();
    let a = Area::new();
    let mut t = Tar::default();
    let mut h = header(b"bin/su", b'0', b"", 0o4755, 3);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_cksum();
    let mut sticky = header(b"tmp/", b'5', b"", 0o1777, 0);
    sticky.set_mtime(1_000_000_000);
    sticky.set_cksum();
    let mut link = header(b"lnk", b'2', b"bin/su", 0o777, 0);
    link.set_uid(1000);
    link.set_gid(1001);
    link.set_cksum();
    let mut dev = header(b"dev/null", b'3', b"", 0o666, 0);
    dev.set_device_major(1).unwrap();
    dev.set_device_minor(3).unwrap();
    dev.set_cksum();
    let binary_cap =
        b"\x01\x00\x00\x02\n\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    t.dir("bin/")
        .raw(&h, b"su!")
        .raw(&sticky, b"")
        .file("tmp/child", b"c")
        .raw(&link, b"")
        .dir("dev/")
        .raw(&dev, b"")
        .hardlink("bin/su-again", "bin/su")
        .pax(&[
            ("SCHILY.xattr.user.note", b"hello\nworld"),
            ("SCHILY.xattr.security.capability", binary_cap),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/elsewhere"),
            ("mtime", b"1234567890.5"),
        ])
        .file("bin/ping", b"p");
    let stats = a.unpack(&t).unwrap();
    assert_eq!(
        stats,
        UnpackStats {
            entries: 9,
            bytes: 5
        }
    );

    let su = fs::symlink_metadata(a.dest.join("bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755, "setuid survives chown");
    assert_eq!((su.uid(), su.gid()), (1000, 1000));
    assert_eq!(su.mtime(), MTIME as i64);
    let again = fs::symlink_metadata(a.dest.join("bin/su-again")).unwrap();
    assert_eq!((again.ino(), again.nlink()), (su.ino(), 2));

    let tmp = fs::symlink_metadata(a.dest.join("tmp")).unwrap();
    assert_eq!(tmp.mode() & 0o7777, 0o1777);
    assert_eq!(
        tmp.mtime(),
        1_000_000_000,
        "dir mtime set after its children"
    );

    let l = fs::symlink_metadata(a.dest.join("lnk")).unwrap();
    assert!(l.file_type().is_symlink());
    assert_eq!(
        fs::read_link(a.dest.join("lnk")).unwrap(),
        Path::new("bin/su")
    );
    assert_eq!((l.uid(), l.gid()), (1000, 1001));
    assert_eq!(l.mtime(), MTIME as i64);

    let d = fs::symlink_metadata(a.dest.join("dev/null")).unwrap();
    assert!(d.file_type().is_char_device());
    assert_eq!(d.rdev(), makedev(1, 3));
    assert_eq!(d.mode() & 0o7777, 0o666);

    let ping = a.dest.join("bin/ping");
    assert_eq!(
        sys::lgetxattr(&ping, "user.note").unwrap().as_deref(),
        Some(&b"hello\nworld"[..])
    );
    assert_eq!(
        sys::lgetxattr(&ping, "security.capability")
            .unwrap()
            .as_deref(),
        Some(&binary_cap[..])
    );
    assert_eq!(
        sys::lgetxattr(&ping, "trusted.overlay.redirect").unwrap(),
        None
    );
    let pm = fs::symlink_metadata(&ping).unwrap();
    assert_eq!((pm.mtime(), pm.mtime_nsec()), (1_234_567_890, 500_000_000));
    a.assert_untouched();
}

#[test]
fn later_entries_replace_earlier_ones() {
    require_root!();
    let a = Area::new();
    let mut t = Tar::default();
    t.file("f", b"one")
        .file("f", b"two")
        .dir("d/")
        .file("d/keep", b"k")
        .add("d/", b'5', "", 0o700, b"")
        .dir("gone/")
        .dir("gone/sub/")
        .file("gone/sub/x", b"x")
        .file("gone", b"now a file")
        .file("to-dir", b"file")
        .dir("to-dir/")
        .file("hl-src", b"shared")
        .hardlink("hl", "hl-src")
        .file("hl", b"separate");
    a.unpack(&t).unwrap();
    assert_eq!(fs::read(a.dest.join("f")).unwrap(), b"two");
    assert_eq!(
        fs::read(a.dest.join("d/keep")).unwrap(),
        b"k",
        "dir over dir merges"
    );
    assert_eq!(
        fs::metadata(a.dest.join("d")).unwrap().mode() & 0o777,
        0o700
    );
    assert_eq!(fs::read(a.dest.join("gone")).unwrap(), b"now a file");
    assert!(fs::metadata(a.dest.join("to-dir")).unwrap().is_dir());
    // Replacing one name of a hardlink pair leaves the other intact.
    assert_eq!(fs::read(a.dest.join("hl-src")).unwrap(), b"shared");
    assert_eq!(fs::read(a.dest.join("hl")).unwrap(), b"separate");
    a.assert_untouched();
}

/// Reads sequentially, copies big files in chunks, drains trailing bytes.
#[test]
fn streams_and_drains() {
    require_root!();
    struct Counting<'a> {
        inner: &'a [u8],
        reads: usize,
        read: usize,
    }
    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.reads += 1;
            self.read += n;
            Ok(n)
        }
    }
    let a = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut t = Tar::default();
    t.dir("x/").file("x/big", &big);
    let mut b = t.bytes();
    b.extend_from_slice(&[0; 8192]); // record padding after the end marker
    let mut r = Counting {
        inner: &b,
        reads: 0,
        read: 0,
    };
    let stats = unpack_layer(&mut r, a.path()).unwrap();
    assert_eq!(stats.bytes, big.len() as u64);
    assert_eq!(r.read, b.len(), "reads to the end of the stream");
    assert!(r.reads > 5_000_000 / COPY_BUF, "copied in chunks");
    assert_eq!(fs::read(a.path().join("x/big")).unwrap(), big);
}

#[test]
fn built_by_tar_builder_and_root_entry() {
    require_root!();
    let a = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "./", &[][..]).unwrap();
    let long = format!("{}/file", "sub".repeat(60));
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o640);
    h.set_size(2);
    b.append_data(&mut h, &long, &b"hi"[..]).unwrap();
    let data = b.into_inner().unwrap();
    unpack_layer(&data[..], a.path()).unwrap();
    assert_eq!(fs::read(a.path().join(&long)).unwrap(), b"hi");
    assert_eq!(fs::metadata(a.path()).unwrap().mode() & 0o777, 0o755);
}

#[test]
fn pax_time_parsing() {
    let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec(), t.tv_nsec()));
    assert_eq!(t("12"), Some((12, 0)));
    assert_eq!(t("12.25"), Some((12, 250_000_000)));
    assert_eq!(t("12.1234567899"), Some((12, 123_456_789)));
    assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
    assert_eq!(t("x"), None);
    assert_eq!(t("1.x"), None);
}

#[test]
fn uncompressed_size_limit_stops_the_unpack() {
    require_root!();
    let a = tempfile::tempdir().unwrap();
    // 8 MiB of zeros: what a gzip bomb expands to, in small.
    let big = vec![0u8; 8 << 20];
    let mut t = Tar::default();
    t.file("small", b"ok").file("big", &big).file("after", b"x");
    let data = t.bytes();
    let err = unpack_layer_capped(&data[..], a.path(), 1 << 20).unwrap_err();
    assert!(
        matches!(err, UnpackError::TooLarge { limit } if limit == 1 << 20),
        "{err}"
    );
    assert!(
        err.to_string().contains("max_layer_uncompressed_bytes"),
        "{err}"
    );
    // It stopped at the limit: no more than the limit was written.
    let written = fs::metadata(a.path().join("big")).map_or(0, |m| m.len());
    assert!(written <= 1 << 20, "{written} bytes written past the limit");
    assert!(!a.path().join("after").exists());
    // A stream exactly at the limit (end-of-archive blocks included) is fine.
    let b = tempfile::tempdir().unwrap();
    unpack_layer_capped(&data[..], b.path(), data.len() as u64).unwrap();
    assert_eq!(fs::metadata(b.path().join("big")).unwrap().len(), 8 << 20);
    let c = tempfile::tempdir().unwrap();
    assert!(matches!(
        unpack_layer_capped(&data[..], c.path(), data.len() as u64 - 1),
        Err(UnpackError::TooLarge { .. })
    ));
}
