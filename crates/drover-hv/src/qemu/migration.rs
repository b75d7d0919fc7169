//! Live migration of a QEMU VM to another host with nothing shared (feasibility.md section 4):
//! the destination QEMU starts with `-incoming defer` and exports each of its empty disks over
//! one NBD server; the source mirrors every disk there (one `blockdev-mirror` per disk,
//! write-blocking once in sync, so the copies stay exact) and, once all are in sync, migrates
//! the memory with auto-converge. NBD and the migration stream both
//! run over TLS with the agents' certificates (`tls-creds-x509`). The destination stays paused
//! after the stream ends until [`Monitor::resume_incoming`]: the guest never runs on both hosts.
//! Not here: ports, the agents' protocol, who decides (see the agent's `migration` module).

use drover_api::agent::AgentVmSpec;
use drover_api::migration::{MigrationPhase, MigrationProgress, MirrorSync};
use drover_qmp::{Qmp, QmpError, QmpEvent};
use serde_json::{Value, json};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// The id of the `tls-creds-x509` object on both sides.
const TLS_OBJECT: &str = "migration-tls";
/// Mirror jobs are named this followed by their disk's node name.
const MIRROR_JOB: &str = "migration-mirror-";
/// The source's NBD client node of a disk: this followed by the disk's node name.
const MIRROR_TARGET: &str = "migration-target-";
/// How often progress is read while the disk or the memory is copied.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long the destination may take to load the end of the stream after the source finished.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the destination looks whether it has loaded everything; this wait is downtime.
const LOAD_POLL: Duration = Duration::from_millis(5);
/// How long a canceled mirror job may take to go away.
const MIRROR_CANCEL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("monitor command {command} failed")]
    Monitor {
        command: String,
        #[source]
        source: QmpError,
    },
    /// QEMU gave up; the text is QEMU's reason.
    #[error("{0}")]
    Failed(String),
    #[error("the migration was canceled")]
    Canceled,
    #[error("cannot write the TLS credentials in {path}")]
    Credentials {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One identity that serves as TLS server (destination) and client (source), and the CA both
/// sides trust: the agent's own certificate files.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub ca_pem: &'a str,
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
}

/// Writes QEMU's `tls-creds-x509` directory layout: `ca-cert.pem`, `server-cert.pem`,
/// `server-key.pem`, `client-cert.pem`, `client-key.pem`. Keys are readable by the owner only.
pub fn write_credentials(dir: &Path, credentials: Credentials<'_>) -> Result<(), MigrationError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MigrationError::Credentials { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(failed(dir))?;
    let files = [
        ("ca-cert.pem", credentials.ca_pem),
        ("server-cert.pem", credentials.cert_pem),
        ("server-key.pem", credentials.key_pem),
        ("client-cert.pem", credentials.cert_pem),
        ("client-key.pem", credentials.key_pem),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(failed(&path))?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(failed(&path))?;
    }
    Ok(())
}

/// Where the destination listens for the disk and the memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The address QEMU binds (the agent's bind address).
    pub bind_host: String,
    /// `None` for a VM without a disk.
    pub nbd_port: Option<u16>,
    pub migration_port: u16,
    pub tls_dir: PathBuf,
}

/// One disk a live migration mirrors: its block node, which the destination exports under the
/// same name, and how much of it to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirroredDisk {
    pub node: String,
    pub sync: MirrorSync,
}

/// The block nodes of a VM's disks as its command line names them: `disk0` its first disk (if
/// it has one), `diskN` data disk N.
fn disk_nodes(spec: &AgentVmSpec) -> Vec<String> {
    let main = (spec.disk != drover_api::VmDisk::None).then(|| "disk0".to_owned());
    let data = (1..=spec.devices.data_disks.len()).map(|index| format!("disk{index}"));
    main.into_iter().chain(data).collect()
}

