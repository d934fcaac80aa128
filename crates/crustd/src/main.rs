//! crustd: the crust CRI daemon.

#![forbid(unsafe_code)]

mod daemon;
mod logging;
mod preflight;
mod socket;
mod status;
mod wipe;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crust_config::{ConfigSources, DEFAULT_YAML, LoadedConfig, LogFormat};

#[derive(Parser)]
#[command(
    name = "crustd",
    version,
    about = "crust: a Kubernetes CRI container runtime"
)]
struct Cli {
    /// Config file (YAML). Without this flag /etc/crust/config.yaml is read
    /// when it exists, and the built-in defaults are used when it does not.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Drop-in dir: its *.yaml and *.yml files are merged over the config
    /// file in lexical order. Default: config.d next to the config file.
    #[arg(long, global = true, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Log format, overriding the config's log.format.
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Log level or tracing filter, overriding the config's log.level.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (what crustd does without a command).
    Run,
    /// PID 1 of a pod whose containers share a PID namespace (started by
    /// crustd itself, not meant to be run by hand).
    #[command(hide = true)]
    PodInit {
        /// The pod's state dir, so the process is easy to attribute.
        #[arg(long)]
        pod: Option<String>,
        /// The pod's user namespace (pinned), for pods with hostUsers: false.
        #[arg(long)]
        userns: Option<PathBuf>,
        /// The pod's network, IPC and UTS namespaces (pinned).
        #[arg(long)]
        netns: Option<PathBuf>,
        #[arg(long)]
        ipcns: Option<PathBuf>,
        #[arg(long)]
        utsns: Option<PathBuf>,
    },
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Ask the running crustd how it is: readiness, counts, version,
    /// cgroup driver. Exits 1 when it cannot be reached.
    Status {
        /// The CRI socket (a path or unix:///path); default: the config's
        /// `socket`.
        #[arg(long, visible_alias = "endpoint", value_name = "SOCKET")]
        socket: Option<String>,
    },
    /// Preflight: check this node's kernel and setup for crust, one
    /// OK/WARN/FAIL line each. Needs no running crustd; exits 1 on a FAIL.
    Check,
    /// Stop and remove every pod of the running crustd (before removing
    /// crust from a node). Exits 1 when it cannot be reached.
    Wipe {
        /// The CRI socket (a path or unix:///path); default: the config's
        /// `socket`.
        #[arg(long, visible_alias = "endpoint", value_name = "SOCKET")]
        socket: Option<String>,
    },
    /// Print a shell completion script (the package installs bash's and
    /// zsh's).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the full default configuration, with a comment per section.
    Default,
    /// Validate the configuration (with its drop-ins) and print the
    /// effective values as YAML.
    Check,
    /// Print the effective configuration, each value with a comment naming
    /// where it came from: the default, the config file or a drop-in.
    Dump,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crustd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(Command::Completions { shell }) = &cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut command, "crustd", &mut script);
        // A reader that stops early (`| head`) is fine.
        return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(ExitCode::SUCCESS),
        };
    }
    if let Some(Command::PodInit {
        pod,
        userns,
        netns,
        ipcns,
        utsns,
    }) = &cli.command
    {
        let pod = pod
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("pod-init needs --pod"))?;
        let namespaces = crust_runtime::pod_init::PodNamespaces {
            user: userns.clone(),
            net: netns.clone(),
            ipc: ipcns.clone(),
            uts: utsns.clone(),
        };
        crust_runtime::pod_init::run(std::path::Path::new(pod), &namespaces)?;
        return Ok(ExitCode::SUCCESS);
    }
    match &cli.command {
        Some(Command::Config {
            action: ConfigAction::Default,
        }) => {
            print!("{DEFAULT_YAML}");
            return Ok(ExitCode::SUCCESS);
        }
        // An explicit socket needs no config: status works even while the
        // config on disk is broken (mid-edit).
        Some(Command::Status {
            socket: Some(socket),
        }) => {
            status::run(&status::socket_from_flag(socket)?)?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Wipe {
            socket: Some(socket),
        }) => {
            wipe::run(&status::socket_from_flag(socket)?)?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let sources = ConfigSources::new(cli.config.as_deref(), cli.config_dir.as_deref());
    let loaded = load_config(&cli, &sources);
    if let Some(Command::Check) = cli.command {
        // A broken config is one FAIL line among the others.
        let failed = preflight::run(&sources, loaded.map_err(|e| format!("{e:#}")));
        return Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let loaded = loaded?;
    match cli.command {
        Some(Command::Config {
            action: ConfigAction::Check,
        }) => print!("{}", serde_yaml_ng::to_string(&loaded.config)?),
        Some(Command::Config {
            action: ConfigAction::Dump,
        }) => print!("{}", loaded.annotated_yaml()),
        Some(Command::Status { socket: None }) => status::run(&loaded.config.socket)?,
        Some(Command::Wipe { socket: None }) => wipe::run(&loaded.config.socket)?,
        _ => {
            logging::init(&loaded.config.log)?;
            daemon::run(loaded.config)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The config file and its drop-ins, merged, with the `--log-*` flags
/// applied over them, validated.
fn load_config(cli: &Cli, sources: &ConfigSources) -> anyhow::Result<LoadedConfig> {
    let mut loaded = sources.load()?;
    if let Some(format) = &cli.log_format {
        loaded.config.log.format = if format == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        };
        loaded.set_by_flag("log.format", "--log-format");
    }
    if let Some(level) = &cli.log_level {
        loaded.config.log.level = level.clone();
        loaded.set_by_flag("log.level", "--log-level");
    }
    loaded.validate()?;
    Ok(loaded)
}
