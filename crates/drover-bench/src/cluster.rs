//! A server and one QEMU agent in this process on loopback, the agent enrolled as host `local`,
//! and a client logged in as admin: the setting of the core benchmarks.

use anyhow::Context;
use drover_api::config::Config;
use drover_api::{HostAdd, JobStatus};
use drover_client::Client;
use drover_hv::qemu::{QemuConfig, QemuDriver};
use std::path::PathBuf;
use std::sync::Arc;

pub const HOST_NAME: &str = "local";

pub struct Cluster {
    pub server: drover_server::ServerHandle,
    pub agent: drover_agent::AgentHandle,
    pub client: Client,
    pub agent_dir: PathBuf,
    _dirs: tempfile::TempDir,
}

/// Settings given as flags of the bench (ports, addresses).
pub fn config(settings: &[(&str, &str)]) -> anyhow::Result<Config> {
    let mut config = Config::default();
    for (key, value) in settings {
        config.set_flag(key, "drover-bench", (*value).to_owned())?;
    }
    Ok(config)
}

impl Cluster {
    pub async fn start() -> anyhow::Result<Cluster> {
        let dirs = tempfile::tempdir()?;
        let agent_dir = dirs.path().join("agent");
        let server = drover_server::start(drover_server::ServerOptions {
            data_dir: dirs.path().join("server"),
            config: config(&[
                ("server.api_port", "0"),
                ("server.bind_address", "127.0.0.1"),
            ])?,
            admin_password: None,
        })
        .await?;
        let token = drover_server::http::issue_token(
            &server.state.db,
            drover_server::http::ADMIN,
            chrono::Utc::now() + chrono::Duration::hours(1),
        )
        .await?;
        let url = format!("https://localhost:{}", server.api_addr.port());
        let client = Client::new(&url, Some(token), &server.ca_pem)?;
        let agent = add_agent(&client, &agent_dir, HOST_NAME).await?;
        Ok(Cluster {
            server,
            agent,
            client,
            agent_dir,
            _dirs: dirs,
        })
    }

    pub async fn shutdown(self) {
        self.agent.shutdown().await;
        self.server.shutdown().await;
    }
}

/// Starts a QEMU agent in this process with its data in `dir` and adds it as host `name`.
pub async fn add_agent(
    client: &Client,
    dir: &std::path::Path,
    name: &str,
) -> anyhow::Result<drover_agent::AgentHandle> {
    let agent = drover_agent::start(drover_agent::AgentOptions {
        data_dir: dir.to_path_buf(),
        config: config(&[
            ("agent.control_port", "0"),
            ("agent.transfer_port", "0"),
            ("agent.bind_address", "127.0.0.1"),
        ])?,
        driver: Arc::new(QemuDriver::new(QemuConfig::default())),
        enrollment_code: None,
        roles: drover_agent::ROLES
            .iter()
            .map(|role| (*role).to_owned())
            .collect(),
    })
    .await?;
    let add = HostAdd {
        address: format!("127.0.0.1:{}", agent.control_addr.port()),
        enrollment_code: agent
            .enrollment_code
            .clone()
            .context("a fresh agent has an enrollment code")?,
        name: Some(name.to_owned()),
        group: None,
    };
    let job = client.add_host(&add).await?;
    let job = client.wait_for_job(job.id, |_| {}).await?;
    anyhow::ensure!(
        job.status == JobStatus::Completed,
        "host add failed: {job:?}"
    );
    Ok(agent)
}