/// The disks a live migration of the VM mirrors: the first copied as `first` says, each data
/// disk as its kind needs.
pub fn mirrored_disks(spec: &AgentVmSpec, first: MirrorSync) -> Vec<MirroredDisk> {
    let syncs = (spec.disk != drover_api::VmDisk::None)
        .then_some(first)
        .into_iter()
        .chain(spec.devices.data_disks.iter().map(MirrorSync::for_disk));
    disk_nodes(spec)
        .into_iter()
        .zip(syncs)
        .map(|(node, sync)| MirroredDisk { node, sync })
        .collect()
}

/// Where the source sends the disks and the memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The destination's address; its certificate must name it.
    pub host: String,
    /// The destination's NBD server; `None` for a VM without disks.
    pub nbd_port: Option<u16>,
    pub migration_port: u16,
    pub tls_dir: PathBuf,
    pub disks: Vec<MirroredDisk>,
    pub mirror_bytes_per_second: Option<u64>,
    pub downtime_limit_ms: u64,
}

/// The migration controls of one QEMU, over its monitor.
#[derive(Debug, Clone)]
pub struct Monitor {
    qmp: Qmp,
}

fn inet(host: &str, port: u16) -> Value {
    json!({ "type": "inet", "host": host, "port": port.to_string() })
}

/// A URI host: IPv6 addresses go in brackets.
fn uri_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

impl Monitor {
    pub(crate) fn new(qmp: Qmp) -> Monitor {
        Monitor { qmp }
    }

    async fn run(&self, command: &str, arguments: Value) -> Result<Value, MigrationError> {
        self.qmp
            .execute(command, arguments)
            .await
            .map_err(|source| MigrationError::Monitor {
                command: command.to_owned(),
                source,
            })
    }

    /// Runs a clean-up command whose failure changes nothing (the thing may not exist).
    async fn try_run(&self, command: &str, arguments: Value) {
        if let Err(error) = self.qmp.execute(command, arguments).await {
            tracing::debug!(command, %error, "migration clean-up step had nothing to do");
        }
    }

    async fn add_tls(&self, dir: &Path, endpoint: &str) -> Result<(), MigrationError> {
        // A previous attempt's object would make object-add fail.
        self.try_run("object-del", json!({ "id": TLS_OBJECT }))
            .await;
        self.run(
            "object-add",
            json!({
                "qom-type": "tls-creds-x509", "id": TLS_OBJECT, "dir": dir.display().to_string(),
                "endpoint": endpoint, "verify-peer": true,
            }),
        )
        .await
        .map(drop)
    }

    /// Destination, right after launch with `-incoming defer`: TLS, an NBD export per disk of
    /// `spec`, and the listener of the migration stream.
    pub(crate) async fn prepare_incoming(
        &self,
        incoming: &Incoming,
        spec: &AgentVmSpec,
    ) -> Result<(), MigrationError> {
        self.add_tls(&incoming.tls_dir, "server").await?;
        self.run("migrate-set-parameters", json!({ "tls-creds": TLS_OBJECT }))
            .await?;
        if let Some(nbd_port) = incoming.nbd_port {
            self.run(
                "nbd-server-start",
                json!({
                    "addr": { "type": "inet", "data": { "host": incoming.bind_host, "port": nbd_port.to_string() } },
                    "tls-creds": TLS_OBJECT,
                }),
            )
            .await?;
            for node in disk_nodes(spec) {
                self.run(
                    "block-export-add",
                    json!({
                        "type": "nbd", "id": node, "node-name": node, "name": node,
                        "writable": true,
                    }),
                )
                .await?;
            }
        }
        self.run(
            "migrate-incoming",
            json!({ "uri": format!("tcp:{}:{}", uri_host(&incoming.bind_host), incoming.migration_port) }),
        )
        .await
        .map(drop)
    }

