//! Drover's control plane: the HTTPS REST API, the job engine, the SQLite database and the
//! supervision of hosts through their agents. The `drover` binary calls [`start`]; component tests
//! call [`router`] on an [`AppState`]. The server never runs a VM itself: it has no hypervisor
//! code and talks to hosts only through the agent protocol of `drover_api::agent`.

pub mod agents;
pub mod db;
pub mod http;
pub mod ipam;
pub mod jobs;
pub mod pki;
pub mod placement;
pub mod state;

pub use http::router;
pub use state::AppState;

use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long open requests may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Holds `drover.db` (SQLite) and `pki/` (CA, API certificate, client certificate), all 0600.
    pub data_dir: PathBuf,
    /// `server.api_port` (0 = any free port) and `server.bind_address` are read from here.
    pub config: drover_api::config::Config,
    /// The admin password at first start; `None` generates one.
    pub admin_password: Option<String>,
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    pub api_addr: SocketAddr,
    /// The built-in CA, PEM: what a client trusts.
    pub ca_pem: String,
    /// The admin password, only on the first start of a data directory.
    pub initial_admin_password: Option<String>,
    pub state: AppState,
    server: axum_server::Handle,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    library_refresh: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// Stops accepting requests, lets open ones finish briefly, stops the host supervisors and
    /// closes the database.
    pub async fn shutdown(self) {
        self.library_refresh.abort();
        self.server.graceful_shutdown(Some(SHUTDOWN_GRACE));
        if let Err(error) = self.serving.await {
            tracing::warn!(%error, "the API task ended abnormally");
        }
        self.state.supervisors.stop_all();
        self.state.db.close().await;
    }

    /// Runs until the API server stops (it stops on its own only on an error).
    pub async fn wait(self) -> anyhow::Result<()> {
        let outcome = self.serving.await.context("the API task panicked")?;
        self.library_refresh.abort();
        self.state.supervisors.stop_all();
        self.state.db.close().await;
        outcome.context("the API server failed")
    }
}

/// Opens the data directory, makes the admin user at first start, fails the jobs a previous run
/// left unfinished, starts a supervisor per host and serves the API over HTTPS.
pub async fn start(options: ServerOptions) -> anyhow::Result<ServerHandle> {
    let state = AppState::open(&options.data_dir).await?;
    state
        .engine
        .migration_slots
        .set_per_host(options.config.migrations_per_host());
    let initial_admin_password = http::ensure_admin(&state.db, options.admin_password.clone())
        .await
        .context("cannot create the admin user")?;
    if let Some(password) = &initial_admin_password {
        tracing::info!(username = http::ADMIN, %password, "created the admin user; this password is shown only once");
    }
    let failed = jobs::fail_interrupted(&state)
        .await
        .context("cannot close the jobs of the previous run")?;
    if failed > 0 {
        tracing::info!(failed, "marked jobs of the previous run as failed");
    }
    for host in db::hosts::all(&state.db)
        .await
        .context("cannot list hosts")?
    {
        state.supervisors.start(&state, host.id, host.address);
    }

    let tls = drover_tls::server_config(&state.pki.api, None).context("invalid API certificate")?;
    let address = SocketAddr::new(
        options.config.server_bind_address(),
        options.config.api_port(),
    );
    let server = axum_server::Handle::new();
    let app = router(state.clone());
    let serving = tokio::spawn(
        axum_server::bind_rustls(
            address,
            axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls)),
        )
        .handle(server.clone())
        .serve(app.into_make_service()),
    );
    let Some(api_addr) = server.listening().await else {
        let outcome = serving.await.context("the API task panicked")?;
        outcome.with_context(|| format!("cannot listen on {address}"))?;
        anyhow::bail!("the API server stopped before listening on {address}");
    };
    tracing::info!(%api_addr, "API listening");
    let library_refresh = jobs::schedule_refresh(state.clone());
    Ok(ServerHandle {
        api_addr,
        ca_pem: state.pki.ca.cert_pem().to_owned(),
        initial_admin_password,
        state,
        server,
        serving,
        library_refresh,
    })
}
