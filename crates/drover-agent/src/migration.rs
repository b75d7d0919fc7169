//! Live migration, the agent's part (the protocol is in `drover_api::migration`). As the
//! destination it defines the VM, starts QEMU waiting for the stream on two ports from
//! `agent.migration_ports` and keeps it aside, out of the registry, until the source asks it to
//! resume the guest: only then is the VM this host's. An incoming VM whose migration is aborted,
//! or that an agent restart finds unfinished (the `incoming` marker in its directory), is
//! removed with every trace. As the source it runs the copy in a task, keeps its figures for the
//! server to poll, and after QEMU finished asks the destination agent to resume the guest; when
//! that fails the guest runs on here. QEMU's side of all this is `drover_hv::qemu::migration`.

use crate::actor::{self, VmHandle, VmSetup};
use crate::error::AgentError;
use crate::http::AgentState;
use crate::store;
use drover_api::agent::{AgentVmSpec, VmRuntime};
use drover_api::migration::{
    AgentIncoming, AgentIncomingReady, AgentMigrate, MigrationPhase, MigrationProgress,
};
use drover_api::{VmDisk, VmId, VmState};
use drover_hv::RunningVm;
use drover_hv::qemu::migration::{Credentials, Incoming, MigrationError, Outgoing};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, TcpListener};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Present in a VM directory while the VM is an incoming migration, not yet this host's.
const INCOMING_MARKER: &str = "incoming";
/// How often a destination retries with other ports when another process took one first.
const PORT_ATTEMPTS: usize = 3;

/// The migrations this agent takes part in.
pub struct Migrations {
    ports: RangeInclusive<u16>,
    bind_address: IpAddr,
    ports_in_use: Arc<Mutex<HashSet<u16>>>,
    incoming: Mutex<HashMap<VmId, IncomingVm>>,
    outgoing: Mutex<HashMap<VmId, OutgoingMigration>>,
}

/// A VM waiting for (or holding) a migration stream, not yet in the registry.
struct IncomingVm {
    spec: AgentVmSpec,
    vm_dir: PathBuf,
    process: Box<dyn RunningVm>,
    _ports: PortLease,
}

struct OutgoingMigration {
    progress: watch::Receiver<MigrationProgress>,
    cancel: CancellationToken,
}