    /// Destination, once the source's QEMU finished: the guest runs here from now on; the
    /// NBD server has nothing more to receive.
    pub async fn resume_incoming(&self) -> Result<(), MigrationError> {
        // The source is done sending; this side may still be loading the last of it.
        let deadline = tokio::time::Instant::now() + LOAD_TIMEOUT;
        let status = loop {
            let status =
                self.qmp
                    .query_status()
                    .await
                    .map_err(|source| MigrationError::Monitor {
                        command: "query-status".into(),
                        source,
                    })?;
            if status.status != "inmigrate" {
                break status;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(MigrationError::Failed(format!(
                    "the migration stream did not arrive in full within {LOAD_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(LOAD_POLL).await;
        };
        if matches!(
            status.status.as_str(),
            "shutdown" | "internal-error" | "io-error"
        ) {
            return Err(MigrationError::Failed(format!(
                "the destination is {} after loading the migration stream",
                status.status
            )));
        }
        if !status.running {
            self.run("cont", Value::Null).await?;
        }
        self.try_run("nbd-server-stop", Value::Null).await;
        self.try_run("object-del", json!({ "id": TLS_OBJECT }))
            .await;
        Ok(())
    }

    /// Source: mirrors the disk, then migrates the memory, reporting figures in `progress`.
    /// Returns once QEMU finished: the source is paused (`postmigrate`) and the destination
    /// holds everything. On error or `cancel`, undoes itself: the guest runs here again.
    pub async fn migrate_out(
        &self,
        outgoing: &Outgoing,
        progress: &watch::Sender<MigrationProgress>,
        cancel: impl Future<Output = ()>,
    ) -> Result<(), MigrationError> {
        tokio::pin!(cancel);
        let outcome = tokio::select! {
            outcome = self.copy_out(outgoing, progress) => outcome,
            () = &mut cancel => Err(MigrationError::Canceled),
        };
        if outcome.is_err() {
            self.roll_back().await;
        }
        outcome
    }

    async fn copy_out(
        &self,
        outgoing: &Outgoing,
        progress: &watch::Sender<MigrationProgress>,
    ) -> Result<(), MigrationError> {
        let events = self.qmp.events();
        self.add_tls(&outgoing.tls_dir, "client").await?;
        self.run(
            "migrate-set-capabilities",
            json!({ "capabilities": [
                { "capability": "events", "state": true },
                { "capability": "auto-converge", "state": true },
            ]}),
        )
        .await?;
        self.run(
            "migrate-set-parameters",
            json!({
                "tls-creds": TLS_OBJECT, "tls-hostname": outgoing.host,
                "downtime-limit": outgoing.downtime_limit_ms,
                // QEMU's default of 128 MiB/s would make a fast network wait.
                "max-bandwidth": 10_000_000_000u64,
            }),
        )
        .await?;
        if let Some(nbd_port) = outgoing.nbd_port
            && !outgoing.disks.is_empty()
        {
            self.mirror(outgoing, nbd_port, progress, events.resubscribe())
                .await?;
        }
        progress.send_modify(|progress| progress.phase = MigrationPhase::Migrating);
        self.migrate(outgoing, progress, events).await
    }

    /// Mirrors every disk to its export on the destination; returns once all are in sync.
    async fn mirror(
        &self,
        outgoing: &Outgoing,
        nbd_port: u16,
        progress: &watch::Sender<MigrationProgress>,
        mut events: broadcast::Receiver<QmpEvent>,
    ) -> Result<(), MigrationError> {
        // The speed cap is for the whole VM: each of its disks gets a share.
        let disk_count = u64::try_from(outgoing.disks.len()).unwrap_or(1).max(1);
        for disk in &outgoing.disks {
            let target = format!("{MIRROR_TARGET}{}", disk.node);
            self.run(
                "blockdev-add",
                json!({
                    "driver": "nbd", "node-name": target,
                    "server": inet(&outgoing.host, nbd_port), "export": disk.node,
                    "tls-creds": TLS_OBJECT, "tls-hostname": outgoing.host,
                }),
            )
            .await?;
            let mut mirror = json!({
                "job-id": format!("{MIRROR_JOB}{}", disk.node), "device": disk.node,
                "target": target,
                "sync": match disk.sync { MirrorSync::Top => "top", MirrorSync::Full => "full" },
                // Once in sync, guest writes reach both disks before they complete: at the
                // switch the destination's copy is exact without a final pass.
                "copy-mode": "write-blocking",
            });
            if let Some(speed) = outgoing.mirror_bytes_per_second {
                mirror["speed"] = json!((speed / disk_count).max(1));
            }
            self.run("blockdev-mirror", mirror).await?;
        }
        loop {
            let jobs = self.run("query-block-jobs", Value::Null).await?;
            let mirrors: Vec<&Value> = jobs
                .as_array()
                .map(|jobs| jobs.iter().filter(|job| is_mirror_job(job)).collect())
                .unwrap_or_default();
            if mirrors.len() < outgoing.disks.len() {
                return Err(MigrationError::Failed(format!(
                    "a disk mirror stopped: {}",
                    job_error(&mut events)
                )));
            }
            let figure = |name: &str| {
                mirrors
                    .iter()
                    .map(|job| job[name].as_u64().unwrap_or(0))
                    .sum::<u64>()
            };
            let (total, done) = (figure("len"), figure("offset"));
            progress.send_modify(|progress| {
                progress.disk_bytes_total = total;
                progress.disk_bytes_mirrored = done;
            });
            if mirrors
                .iter()
                .all(|job| job["ready"].as_bool() == Some(true))
            {
                return Ok(());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn migrate(
        &self,
        outgoing: &Outgoing,
        progress: &watch::Sender<MigrationProgress>,
        mut events: broadcast::Receiver<QmpEvent>,
    ) -> Result<(), MigrationError> {
        let uri = format!(
            "tcp:{}:{}",
            uri_host(&outgoing.host),
            outgoing.migration_port
        );
        self.run("migrate", json!({ "uri": uri })).await?;
        loop {
            let ended = async {
                loop {
                    match events.recv().await {
                        Ok(event) if event.event == "MIGRATION" => {
                            let status = event.data["status"].as_str().unwrap_or_default();
                            if matches!(status, "completed" | "failed" | "cancelled") {
                                return;
                            }
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            };
            // Ends early when QEMU reports the end, so the switch is not delayed by the poll.
            let _ = tokio::time::timeout(POLL_INTERVAL, ended).await;
            let info = self.run("query-migrate", Value::Null).await?;
            let status = info["status"].as_str().unwrap_or_default().to_owned();
            progress.send_modify(|progress| read_migration_info(progress, &info));
            match status.as_str() {
                "completed" => return Ok(()),
                "failed" | "cancelled" => {
                    let reason = info["error-desc"]
                        .as_str()
                        .unwrap_or("QEMU gave no reason")
                        .to_owned();
                    return Err(MigrationError::Failed(format!(
                        "the memory copy {status}: {reason}"
                    )));
                }
                _ => {}
            }
        }
    }

    /// Source, after a failure, a cancel or a destination that would not resume: stops the
    /// copies, lets go of the destination's disk and runs the guest here again.
    pub async fn roll_back(&self) {
        self.try_run("migrate_cancel", Value::Null).await;
        let mirrored = self.mirror_jobs().await;
        for job in &mirrored {
            self.try_run("block-job-cancel", json!({ "device": job, "force": true }))
                .await;
        }
        let deadline = tokio::time::Instant::now() + MIRROR_CANCEL_TIMEOUT;
        while tokio::time::Instant::now() < deadline && !self.mirror_jobs().await.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for job in &mirrored {
            let node = job.strip_prefix(MIRROR_JOB).unwrap_or(job);
            self.try_run(
                "blockdev-del",
                json!({ "node-name": format!("{MIRROR_TARGET}{node}") }),
            )
            .await;
        }
        // The migration may still be winding down; cont must come after it (QEMU resumes a
        // guest whose migration failed by itself, but not one that completed).
        let deadline = tokio::time::Instant::now() + MIRROR_CANCEL_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            let status = self
                .qmp
                .execute("query-migrate", Value::Null)
                .await
                .ok()
                .and_then(|info| info["status"].as_str().map(str::to_owned));
            if !matches!(status.as_deref(), Some("cancelling" | "active" | "device")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Ok(status) = self.qmp.query_status().await
            && !status.running
        {
            self.try_run("cont", Value::Null).await;
        }
        self.try_run("object-del", json!({ "id": TLS_OBJECT }))
            .await;
    }
}

impl Monitor {
    /// The ids of this migration's mirror jobs that QEMU still has.
    async fn mirror_jobs(&self) -> Vec<String> {
        self.qmp
            .execute("query-block-jobs", Value::Null)
            .await
            .ok()
            .and_then(|jobs| {
                jobs.as_array().map(|jobs| {
                    jobs.iter()
                        .filter(|job| is_mirror_job(job))
                        .filter_map(|job| job["device"].as_str().map(str::to_owned))
                        .collect()
                })
            })
            .unwrap_or_default()
    }
}

fn is_mirror_job(job: &Value) -> bool {
    job["device"]
        .as_str()
        .is_some_and(|id| id.starts_with(MIRROR_JOB))
}

/// The error of a mirror job's end, from the events seen so far.
fn job_error(events: &mut broadcast::Receiver<QmpEvent>) -> String {
    let mut reason = "QEMU gave no reason".to_owned();
    while let Ok(event) = events.try_recv() {
        if matches!(
            event.event.as_str(),
            "BLOCK_JOB_COMPLETED" | "BLOCK_JOB_CANCELLED" | "BLOCK_JOB_ERROR"
        ) && let Some(error) = event.data["error"].as_str()
        {
            reason = error.to_owned();
        }
    }
    reason
}

/// Takes the figures of a `query-migrate` answer.
fn read_migration_info(progress: &mut MigrationProgress, info: &Value) {
    let ram = &info["ram"];
    let number = |value: &Value| value.as_u64().unwrap_or(0);
    if ram.is_object() {
        progress.ram_bytes_total = number(&ram["total"]);
        progress.ram_bytes_transferred = number(&ram["transferred"]);
        progress.ram_bytes_remaining = number(&ram["remaining"]);
        progress.dirty_pages_per_second = number(&ram["dirty-pages-rate"]);
    }
    if info["status"] == "completed" {
        progress.downtime_ms = info["downtime"].as_u64();
        progress.memory_copy_ms = info["total-time"].as_u64();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_figures_come_from_query_migrate() {
        let mut progress = MigrationProgress::new(MigrationPhase::Migrating);
        let active = json!({
            "status": "active",
            "ram": { "total": 268435456u64, "transferred": 1000, "remaining": 500, "dirty-pages-rate": 7 },
        });
        read_migration_info(&mut progress, &active);
        assert_eq!(
            (
                progress.ram_bytes_total,
                progress.ram_bytes_transferred,
                progress.ram_bytes_remaining,
                progress.dirty_pages_per_second,
                progress.downtime_ms
            ),
            (268435456, 1000, 500, 7, None)
        );
        let completed =
            json!({ "status": "completed", "downtime": 12, "total-time": 480, "ram": {} });
        read_migration_info(&mut progress, &completed);
        assert_eq!(progress.downtime_ms, Some(12));
        assert_eq!(progress.memory_copy_ms, Some(480));
    }

    #[test]
    fn ipv6_hosts_are_bracketed_in_uris() {
        assert_eq!(uri_host("::1"), "[::1]");
        assert_eq!(uri_host("10.0.0.2"), "10.0.0.2");
    }
}
