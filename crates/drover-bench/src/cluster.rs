//! A server and one QEMU agent in this process on loopback, the agent enrolled as host `local`,
//! and a client logged in as admin: the setting of the core benchmarks.

use anyhow::Context;
use drover_api::config::{Config, Source};
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

fn loopback_config(port_key: &str) -> anyhow::Result<Config> {
    let bind_key = port_key
        .split_once('.')
        .map(|(section, _)| format!("{section}.bind_address"))
        .unwrap_or_default();
    let mut config = Config::default();
    for (key, value) in [(port_key, "0"), (bind_key.as_str(), "127.0.0.1")] {
        config.set(
            key,
            value.to_owned(),
            Source::Flag("drover-bench".to_owned()),
        )?;
    }
    Ok(config)
}

impl Cluster {
    pub async fn start() -> anyhow::Result<Cluster> {
        let dirs = tempfile::tempdir()?;
        let agent_dir = dirs.path().join("agent");
        let server = drover_server::start(drover_server::ServerOptions {
            data_dir: dirs.path().join("server"),
            config: loopback_config("server.api_port")?,
            admin_password: None,
        })
        .await?;
        let mut agent_config = loopback_config("agent.control_port")?;
        agent_config.set(
            "agent.transfer_port",
            "0".to_owned(),
            Source::Flag("drover-bench".to_owned()),
        )?;
        let agent = drover_agent::start(drover_agent::AgentOptions {
            data_dir: agent_dir.clone(),
            config: agent_config,
            driver: Arc::new(QemuDriver::new(QemuConfig::default())),
            enrollment_code: None,
            roles: drover_agent::ROLES
                .iter()
                .map(|role| (*role).to_owned())
                .collect(),
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
        let add = HostAdd {
            address: format!("127.0.0.1:{}", agent.control_addr.port()),
            enrollment_code: agent
                .enrollment_code
                .clone()
                .context("a fresh agent has an enrollment code")?,
            name: Some(HOST_NAME.to_owned()),
        };
        let job = client.add_host(&add).await?;
        let job = client.wait_for_job(job.id, |_| {}).await?;
        anyhow::ensure!(
            job.status == JobStatus::Completed,
            "host add failed: {job:?}"
        );
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
