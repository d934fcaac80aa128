//! crustd: the crust CRI daemon.

#![forbid(unsafe_code)]

mod daemon;
mod logging;
mod socket;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crust_config::{Config, DEFAULT_CONFIG_PATH, DEFAULT_YAML, LogFormat};

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
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the full default configuration, with a comment per section.
    Default,
    /// Validate the configuration and print the effective values as YAML.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crustd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
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
        return Ok(crust_runtime::pod_init::run(
            std::path::Path::new(pod),
            &namespaces,
        )?);
    }
    if let Some(Command::Config {
        action: ConfigAction::Default,
    }) = cli.command
    {
        print!("{DEFAULT_YAML}");
        return Ok(());
    }
    let mut config = match &cli.config {
        Some(path) => Config::load(path, true)?,
        None => Config::load(DEFAULT_CONFIG_PATH.as_ref(), false)?,
    };
    if let Some(format) = &cli.log_format {
        config.log.format = if format == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        };
    }
    if let Some(level) = cli.log_level {
        config.log.level = level;
    }
    config
        .validate()
        .map_err(|m| anyhow::anyhow!("invalid config: {m}"))?;
    match cli.command {
        Some(Command::Config {
            action: ConfigAction::Check,
        }) => {
            print!("{}", serde_yaml_ng::to_string(&config)?);
            Ok(())
        }
        _ => {
            logging::init(&config.log)?;
            daemon::run(config)
        }
    }
}