/// Ports taken from `agent.migration_ports`; given back when dropped.
struct PortLease {
    ports: Vec<u16>,
    in_use: Arc<Mutex<HashSet<u16>>>,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut in_use = self.in_use.lock().unwrap_or_else(PoisonError::into_inner);
        for port in &self.ports {
            in_use.remove(port);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Migrations {
    pub fn new(ports: RangeInclusive<u16>, bind_address: IpAddr) -> Migrations {
        Migrations {
            ports,
            bind_address,
            ports_in_use: Arc::default(),
            incoming: Mutex::default(),
            outgoing: Mutex::default(),
        }
    }

    /// `count` ports of the range that nothing here uses and that can be bound now.
    fn lease_ports(&self, count: usize) -> Result<PortLease, AgentError> {
        let mut in_use = lock(&self.ports_in_use);
        let mut ports = Vec::with_capacity(count);
        for port in self.ports.clone() {
            if ports.len() == count {
                break;
            }
            if port == 0 || in_use.contains(&port) {
                continue;
            }
            if TcpListener::bind((self.bind_address, port)).is_ok() {
                ports.push(port);
            }
        }
        if ports.len() < count {
            return Err(AgentError::MigrationPortsExhausted(format!(
                "{}-{}",
                self.ports.start(),
                self.ports.end()
            )));
        }
        in_use.extend(&ports);
        Ok(PortLease {
            ports,
            in_use: self.ports_in_use.clone(),
        })
    }

    /// The figures of the VM's last outgoing migration.
    pub fn progress(&self, vm_id: VmId) -> Result<MigrationProgress, AgentError> {
        lock(&self.outgoing)
            .get(&vm_id)
            .map(|migration| migration.progress.borrow().clone())
            .ok_or(AgentError::MigrationNotFound(vm_id))
    }

    /// Cancels the VM's outgoing migration; one that has ended stays as it ended.
    pub fn cancel(&self, vm_id: VmId) -> Result<(), AgentError> {
        lock(&self.outgoing)
            .get(&vm_id)
            .map(|migration| migration.cancel.cancel())
            .ok_or(AgentError::MigrationNotFound(vm_id))
    }
}

/// Whether `vm_dir` holds an incoming VM that never became this host's.
pub fn is_incoming(vm_dir: &Path) -> bool {
    vm_dir.join(INCOMING_MARKER).exists()
}

/// QEMU's TLS directory, written from the agent's own certificate files.
fn credentials_dir(state: &AgentState) -> Result<PathBuf, AgentError> {
    let (identity, ca_pem) = state.enrollment.peer_identity()?;
    let dir = state.data_dir.join("tls").join("qemu");
    drover_hv::qemu::migration::write_credentials(
        &dir,
        Credentials {
            ca_pem: &ca_pem,
            cert_pem: &identity.cert_pem,
            key_pem: &identity.key_pem,
        },
    )
    .map_err(|error| AgentError::Internal(error.into()))?;
    Ok(dir)
}

/// The disk bytes a VM may come to use here: a blank disk its size, an overlay the base image's
/// size (the mirror may fill it in full); its data disks alike.
fn disk_bytes(spec: &AgentVmSpec) -> u64 {
    let bytes = |disk: &VmDisk| match disk {
        VmDisk::None => 0,
        VmDisk::Blank { size_bytes } => *size_bytes,
        VmDisk::Image { path } => std::fs::metadata(path).map_or(0, |metadata| metadata.len()),
        VmDisk::Library { .. } => 0,
        VmDisk::LibraryCopy { virtual_size, .. } => *virtual_size,
    };
    spec.devices
        .data_disks
        .iter()
        .fold(bytes(&spec.disk), |sum, disk| {
            sum.saturating_add(bytes(disk))
        })
}

/// Refuses an incoming VM whose disk could fill the data directory's file system.
fn check_disk_space(data_dir: &Path, spec: &AgentVmSpec) -> Result<(), AgentError> {
    let needed = disk_bytes(spec);
    let stat = nix::sys::statvfs::statvfs(data_dir)
        .map_err(|error| AgentError::Internal(anyhow::anyhow!("statvfs: {error}")))?;
    let free = stat.blocks_available() * stat.fragment_size();
    if needed > free {
        return Err(AgentError::DiskSpaceLow {
            path: data_dir.to_path_buf(),
            needed,
            free,
        });
    }
    Ok(())
}

/// Destination: defines the VM and starts QEMU waiting for the migration.
pub async fn receive(
    state: &AgentState,
    request: AgentIncoming,
) -> Result<AgentIncomingReady, AgentError> {
    let vm_id = request.spec.id;
    drover_api::vm::validate_name(&request.spec.name).map_err(AgentError::VmSpecInvalid)?;
    if state.registry.find(vm_id)?.is_some()
        || lock(&state.migrations.incoming).contains_key(&vm_id)
    {
        return Err(AgentError::VmBusy(vm_id));
    }
    let tls_dir = credentials_dir(state)?;
    let mut spec = request.spec;
    if let VmDisk::LibraryCopy { virtual_size, .. } = spec.disk {
        // A full clone is a disk of its own: the mirror fills an empty one, nothing to fetch.
        spec.disk = VmDisk::Blank {
            size_bytes: virtual_size,
        };
    }
    let spec = crate::http::resolve_library_disk(state, spec).await?;
    let vm_dir = store::vm_dir(&state.data_dir, vm_id);
    if vm_dir.exists() {
        return Err(AgentError::VmBusy(vm_id));
    }
    check_disk_space(&state.data_dir, &spec)?;
    // The marker goes first, so that an agent dying from here on leaves a directory that its
    // next start recognizes and removes.
    store::create_private_dir(&vm_dir).map_err(|error| AgentError::Internal(error.into()))?;
    store::write_atomic(&vm_dir.join(INCOMING_MARKER), b"", store::Access::Public)
        .map_err(|error| AgentError::Internal(error.into()))?;
    let started = start_waiting(state, &spec, &vm_dir, &tls_dir).await;
    match started {
        Ok((process, lease, ready)) => {
            lock(&state.migrations.incoming).insert(
                vm_id,
                IncomingVm {
                    spec,
                    vm_dir,
                    process,
                    _ports: lease,
                },
            );
            tracing::info!(%vm_id, ?ready, "waiting for an incoming migration");
            Ok(ready)
        }
        Err(error) => {
            discard(state, &spec, &vm_dir).await;
            Err(error)
        }
    }
}

async fn start_waiting(
    state: &AgentState,
    spec: &AgentVmSpec,
    vm_dir: &Path,
    tls_dir: &Path,
) -> Result<(Box<dyn RunningVm>, PortLease, AgentIncomingReady), AgentError> {
    actor::define(state.driver.as_ref(), spec, vm_dir).await?;
    state.networks.plug(spec.clone()).await?;
    let has_disk = spec.disk != VmDisk::None || !spec.devices.data_disks.is_empty();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let lease = state.migrations.lease_ports(if has_disk { 2 } else { 1 })?;
        let ready = AgentIncomingReady {
            migration_port: lease.ports[0],
            nbd_port: lease.ports.get(1).copied(),
        };
        let incoming = Incoming {
            bind_host: state.migrations.bind_address.to_string(),
            nbd_port: ready.nbd_port,
            migration_port: ready.migration_port,
            tls_dir: tls_dir.to_path_buf(),
        };
        match state.driver.start_incoming(spec, vm_dir, &incoming).await {
            Ok(process) => return Ok((process, lease, ready)),
            // Another process bound the port between our check and QEMU's bind.
            Err(drover_hv::DriverError::StartFailed(reason))
                if reason.contains("Address already in use") && attempt < PORT_ATTEMPTS =>
            {
                tracing::info!(%reason, "a migration port was taken; trying others");
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Removes an incoming VM that did not become this host's: process, taps, files.
async fn discard(state: &AgentState, spec: &AgentVmSpec, vm_dir: &Path) {
    if let Err(error) = state.driver.destroy(vm_dir).await {
        tracing::warn!(error = ?anyhow::Error::from(error), "cannot remove an incoming VM's process and files");
    }
    state.networks.unplug(spec.clone()).await;
    if let Err(error) = store::remove_dir_optional(vm_dir) {
        tracing::warn!(error = ?anyhow::Error::from(error), "cannot remove an incoming VM's directory");
    }
}

/// At agent start: removes an incoming VM the previous run left unfinished.
pub async fn discard_unfinished(state: &AgentState, spec: &AgentVmSpec, vm_dir: &Path) {
    tracing::info!(vm_id = %spec.id, "removing an incoming migration left unfinished");
    discard(state, spec, vm_dir).await;
}

/// Destination: the source's QEMU finished; the guest runs here and the VM is this host's.
pub async fn resume(state: &AgentState, vm_id: VmId) -> Result<(), AgentError> {
    let Some(incoming) = lock(&state.migrations.incoming).remove(&vm_id) else {
        // Resumed already (a retried call) or never here.
        return match state.registry.find(vm_id)? {
            Some(_) => Ok(()),
            None => Err(AgentError::MigrationNotFound(vm_id)),
        };
    };
    let monitor = incoming
        .process
        .migration()
        .ok_or_else(|| AgentError::Unsupported("the driver cannot resume a migration".into()))?;
    if let Err(error) = monitor.resume_incoming().await {
        let error = AgentError::MigrationFailed(error.to_string());
        // Kept for the abort that follows.
        lock(&state.migrations.incoming).insert(vm_id, incoming);
        return Err(error);
    }
    let IncomingVm {
        spec,
        vm_dir,
        process,
        _ports,
    } = incoming;
    let runtime = VmRuntime {
        vm_id,
        state: VmState::Running,
        reason: None,
    };
    if let Err(error) = store::save_state(&vm_dir, &runtime)
        .and_then(|()| store::remove_optional(&vm_dir.join(INCOMING_MARKER)))
    {
        tracing::warn!(error = ?anyhow::Error::from(error), "cannot record the migrated VM");
    }
    state.networks.add_leases(spec.clone()).await;
    state.registry.spawn(VmSetup {
        spec,
        vm_dir,
        driver: state.driver.clone(),
        networks: state.networks.clone(),
        process: Some(process),
        runtime,
        changes: state.changes.clone(),
    });
    tracing::info!(%vm_id, "migrated VM runs here now");
    Ok(())
}

/// Destination: the migration will not happen; removes every trace of the incoming VM.
pub async fn abort(state: &AgentState, vm_id: VmId) -> Result<(), AgentError> {
    let incoming = lock(&state.migrations.incoming).remove(&vm_id);
    if let Some(incoming) = incoming {
        discard(state, &incoming.spec, &incoming.vm_dir).await;
        tracing::info!(%vm_id, "incoming migration aborted");
    }
    Ok(())
}

/// Source: starts the migration in a task; the VM is Migrating until it ends.
pub async fn send(
    state: &Arc<AgentState>,
    vm_id: VmId,
    request: AgentMigrate,
) -> Result<MigrationProgress, AgentError> {
    let handle = state.registry.get(vm_id)?;
    let disks = drover_hv::qemu::migration::mirrored_disks(&handle.spec(), request.sync);
    {
        let mut outgoing = lock(&state.migrations.outgoing);
        if outgoing
            .get(&vm_id)
            .is_some_and(|running| !running.progress.borrow().phase.is_final())
        {
            return Err(AgentError::VmBusy(vm_id));
        }
        // The figures of ended migrations stay for the server to read, until the VM is gone.
        outgoing.retain(|id, migration| {
            !migration.progress.borrow().phase.is_final()
                || matches!(state.registry.find(*id), Ok(Some(_)))
        });
    }
    let tls_dir = credentials_dir(state)?;
    let client = state.enrollment.peer_client()?;
    let monitor = handle.start_migration().await?;
    let first = MigrationProgress::new(if request.nbd_port.is_some() {
        MigrationPhase::Mirroring
    } else {
        MigrationPhase::Migrating
    });
    let (progress, watcher) = watch::channel(first.clone());
    let cancel = CancellationToken::new();
    lock(&state.migrations.outgoing).insert(
        vm_id,
        OutgoingMigration {
            progress: watcher,
            cancel: cancel.clone(),
        },
    );
    let outgoing = Outgoing {
        host: request.host.clone(),
        nbd_port: request.nbd_port,
        migration_port: request.migration_port,
        tls_dir,
        disks,
        mirror_bytes_per_second: request.mirror_bytes_per_second,
        downtime_limit_ms: request.downtime_limit_ms,
    };
    let task = Outbound {
        handle,
        monitor,
        client,
        destination: request.destination,
        outgoing,
        progress,
        cancel,
    };
    tokio::spawn(task.run());
    Ok(first)
}

struct Outbound {
    handle: VmHandle,
    monitor: drover_hv::qemu::migration::Monitor,
    client: reqwest::Client,
    destination: String,
    outgoing: Outgoing,
    progress: watch::Sender<MigrationProgress>,
    cancel: CancellationToken,
}

impl Outbound {
    async fn run(self) {
        let copied = self
            .monitor
            .migrate_out(&self.outgoing, &self.progress, self.cancel.cancelled())
            .await;
        let finished = Instant::now();
        let outcome = match copied {
            Ok(()) => match self.resume_destination().await {
                Ok(()) => {
                    let resume_ms = u64::try_from(finished.elapsed().as_millis()).unwrap_or(0);
                    self.progress.send_modify(|progress| {
                        progress.phase = MigrationPhase::Completed;
                        progress.resume_ms = Some(resume_ms);
                    });
                    tracing::info!(summary = %self.progress.borrow().summary(), "migration completed");
                    return;
                }
                Err(reason) => {
                    self.monitor.roll_back().await;
                    Err(reason)
                }
            },
            Err(MigrationError::Canceled) => Ok(()),
            Err(error) => Err(format!("{:#}", anyhow::Error::from(error))),
        };
        self.handle.end_migration().await;
        self.progress.send_modify(|progress| match outcome {
            Ok(()) => progress.phase = MigrationPhase::Canceled,
            Err(reason) => {
                tracing::warn!(%reason, "migration failed; the VM runs here again");
                let error = AgentError::MigrationFailed(reason);
                progress.phase = MigrationPhase::Failed;
                progress.error = Some(error.detail());
            }
        });
    }

    /// Asks the destination agent to run the guest; an error is why it did not.
    async fn resume_destination(&self) -> Result<(), String> {
        let vm_id = self.handle.runtime().vm_id;
        let url = format!(
            "https://{}/v1/migrations/incoming/{vm_id}/resume",
            self.destination
        );
        let response = self
            .client
            .post(&url)
            .timeout(std::time::Duration::from_secs(30))
            .send()
            .await
            .map_err(|error| format!("the destination agent did not resume the guest: {error}"))?;
        if response.status().is_success() {
            return Ok(());
        }
        let status = response.status();
        let body = response
            .json::<drover_api::ErrorBody>()
            .await
            .map(|body| body.error.message)
            .unwrap_or_default();
        Err(format!(
            "the destination agent refused to resume the guest ({status}): {body}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_leased_once_and_given_back() {
        let migrations = Migrations::new(40000..=40100, IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        let first = migrations.lease_ports(2).expect("two ports");
        let second = migrations.lease_ports(2).expect("two more");
        assert!(
            first.ports.iter().all(|port| !second.ports.contains(port)),
            "{:?} {:?}",
            first.ports,
            second.ports
        );
        let taken = first.ports.clone();
        drop(first);
        assert!(lock(&migrations.ports_in_use).is_disjoint(&taken.into_iter().collect()));

        let narrow = Migrations::new(0..=0, IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        assert!(matches!(
            narrow.lease_ports(1),
            Err(AgentError::MigrationPortsExhausted(_))
        ));
    }
}
