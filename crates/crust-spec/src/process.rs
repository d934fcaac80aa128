//! Args, environment and working directory (containerd's rules).

use std::collections::HashMap;

use crust_cri_api::v1::ContainerConfig;
use crust_store::ImageConfig;

use crate::SpecError;
use crate::error::reject_nul;

pub(crate) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// CRI command replaces the image's Entrypoint and Cmd; CRI args alone
/// replace only Cmd. An Entrypoint of `[""]` means "no entrypoint", as in
/// Docker.
pub(crate) fn args(
    config: &ContainerConfig,
    image: &ImageConfig,
) -> Result<Vec<String>, SpecError> {
    let mut argv: Vec<String> = if !config.command.is_empty() {
        config.command.iter().chain(&config.args).cloned().collect()
    } else {
        let entrypoint: &[String] = if image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()
        {
            &[]
        } else {
            &image.entrypoint
        };
        let rest = if config.args.is_empty() {
            &image.cmd
        } else {
            &config.args
        };
        entrypoint.iter().chain(rest).cloned().collect()
    };
    if argv.is_empty() {
        return Err(SpecError::NoCommand);
    }
    for a in &argv {
        reject_nul("command/args", a)?;
    }
    if argv[0].is_empty() {
        return Err(SpecError::invalid(
            "command",
            format!("{argv:?}"),
            "the program to run (first argument) is empty",
        ));
    }
    argv.shrink_to_fit();
    Ok(argv)
}

/// Key-ordered env list where a later value replaces an earlier one in
/// place; `index` maps each key to its slot, so merging is linear.
#[derive(Default)]
struct EnvList {
    vars: Vec<String>,
    index: HashMap<String, usize>,
}

impl EnvList {
    fn set(&mut self, kv: String) {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        match self.index.get(key) {
            Some(&slot) => self.vars[slot] = kv,
            None => {
                self.index.insert(key.to_string(), self.vars.len());
                self.vars.push(kv);
            }
        }
    }
}

/// Default PATH, TERM for a tty, HOSTNAME, then the image's env, then the
/// CRI envs; later entries override earlier ones by key.
pub(crate) fn env(
    config: &ContainerConfig,
    image: &ImageConfig,
    hostname: &str,
) -> Result<Vec<String>, SpecError> {
    let mut env = EnvList::default();
    env.set(DEFAULT_PATH.to_string());
    if config.tty {
        env.set("TERM=xterm".to_string());
    }
    if !hostname.is_empty() {
        reject_nul("hostname", hostname)?;
        env.set(format!("HOSTNAME={hostname}"));
    }
    for e in &image.env {
        reject_nul("image Env", e)?;
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => env.set(e.clone()),
            _ => tracing::debug!(entry = %e, "skipping image Env entry without KEY="),
        }
    }
    for kv in &config.envs {
        if kv.key.is_empty() || kv.key.contains('=') {
            return Err(SpecError::invalid(
                "envs key",
                &kv.key,
                "must be non-empty and must not contain '='",
            ));
        }
        reject_nul("envs key", &kv.key)?;
        // CRI 1.37 carries env values as bytes (the wire format is the same
        // as string's); the OCI spec holds them as JSON strings, so they
        // must be UTF-8.
        let value = std::str::from_utf8(&kv.value).map_err(|_| {
            SpecError::invalid(
                format!("envs {} value", kv.key),
                String::from_utf8_lossy(&kv.value).as_ref(),
                "is not UTF-8 (the OCI runtime spec holds env as strings)",
            )
        })?;
        reject_nul(&format!("envs {} value", kv.key), value)?;
        env.set(format!("{}={}", kv.key, value));
    }
    Ok(env.vars)
}

