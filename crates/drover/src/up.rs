//! `drover up`: a server and a local agent in one process with the default settings. At the
//! first start it adds the local agent as a host and logs the local CLI in as the admin, so that
//! `drover host list` works at once; it prints the API address, the admin credentials (first
//! start only) and the commands to try next.

use crate::daemon::{DataDir, init_logging, qemu_driver, stop_signal};
use anyhow::Context;
use drover_api::HostAdd;
use drover_cli::credentials;
use drover_cli::settings::{AgentFlags, ConfigFile, ServerFlags, load_config};
use drover_client::Client;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    #[command(flatten)]
    pub config: ConfigFile,
    /// HTTPS port of the API (server.api_port).
    #[arg(long, value_name = "PORT")]
    pub api_port: Option<u16>,
    /// Control port of the local agent (agent.control_port).
    #[arg(long, value_name = "PORT")]
    pub control_port: Option<u16>,
}

/// Where a local client reaches a listener bound to `address`.
fn local_address(address: SocketAddr) -> SocketAddr {
    if address.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), address.port())
    } else {
        address
    }
}

/// Adds the local agent as a host and waits for the enrollment job.
async fn add_local_host(
    client: &Client,
    agent_address: SocketAddr,
    code: &str,
) -> anyhow::Result<String> {
    let job = client
        .add_host(&HostAdd {
            address: agent_address.to_string(),
            enrollment_code: code.to_owned(),
            name: None,
        })
        .await
        .context("cannot add the local agent as a host")?;
    let finished = client
        .wait_for_job(job.id, |_| {})
        .await
        .context("cannot follow the host.add job")?;
    if let Some(error) = finished.error {
        anyhow::bail!(
            "adding the local host failed: {} ({}); {}",
            error.message,
            error.code,
            error.action
        );
    }
    let hosts = client.all_hosts().await.context("cannot list hosts")?;
    let address = agent_address.to_string();
    Ok(hosts
        .into_iter()
        .find(|host| host.address == address)
        .map(|host| host.name)
        .unwrap_or(address))
}

/// Makes `DATA/library` the default share of the local library server, once.
async fn add_default_share(
    client: &Client,
    host_name: &str,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let shares = client
        .library_shares()
        .await
        .context("cannot list library shares")?;
    if shares
        .iter()
        .any(|share| share.name == drover_api::library::DEFAULT_SHARE)
    {
        return Ok(());
    }
    let job = client
        .add_library_share(&drover_api::library::LibraryShareAdd {
            name: drover_api::library::DEFAULT_SHARE.to_owned(),
            server: host_name.to_owned(),
            path: data_dir.join("library").display().to_string(),
        })
        .await
        .context("cannot add the default library share")?;
    let finished = client
        .wait_for_job(job.id, |_| {})
        .await
        .context("cannot follow the library.share_add job")?;
    if let Some(error) = finished.error {
        anyhow::bail!(
            "adding the default library share failed: {} ({}); {}",
            error.message,
            error.code,
            error.action
        );
    }
    Ok(())
}

/// The guest built by `scripts/guest.sh`, when run from a checkout where it was built.
fn tiny_guest_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::current_dir().ok()?.join("target/guest");
    dir.join("vmlinux").is_file().then_some(dir)
}

