//! shellcheck on every shell script of the repository's tooling: the *.sh
//! files and the sh/bash scripts without the suffix (the Debian maintainer
//! scripts, .ci/run) under hack/, packaging/, installer/ and .ci/. Any
//! finding, of any severity, fails. Debian's shellcheck, installed by
//! hack/install-chart-tools.sh.

use std::path::{Path, PathBuf};
use std::process::Command;

const DIRS: [&str; 4] = ["hack", "packaging", "installer", ".ci"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Whether a file is a shell script: named *.sh, or starting with a
/// shebang for sh, bash or dash.
fn is_shell(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "sh") {
        return true;
    }
    let Ok(text) = std::fs::read(path) else {
        return false;
    };
    let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
    let Some(shebang) = first.strip_prefix(b"#!") else {
        return false;
    };
    let shebang = String::from_utf8_lossy(shebang);
    let mut words = shebang.split_whitespace();
    let interpreter = match words.next() {
        Some(env) if env.ends_with("/env") => words.find(|w| !w.starts_with('-')),
        other => other,
    };
    interpreter
        .and_then(|i| i.rsplit('/').next())
        .is_some_and(|name| matches!(name, "sh" | "bash" | "dash"))
}

fn scripts_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return; // installer/ may not exist
    };
    for entry in entries {
        let entry = entry.unwrap();
        let path = entry.path();
        let ty = entry.file_type().unwrap();
        if ty.is_dir() {
            if entry.file_name() != "__pycache__" {
                scripts_under(&path, out);
            }
        } else if ty.is_file() && is_shell(&path) {
            out.push(path);
        }
    }
}

fn scripts() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in DIRS {
        scripts_under(&repo().join(d), &mut out);
    }
    out.sort();
    out.into_iter()
        .map(|p| p.strip_prefix(repo()).unwrap().to_path_buf())
        .collect()
}

#[test]
fn every_shell_script_passes_shellcheck() {
    let scripts = scripts();
    // The walk found what is known to be there (it would pass vacuously
    // otherwise).
    for known in [
        "hack/test.sh",
        "hack/install-deps.sh",
        "hack/install-chart-tools.sh",
        "packaging/debian/postinst",
        "packaging/debian/prerm",
        "packaging/debian/postrm",
        ".ci/run",
    ] {
        assert!(
            scripts.iter().any(|s| s == Path::new(known)),
            "{known} not found among {scripts:?}"
        );
    }
    if repo().join("installer/install.sh").exists() {
        assert!(
            scripts
                .iter()
                .any(|s| s == Path::new("installer/install.sh"))
        );
    }
    assert!(
        !scripts
            .iter()
            .any(|s| s.extension().is_some_and(|e| e == "py")),
        "{scripts:?}"
    );

    let out = match Command::new("shellcheck")
        .arg("--external-sources")
        .arg("--format=gcc")
        .args(&scripts)
        .current_dir(repo())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "shellcheck is not installed: run hack/install-chart-tools.sh (as root; \
             Debian's shellcheck package)"
        ),
        Err(e) => panic!("run shellcheck: {e}"),
    };
    let findings = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "shellcheck found {} problem(s) in {} script(s):\n{findings}{}",
        findings.lines().count(),
        scripts.len(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shell_detection() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, shell) in [
        ("a.sh", "echo\n", true),
        ("b", "#!/bin/sh\nset -e\n", true),
        ("c", "#!/usr/bin/env bash\n", true),
        ("d", "#!/usr/bin/env -S bash -e\n", true),
        ("e", "#!/usr/bin/env python3\n", false),
        ("f", "#!/bin/bash -eu\n", true),
        ("g", "plain text\n", false),
        ("h", "#!/usr/bin/perl\n", false),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        assert_eq!(is_shell(&p), shell, "{name}: {text:?}");
    }
}
