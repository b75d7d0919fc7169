//! `drover server` and `drover agent`: load the settings, start the daemon, print the lines an
//! operator (or a test) needs, and run until Ctrl-C or SIGTERM. VMs keep running when the agent
//! stops.

use anyhow::Context;
use drover_cli::settings::{AgentFlags, ConfigFile, ServerFlags, load_config};
use std::path::PathBuf;
use std::sync::Arc;

/// `--data-dir` of every daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDir {
    /// Where the daemon keeps its state (default: $XDG_DATA_HOME/drover, or ~/.local/share/drover).
    #[arg(
        id = "data_dir",
        long = "data-dir",
        value_name = "DIR",
        env = "DROVER_DATA_DIR"
    )]
    pub path: Option<PathBuf>,
}

impl DataDir {
    pub fn resolve(&self) -> PathBuf {
        self.path.clone().unwrap_or_else(|| {
            let base = std::env::var_os("XDG_DATA_HOME")
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
                    PathBuf::from(home).join(".local/share")
                });
            base.join("drover")
        })
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    #[command(flatten)]
    pub config: ConfigFile,
    #[command(flatten)]
    pub flags: ServerFlags,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Agent state (default: $XDG_DATA_HOME/drover/agent, or ~/.local/share/drover/agent).
    #[arg(long = "data-dir", value_name = "DIR", env = "DROVER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigFile,
    #[command(flatten)]
    pub flags: AgentFlags,
    /// The one-time code a server must present to enroll this agent (default: a random one,
    /// printed at start until the agent is enrolled).
    #[arg(long, value_name = "CODE")]
    pub enrollment_code: Option<String>,
    /// What this agent does: `host` runs VMs, `library` serves library shares; both with
    /// `host,library`.
    #[arg(long, value_name = "ROLES", value_delimiter = ',', default_value = "host",
        value_parser = clap::builder::PossibleValuesParser::new(drover_agent::ROLES))]
    pub roles: Vec<String>,
    /// The hypervisor driver: QEMU, or the simulated one for scale benches of the control
    /// plane (no VM really runs).
    #[arg(long, value_enum, default_value_t = DriverKind::Qemu)]
    pub driver: DriverKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverKind {
    Qemu,
    Sim,
}

/// Logs to stderr, `RUST_LOG` filtering (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn stop_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    tokio::select! {
        outcome = tokio::signal::ctrl_c() => outcome.context("cannot watch Ctrl-C"),
        _ = terminate.recv() => Ok(()),
    }
}

/// The QEMU driver with its defaults; the accelerator is probed.
pub fn qemu_driver() -> Arc<dyn drover_hv::VmDriver> {
    Arc::new(drover_hv::qemu::QemuDriver::new(
        drover_hv::qemu::QemuConfig::default(),
    ))
}

pub async fn server(args: ServerArgs) -> anyhow::Result<()> {
    init_logging();
    let config = load_config(&args.config, &args.flags.values())?;
    let data_dir = args.data_dir.resolve();
    let server = drover_server::start(drover_server::ServerOptions {
        data_dir: data_dir.clone(),
        config,
        admin_password: None,
    })
    .await
    .with_context(|| format!("cannot start the server in {}", data_dir.display()))?;
    println!("drover server listening on https://{}", server.api_addr);
    println!(
        "ca fingerprint: {}",
        drover_tls::pem_fingerprint(&server.ca_pem).context("the CA certificate is invalid")?
    );
    match &server.initial_admin_password {
        Some(password) => println!("admin password: {password}"),
        None => println!(
            "admin password: shown at the first start of {}",
            data_dir.display()
        ),
    }
    stop_signal().await?;
    tracing::info!("stopping the server");
    server.shutdown().await;
    Ok(())
}

pub async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    init_logging();
    let config = load_config(&args.config, &args.flags.values())?;
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| DataDir { path: None }.resolve().join("agent"));
    let agent = drover_agent::start(drover_agent::AgentOptions {
        data_dir: data_dir.clone(),
        config,
        driver: match args.driver {
            DriverKind::Qemu => qemu_driver(),
            DriverKind::Sim => Arc::new(drover_hv::sim::SimDriver),
        },
        enrollment_code: args.enrollment_code,
        roles: args.roles,
    })
    .await
    .with_context(|| format!("cannot start the agent in {}", data_dir.display()))?;
    println!("drover agent listening on {}", agent.control_addr);
    println!("transfers on {}", agent.transfer_addr);
    match &agent.enrollment_code {
        Some(code) => println!("enrollment code: {code}"),
        None => println!("enrolled: this agent accepts only its server"),
    }
    stop_signal().await?;
    tracing::info!("stopping the agent; VMs keep running");
    agent.shutdown().await;
    Ok(())
}