fn print_next_steps(host_name: &str) {
    let (kernel, initrd) = match tiny_guest_dir() {
        Some(dir) => (dir.join("vmlinux"), dir.join("initramfs.cpio.gz")),
        None => (
            Path::new("target/guest/vmlinux").to_owned(),
            Path::new("target/guest/initramfs.cpio.gz").to_owned(),
        ),
    };
    println!();
    println!("Try next (the tiny test guest is built by ./scripts/guest.sh):");
    println!("  drover host list");
    println!(
        "  drover vm create demo --host {host_name} --cpus 1 --memory 256M --disk none --kernel {} --initrd {} --cmdline \"console=ttyS0 tiny.shell=1\" --start",
        kernel.display(),
        initrd.display()
    );
    println!("  drover vm console demo        (Ctrl-] detaches)");
    println!("  drover library import /path/to/disk.vmdk   (into the default share)");
    println!("  drover vm shutdown demo; drover vm delete demo");
    println!();
    println!(
        "Commands: drover login | host add|list|show|remove | vm create|list|show|start|stop|shutdown|pause|resume|restart|delete|console | job list|show|watch|cancel|restart | library server|share|import|list|show|remove|refresh | ports"
    );
    println!("Press Ctrl-C to stop the server and the agent; VMs keep running.");
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    init_logging();
    let server_flags = ServerFlags {
        api_port: args.api_port,
        bind_address: None,
    };
    let agent_flags = AgentFlags {
        control_port: args.control_port,
        transfer_port: None,
        bind_address: None,
    };
    let flags: Vec<_> = server_flags
        .values()
        .into_iter()
        .chain(agent_flags.values())
        .collect();
    let config = load_config(&args.config, &flags)?;
    let data_dir = args.data_dir.resolve();

    let server = drover_server::start(drover_server::ServerOptions {
        data_dir: data_dir.clone(),
        config: config.clone(),
        admin_password: None,
    })
    .await
    .with_context(|| format!("cannot start the server in {}", data_dir.display()))?;
    let agent = drover_agent::start(drover_agent::AgentOptions {
        data_dir: data_dir.join("agent"),
        config,
        driver: qemu_driver(),
        enrollment_code: None,
        // The `drover up` machine is also the default library server, as SCVMM's VMM server was.
        roles: drover_agent::ROLES
            .iter()
            .map(|role| (*role).to_owned())
            .collect(),
    })
    .await
    .context("cannot start the local agent")?;

    let api_url = format!("https://{}", local_address(server.api_addr));
    let anonymous = Client::new(&api_url, None, &server.ca_pem)?;
    // The first start logs the CLI in; later starts use the login stored then.
    let client = match &server.initial_admin_password {
        Some(password) => {
            let session = anonymous
                .login("admin", password, None)
                .await
                .context("cannot log in as the admin")?;
            credentials::save(
                &credentials::config_dir(),
                &api_url,
                &session.token,
                &server.ca_pem,
            )?;
            Some(anonymous.with_token(session.token))
        }
        None => credentials::client().ok(),
    };
    let host_name = match (&agent.enrollment_code, &client) {
        (Some(code), Some(client)) => {
            Some(add_local_host(client, local_address(agent.control_addr), code).await?)
        }
        (Some(code), None) => {
            println!(
                "The local agent is not enrolled; add it with: drover host add {} --code {code}",
                local_address(agent.control_addr)
            );
            None
        }
        (None, Some(client)) => client
            .all_hosts()
            .await
            .ok()
            .and_then(|hosts| hosts.into_iter().next().map(|host| host.name)),
        (None, None) => None,
    };
    if let (Some(client), Some(host_name)) = (&client, &host_name) {
        add_default_share(client, host_name, &data_dir).await?;
    }

    println!("Drover is up.");
    println!("  API:            {api_url}");
    println!(
        "  CA fingerprint: {}",
        drover_tls::pem_fingerprint(&server.ca_pem).context("the CA certificate is invalid")?
    );
    println!("  data:           {}", data_dir.display());
    match &server.initial_admin_password {
        Some(password) => {
            println!("  admin user:     admin");
            println!("  admin password: {password}   (shown only now; only its hash is stored)");
            println!(
                "  The CLI is logged in as admin ({}).",
                credentials::config_dir().display()
            );
        }
        None => {
            println!(
                "  admin user:     admin (its password was shown at the first start of this data directory)"
            );
            println!(
                "  A lost password cannot be recovered: start with a new --data-dir to begin again."
            );
        }
    }
    print_next_steps(host_name.as_deref().unwrap_or("HOST"));

    stop_signal().await?;
    tracing::info!("stopping; VMs keep running");
    agent.shutdown().await;
    server.shutdown().await;
    Ok(())
}
