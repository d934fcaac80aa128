//! Args, environment and working directory (containerd's rules).

use crust_store::ImageConfig;
use k8s_cri::v1::ContainerConfig;

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

/// Key-ordered env list where a later value replaces an earlier one in place.
#[derive(Default)]
struct EnvList {
    vars: Vec<String>,
}

impl EnvList {
    fn set(&mut self, kv: String) {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        match self
            .vars
            .iter_mut()
            .find(|v| v.split_once('=').is_some_and(|(k, _)| k == key))
        {
            Some(slot) => *slot = kv,
            None => self.vars.push(kv),
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
        reject_nul(&format!("envs {} value", kv.key), &kv.value)?;
        env.set(format!("{}={}", kv.key, kv.value));
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
    Ok(dir.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::KeyValue;

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
}
