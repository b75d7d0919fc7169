//! The Drover host agent: serves the agent protocol (`drover_api::agent`) on the control port
//! over TLS, enrolls with one server by a one-time code and then demands mutual TLS, runs one
//! actor per VM over a [`VmDriver`], streams state changes, relays serial consoles and re-adopts
//! running VMs after a restart. It is a library: the `drover` binary parses arguments and calls
//! [`start`]; this crate reads no command line and prints nothing.

mod actor;
mod cache;
mod enrollment;
mod error;
mod eviction;
mod full_clone;
mod host;
mod http;
mod library;
mod migration;
pub mod network;
mod registry;
mod store;
mod transfers;
mod vm_files;

pub use actor::SHUTDOWN_TIMEOUT;
pub use error::AgentError;

use anyhow::Context;
use drover_hv::VmDriver;
use http::AgentState;
use registry::Registry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// VM state changes buffered per event-stream reader before it is deemed lagging (and resynced
/// by a snapshot).
const CHANGE_BUFFER: usize = 1024;

/// What an agent needs to start.
pub struct AgentOptions {
    /// Agent state: TLS identity, enrollment code, `vms/<vm id>/`.
    pub data_dir: PathBuf,
    /// `agent.control_port` (0 = any free port) and `agent.bind_address` are used.
    pub config: drover_api::config::Config,
    pub driver: Arc<dyn VmDriver>,
    /// A fixed enrollment code (`drover up` passes one); `None` makes one at first start.
    pub enrollment_code: Option<String>,
    /// What this agent does: `host` (runs VMs), `library` (serves library shares), or both.
    pub roles: Vec<String>,
}

/// The roles an agent can have.
pub const ROLES: &[&str] = &["host", drover_api::library::LIBRARY_ROLE];

/// A running agent.
pub struct AgentHandle {
    /// Where the control API listens (with the real port when the configured one was 0).
    pub control_addr: SocketAddr,
    /// Where the transfer endpoint listens.
    pub transfer_addr: SocketAddr,
    /// The code a server must present to enroll this agent; `None` once enrolled.
    pub enrollment_code: Option<String>,
    state: Arc<AgentState>,
    server: axum_server::Handle,
    serve_task: JoinHandle<std::io::Result<()>>,
    transfer_server: axum_server::Handle,
    transfer_task: JoinHandle<std::io::Result<()>>,
}

impl AgentHandle {
    /// Stops serving and lets go of every VM; the VMs keep running for the next agent.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        self.server.shutdown();
        self.transfer_server.shutdown();
        self.serve_task.abort();
        self.transfer_task.abort();
        let _ = self.serve_task.await;
        let _ = self.transfer_task.await;
        self.state.registry.detach_all().await;
        tracing::info!("agent stopped; VMs keep running");
    }

    /// Serves until the listener fails.
    pub async fn wait(self) -> anyhow::Result<()> {
        let result = self.serve_task.await;
        self.transfer_task.abort();
        self.state.shutdown.cancel();
        self.state.registry.detach_all().await;
        result
            .context("the control API task panicked")?
            .context("the control API stopped")
    }
}

/// Starts the agent: loads or begins enrollment, re-adopts the VMs found in the data
/// directory, and serves the control API.
pub async fn start(options: AgentOptions) -> anyhow::Result<AgentHandle> {
    let AgentOptions {
        data_dir,
        config,
        driver,
        enrollment_code,
        roles,
    } = options;
    if let Some(unknown) = roles.iter().find(|role| !ROLES.contains(&role.as_str())) {
        anyhow::bail!(
            "unknown role '{unknown}'; the roles are {}",
            ROLES.join(", ")
        );
    }
    let library = library::Library::open(&data_dir, &roles)
        .context("cannot read the library shares of this agent")?;
    // Both listeners are bound before anything else starts, so a port in use fails the start.
    let bind_to = SocketAddr::new(config.agent_bind_address(), config.agent_control_port());
    let listener = std::net::TcpListener::bind(bind_to)
        .with_context(|| format!("cannot listen on {bind_to} (agent.control_port)"))?;
    let transfer_to = SocketAddr::new(config.agent_bind_address(), config.agent_transfer_port());
    let transfer_listener = std::net::TcpListener::bind(transfer_to)
        .with_context(|| format!("cannot listen on {transfer_to} (agent.transfer_port)"))?;
    let transfer_addr = transfer_listener
        .local_addr()
        .context("transfer listener address")?;
    store::create_private_dir(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let enrollment = enrollment::Enrollment::open(&data_dir, enrollment_code)
        .context("cannot set up the agent's TLS identity")?;
    let tls_config = enrollment.tls_config();
    let (changes, _) = broadcast::channel(CHANGE_BUFFER);
    let networks = network::Networks::open(&data_dir, config.vxlan_port())
        .context("cannot read the networks of this host")?;
    let state = Arc::new(AgentState {
        images: cache::ImageCache::new(&data_dir, config.cache_min_free()),
        data_dir,
        driver,
        networks,
        registry: Registry::default(),
        enrollment,
        roles,
        library,
        transfer_port: transfer_addr.port(),
        transfers: transfers::Transfers::default(),
        transfer_rate_limit: config.transfer_rate_limit(),
        changes,
        shutdown: CancellationToken::new(),
        migrations: migration::Migrations::new(
            config.migration_ports(),
            config.agent_bind_address(),
        ),
    });
    recover_vms(&state).await?;
    state.networks.readopt().await;

    let control_addr = listener.local_addr().context("listener address")?;
    let server = axum_server::Handle::new();
    let serve = axum_server::from_tcp_rustls(listener, tls_config.clone())
        .handle(server.clone())
        .serve(http::router(state.clone()).into_make_service());
    let serve_task = tokio::spawn(serve);
    let transfer_server = axum_server::Handle::new();
    let transfer_serve = axum_server::from_tcp_rustls(transfer_listener, tls_config)
        .handle(transfer_server.clone())
        .serve(http::transfer_router(state.clone()).into_make_service());
    let transfer_task = tokio::spawn(transfer_serve);

    let enrollment_code = state.enrollment.pending_code();
    match &enrollment_code {
        Some(code) => tracing::info!(%control_addr, "agent listening; enrollment code: {code}"),
        None => tracing::info!(%control_addr, "agent listening (enrolled, mutual TLS)"),
    }
    Ok(AgentHandle {
        control_addr,
        transfer_addr,
        enrollment_code,
        state,
        server,
        serve_task,
        transfer_server,
        transfer_task,
    })
}

/// Brings back every VM defined in the data directory, re-adopting those whose process runs.
async fn recover_vms(state: &AgentState) -> anyhow::Result<()> {
    let saved = store::load_vms(&state.data_dir).context("cannot read the VM directories")?;
    for vm in saved {
        let vm_dir = store::vm_dir(&state.data_dir, vm.spec.id);
        if migration::is_incoming(&vm_dir) {
            migration::discard_unfinished(state, &vm.spec, &vm_dir).await;
            continue;
        }
        let (process, runtime) =
            actor::recover(state.driver.as_ref(), &vm.spec, &vm_dir, vm.last_state).await;
        state.networks.add_leases(vm.spec.clone()).await;
        state.registry.spawn(actor::VmSetup {
            spec: vm.spec,
            vm_dir,
            driver: state.driver.clone(),
            networks: state.networks.clone(),
            process,
            runtime,
            changes: state.changes.clone(),
        });
    }
    Ok(())
}