pub(crate) fn cwd(config: &ContainerConfig, image: &ImageConfig) -> Result<String, SpecError> {
    let (field, dir) = if !config.working_dir.is_empty() {
        ("working_dir", config.working_dir.as_str())
    } else if !image.working_dir.is_empty() {
        ("image WorkingDir", image.working_dir.as_str())
    } else {
        return Ok("/".to_string());
    };
    reject_nul(field, dir)?;
    if !dir.starts_with('/') {
        return Err(SpecError::invalid(field, dir, "must be an absolute path"));
    }
    // /proc/self/fd/N, /proc/<pid>/cwd, /proc/1/root...: the runtime
    // changes into the working directory while it may still hold host
    // file descriptors, and a magic link there leaves the process with a
    // cwd outside its rootfs (CVE-2024-21626). No real workload works in
    // /proc.
    let clean = crate::mounts::clean_path(dir);
    if clean == "/proc" || clean.starts_with("/proc/") {
        return Err(SpecError::invalid(
            field,
            dir,
            "a working directory under /proc is refused: it can name the runtime's \
             file descriptors or another process's root (CVE-2024-21626)",
        ));
    }
    Ok(dir.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_cri_api::v1::KeyValue;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn cfg(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: s(command),
            args: s(args),
            ..Default::default()
        }
    }

    fn img(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: s(entrypoint),
            cmd: s(cmd),
            ..Default::default()
        }
    }

    #[test]
    fn args_precedence_table() {
        type Case<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            // command, args, entrypoint, cmd => argv
            (&["c"], &["a"], &["e"], &["d"], &["c", "a"]),
            (&["c"], &[], &["e"], &["d"], &["c"]),
            (&[], &["a"], &["e"], &["d"], &["e", "a"]),
            (&[], &[], &["e"], &["d"], &["e", "d"]),
            (&[], &[], &[], &["d", "x"], &["d", "x"]),
            (&[], &["a"], &[], &["d"], &["a"]),
            (&[], &[], &["e"], &[], &["e"]),
            (&[], &["a"], &[""], &["d"], &["a"]),
            (&[], &[], &[""], &["d"], &["d"]),
        ];
        for (c, a, e, d, want) in cases {
            assert_eq!(
                args(&cfg(c, a), &img(e, d)).unwrap(),
                s(want),
                "{c:?} {a:?} {e:?} {d:?}"
            );
        }
    }

    #[test]
    fn empty_or_bad_command_is_an_error() {
        assert!(matches!(
            args(&cfg(&[], &[]), &img(&[], &[])),
            Err(SpecError::NoCommand)
        ));
        assert!(matches!(
            args(&cfg(&[], &[]), &img(&[""], &[])),
            Err(SpecError::NoCommand)
        ));
        assert!(args(&cfg(&[""], &["x"]), &img(&[], &[])).is_err());
        assert!(args(&cfg(&["sh", "-c", "a\0b"], &[]), &img(&[], &[])).is_err());
    }

    #[test]
    fn env_merge() {
        let image = ImageConfig {
            env: s(&["PATH=/img/bin", "A=1", "B=2", "NOEQUALS", "=novalue"]),
            ..Default::default()
        };
        let config = ContainerConfig {
            tty: true,
            envs: vec![
                KeyValue {
                    key: "B".into(),
                    value: "cri".into(),
                },
                KeyValue {
                    key: "C".into(),
                    value: "x=y".into(),
                },
                KeyValue {
                    key: "TERM".into(),
                    value: "dumb".into(),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            env(&config, &image, "pod-a").unwrap(),
            s(&[
                "PATH=/img/bin",
                "TERM=dumb",
                "HOSTNAME=pod-a",
                "A=1",
                "B=cri",
                "C=x=y"
            ])
        );
        // No image PATH: the default stays; no tty, no hostname: neither var.
        let got = env(&ContainerConfig::default(), &ImageConfig::default(), "").unwrap();
        assert_eq!(got, s(&[DEFAULT_PATH]));
    }

    /// Merging is linear: 200,000 image entries (every key twice, the
    /// second value winning in the first one's place) plus CRI overrides.
    /// The quadratic scan this replaced took minutes here.
    #[test]
    fn env_merge_is_linear_and_keeps_order_and_last_wins() {
        let n = 100_000;
        let mut image_env: Vec<String> = (0..n).map(|i| format!("K{i}=first")).collect();
        image_env.extend((0..n).map(|i| format!("K{i}=second")));
        let image = ImageConfig {
            env: image_env,
            ..Default::default()
        };
        let config = ContainerConfig {
            envs: vec![KeyValue {
                key: "K7".into(),
                value: "cri".into(),
            }],
            ..Default::default()
        };
        let got = env(&config, &image, "").unwrap();
        assert_eq!(got.len(), n + 1);
        assert_eq!(got[0], DEFAULT_PATH);
        assert_eq!(got[1], "K0=second");
        assert_eq!(got[8], "K7=cri");
        assert_eq!(got[n], format!("K{}=second", n - 1));
    }

    #[test]
    fn env_rejects_bad_keys_and_nul() {
        for (k, v) in [("", "x"), ("A=B", "x"), ("A\0", "x"), ("A", "x\0y")] {
            let config = ContainerConfig {
                envs: vec![KeyValue {
                    key: k.into(),
                    value: v.into(),
                }],
                ..Default::default()
            };
            assert!(
                env(&config, &ImageConfig::default(), "").is_err(),
                "{k:?}={v:?}"
            );
        }
    }

    #[test]
    fn env_values_must_be_utf8() {
        let config = ContainerConfig {
            envs: vec![KeyValue {
                key: "BIN".into(),
                value: vec![b'a', 0xff, b'b'],
            }],
            ..Default::default()
        };
        let err = env(&config, &ImageConfig::default(), "").unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
        assert!(err.to_string().contains("envs BIN value"), "{err}");
    }

    #[test]
    fn cwd_precedence() {
        let image = ImageConfig {
            working_dir: "/img".into(),
            ..Default::default()
        };
        let config = ContainerConfig {
            working_dir: "/cri".into(),
            ..Default::default()
        };
        assert_eq!(cwd(&config, &image).unwrap(), "/cri");
        assert_eq!(cwd(&ContainerConfig::default(), &image).unwrap(), "/img");
        assert_eq!(
            cwd(&ContainerConfig::default(), &ImageConfig::default()).unwrap(),
            "/"
        );
        let rel = ContainerConfig {
            working_dir: "rel".into(),
            ..Default::default()
        };
        let e = cwd(&rel, &image).unwrap_err().to_string();
        assert!(e.contains("working_dir") && e.contains("rel"), "{e}");
    }

    #[test]
    fn cwd_under_proc_is_refused() {
        for dir in [
            "/proc/self/fd/3",
            "/proc/self/fd/8",
            "/proc/thread-self/fd/5",
            "/proc/1/root",
            "/proc/1/cwd",
            "/proc",
            "//proc/./self/fd/4",
            "/tmp/../proc/self/fd/3",
        ] {
            let config = ContainerConfig {
                working_dir: dir.into(),
                ..Default::default()
            };
            let e = cwd(&config, &ImageConfig::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("CVE-2024-21626"), "{dir}: {e}");
            let image = ImageConfig {
                working_dir: dir.into(),
                ..Default::default()
            };
            let e = cwd(&ContainerConfig::default(), &image)
                .unwrap_err()
                .to_string();
            assert!(e.contains("image WorkingDir"), "{dir}: {e}");
        }
        for ok in ["/processes", "/srv/proc", "/"] {
            let config = ContainerConfig {
                working_dir: ok.into(),
                ..Default::default()
            };
            assert_eq!(cwd(&config, &ImageConfig::default()).unwrap(), ok);
        }
    }
}
