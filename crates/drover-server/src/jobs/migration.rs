//! `vm.migrate`: moves a VM to another host. A running VM moves while it runs (live migration,
//! with its disk mirrored; `drover_api::migration` has the protocol); a stopped one by quick
//! migration, its files fetched by the destination from the source's transfer endpoint
//! (resumable, verified; `drover_api::transfer`). The destination is the one asked for or the
//! best-rated other host. A paused VM has its memory saved first and moves as a saved one:
//! its saved state goes with its disks, and the destination continues it and pauses it again;
//! a saved VM moves as it is. At most `server.migrations_per_host` migrations run at once on a
//! host, as source or destination; more wait in line for a slot, never fail for it. The job can
//! be canceled while it runs: the VM then runs on at its source, and the destination forgets it.

mod leftovers;
mod recovery;

pub(super) use recovery::{interrupted, settle_all};

use super::host::find_host;
use super::vm::{find_vm, host_of, vm_networks};
use super::{JobRun, Plan};
use crate::agents::{AgentClient, AgentError, address_host};
use crate::db;
use crate::http::ApiError;
use crate::placement;
use crate::state::AppState;
use drover_api::migration::{AgentIncoming, AgentMigrate, MigrationPhase, MirrorSync, VmMigrate};
use drover_api::transfer::{AgentVmFilesFetch, VmFilesPlace};
use drover_api::{
    Event, Host, HostId, Job, JobId, JobStatus, JobTarget, PlacementGoal, Vm, VmAction, VmId,
    VmState,
};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// How many migrations run at once on one host unless `server.migrations_per_host` says otherwise.
const DEFAULT_MIGRATIONS_PER_HOST: usize = 2;
/// The guest pause QEMU plans for at the switch (DESIGN.md targets under 100 ms).
const DOWNTIME_LIMIT_MS: u64 = 100;
const POLL_INTERVAL: Duration = Duration::from_millis(300);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long the source agent may stay silent before the migration is given up.
const SOURCE_SILENCE: Duration = Duration::from_secs(30);

const CHOOSE_STEP: &str = "Rate hosts and choose the destination";
const SLOT_STEP: &str = "Wait for a migration slot on both hosts";
const PREPARE_STEP: &str = "Prepare the VM on the destination";
const COPY_STEP: &str = "Copy disk and memory while the VM runs";
const SWITCH_STEP: &str = "Switch the VM to the destination";
const SAVE_STEP: &str = "Save the paused VM's memory";
const QUICK_COPY_STEP: &str = "Copy the VM's files to the destination";
const QUICK_DEFINE_STEP: &str = "Define the VM on the destination";

/// The migrations running per host; a migration holds a slot on its source and its destination.
#[derive(Debug)]
pub struct MigrationSlots {
    per_host: AtomicUsize,
    taken: Mutex<HashMap<HostId, usize>>,
}

impl Default for MigrationSlots {
    fn default() -> Self {
        MigrationSlots {
            per_host: AtomicUsize::new(DEFAULT_MIGRATIONS_PER_HOST),
            taken: Mutex::default(),
        }
    }
}

/// A slot on each of two hosts, given back when dropped.
#[derive(Debug)]
struct Slots<'a> {
    owner: &'a MigrationSlots,
    hosts: [HostId; 2],
}

impl Drop for Slots<'_> {
    fn drop(&mut self) {
        let mut taken = self.owner.lock();
        for host in self.hosts {
            if let Some(count) = taken.get_mut(&host) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    taken.remove(&host);
                }
            }
        }
    }
}

impl MigrationSlots {
    /// Sets how many migrations one host runs at once (at least one).
    pub fn set_per_host(&self, count: usize) {
        self.per_host.store(count.max(1), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<HostId, usize>> {
        self.taken
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A slot on both hosts, or `None` when either is full.
    fn try_take(&self, source: HostId, destination: HostId) -> Option<Slots<'_>> {
        let limit = self.per_host.load(Ordering::Relaxed);
        let mut taken = self.lock();
        let count = |host| taken.get(&host).copied().unwrap_or(0);
        if count(source) >= limit || count(destination) >= limit {
            return None;
        }
        for host in [source, destination] {
            *taken.entry(host).or_insert(0) += 1;
        }
        Some(Slots {
            owner: self,
            hosts: [source, destination],
        })
    }
}

fn target(vm: &Vm) -> JobTarget {
    JobTarget {
        kind: "vm".to_owned(),
        id: vm.id.to_string(),
        name: vm.name.clone(),
    }
}

/// What a migration does, for the error when the VM's state allows neither kind.
const MIGRATE_ACTION: &str =
    "migrate (a running VM moves live; a stopped, paused or saved one by copying its files)";

/// Checks that the VM can move and picks its destination; changes nothing.
pub(super) async fn prepare(
    state: &AppState,
    vm_id: VmId,
    request: &VmMigrate,
) -> Result<(Plan, HostId), ApiError> {
    let vm = find_vm(state, vm_id).await?;
    let steps = match vm.state {
        VmState::Running => vec![SLOT_STEP, PREPARE_STEP, COPY_STEP, SWITCH_STEP],
        VmState::Stopped | VmState::Saved => {
            vec![SLOT_STEP, QUICK_COPY_STEP, QUICK_DEFINE_STEP, SWITCH_STEP]
        }
        VmState::Paused => vec![
            SLOT_STEP,
            SAVE_STEP,
            QUICK_COPY_STEP,
            QUICK_DEFINE_STEP,
            SWITCH_STEP,
        ],
        _ => return Err(ApiError::vm_state_conflict(&vm, MIGRATE_ACTION)),
    };
    if vm.state == VmState::Running {
        super::vm::check_live_movable(state, &vm).await?;
    }
    let source = host_of(state, &vm).await?;
    let mut done = Vec::new();
    let needs = super::vm::MovedVmNeeds::of(state, &vm).await?;
    let destination = match &request.to {
        Some(name) => {
            let host = super::vm::named_host(state, name, None).await?;
            if host.id == source.id {
                return Err(ApiError::InvalidMigrationTarget(format!(
                    "VM '{}' already runs on host '{}'",
                    vm.name, host.name
                )));
            }
            let candidate = placement::rate_host(state, host.id, needs.needs()).await?;
            if candidate.rating.rating == 0.0 {
                return Err(super::vm::unfit_host(
                    &vm.name,
                    host,
                    &candidate.rating.reasons,
                ));
            }
            host
        }
        None => {
            let rated =
                placement::rate_group(state, None, needs.needs(), PlacementGoal::LoadBalance)
                    .await?;
            let others: Vec<_> = rated
                .candidates
                .into_iter()
                .filter(|candidate| candidate.rating.host_id != source.id)
                .collect();
            let best = others
                .iter()
                .find(|candidate| candidate.rating.rating > 0.0)
                .map(|candidate| candidate.rating.host_id);
            let Some(best) = best else {
                return Err(ApiError::NoSuitableHost {
                    group: rated.group,
                    reasons: if others.is_empty() {
                        "there is no other host".to_owned()
                    } else {
                        placement::describe(&others, None, 20)
                    },
                });
            };
            done.push((CHOOSE_STEP, placement::describe(&others, Some(best), 20)));
            find_host(state, best).await?
        }
    };
    let plan = Plan {
        description: format!(
            "Migrate VM {} from host {} to host {}",
            vm.name, source.name, destination.name
        ),
        target: target(&vm),
        done,
        steps,
    };
    Ok((plan, destination.id))
}

/// Whether a cancel was asked for.
fn canceled(cancel: &watch::Receiver<bool>) -> bool {
    *cancel.borrow()
}

pub(super) async fn run(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    destination_id: HostId,
    request: VmMigrate,
) -> Result<(), ApiError> {
    let cancel = state.engine.cancelable(run.job.id);
    let outcome = migrate(state, run, vm_id, destination_id, &request, cancel).await;
    state.engine.forget_cancel(run.job.id);
    outcome
}

async fn migrate(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    destination_id: HostId,
    request: &VmMigrate,
    mut cancel: watch::Receiver<bool>,
) -> Result<(), ApiError> {
    let vm = find_vm(state, vm_id).await?;
    // The kind of move was planned when the job was submitted; the VM must still fit it.
    let planned = |name| run.job.steps.iter().any(|step| step.name == name);
    let (planned_live, planned_save) = (planned(COPY_STEP), planned(SAVE_STEP));
    let live = match vm.state {
        VmState::Running if planned_live => true,
        VmState::Stopped | VmState::Saved if !planned_live && !planned_save => false,
        VmState::Paused if planned_save => false,
        _ => return Err(ApiError::vm_state_conflict(&vm, MIGRATE_ACTION)),
    };
    let source = host_of(state, &vm).await?;
    let destination = find_host(state, destination_id).await?;
    claim_destination(state, &vm, &destination).await?;
    let moved = async {
        let _slots = take_slots(state, run, &source, &destination, &mut cancel).await?;
        if live {
            live_migrate(state, run, &vm, &source, &destination, request, cancel).await
        } else if vm.state == VmState::Paused {
            quick_migrate_paused(state, run, &vm, &source, &destination, cancel).await
        } else {
            quick_migrate(state, run, &vm, &source, &destination, vm.state, cancel).await
        }
    }
    .await;
    // A move that happened took the claim along with the VM's row; one that did not gives it back.
    db::migration::release_destination(&state.db, vm.id).await?;
    moved
}

/// Claims the VM's capacity on the destination for the whole move, as a create claims it, so
/// that concurrent migrations never count on the same free memory or disk.
async fn claim_destination(state: &AppState, vm: &Vm, destination: &Host) -> Result<(), ApiError> {
    let needs = super::vm::MovedVmNeeds::of(state, vm).await?;
    let reserves = placement::rate_host(state, destination.id, needs.needs())
        .await?
        .reserves;
    if db::migration::claim_destination(&state.db, vm.id, destination.id, reserves).await? {
        Ok(())
    } else {
        Err(ApiError::InsufficientHostResources(format!(
            "VM '{}' no longer fits on host '{}': other VMs or migrations took the room",
            vm.name, destination.name
        )))
    }
}

/// Waits (with backoff, never failing for it) until both hosts have a free migration slot.
async fn take_slots<'a>(
    state: &'a AppState,
    run: &mut JobRun,
    source: &Host,
    destination: &Host,
    cancel: &mut watch::Receiver<bool>,
) -> Result<Slots<'a>, ApiError> {
    let slot_step = run.begin_step().await;
    let slots = {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if let Some(slots) = state
                .engine
                .migration_slots
                .try_take(source.id, destination.id)
            {
                break slots;
            }
            run.detail(
                slot_step,
                format!(
                    "hosts {} and {} are busy with other migrations; waiting",
                    source.name, destination.name
                ),
                None,
            )
            .await;
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = cancel.changed() => {}
            }
            if canceled(cancel) {
                run.end_step(slot_step, JobStatus::Canceled).await;
                return Err(ApiError::JobCanceled);
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    };
    run.end_step(slot_step, JobStatus::Completed).await;
    Ok(slots)
}

async fn live_migrate(
    state: &AppState,
    run: &mut JobRun,
    vm: &Vm,
    source: &Host,
    destination: &Host,
    request: &VmMigrate,
    cancel: watch::Receiver<bool>,
) -> Result<(), ApiError> {
    let vm_id = vm.id;
    let destination_agent = state.agents.at(&destination.address);
    let ready = run
        .step(async {
            for network in vm_networks(state, vm).await? {
                super::network::ensure_on_host(state, network, destination).await?;
            }
            let mut spec = super::vm::moved_agent_spec(state, vm).await?;
            // The source still holds the forwarded host ports; they move after the switch.
            spec.port_forwards.clear();
            Ok(destination_agent
                .receive_migration(&AgentIncoming { spec })
                .await?)
        })
        .await?;

    let copied = copy(state, run, vm, source, destination, ready, request, cancel).await;
    if let Err(error) = copied {
        if let Err(abort) = destination_agent.abort_incoming(vm_id).await {
            tracing::warn!(error = ?anyhow::Error::from(abort), %vm_id, "cannot remove the VM from the destination; its agent removes it at its next start");
        }
        return Err(error);
    }

    run.step(async {
        switch(state, vm, source, destination, VmState::Running).await?;
        for forward in &vm.port_forwards {
            destination_agent.add_port_forward(vm_id, *forward).await?;
        }
        Ok(())
    })
    .await
}

/// Records the VM on its destination, then removes it from its source.
async fn switch(
    state: &AppState,
    vm: &Vm,
    source: &Host,
    destination: &Host,
    vm_state: VmState,
) -> Result<(), ApiError> {
    let moved =
        db::migration::move_to_host(&state.db, vm.id, source.id, destination.id, vm_state).await?;
    if let Some(moved) = moved {
        state.publish(Event::VmChanged(moved));
    }
    if let Err(error) = state.agents.at(&source.address).delete(vm.id).await {
        tracing::warn!(error = ?anyhow::Error::from(error), vm_id = %vm.id, "cannot remove the migrated VM from its source");
    }
    Ok(())
}

/// Quick migration of a paused VM: its memory is saved on the source, it moves as a saved VM
/// and the destination continues it from the saved state and pauses it again. On failure the
/// destination forgets it and the source continues it, paused as it was.
async fn quick_migrate_paused(
    state: &AppState,
    run: &mut JobRun,
    vm: &Vm,
    source: &Host,
    destination: &Host,
    cancel: watch::Receiver<bool>,
) -> Result<(), ApiError> {
    let source_agent = state.agents.at(&source.address);
    run.step(async {
        let runtime = source_agent.action(vm.id, VmAction::Save).await?;
        super::vm::record(state, vm.id, None, runtime.state, None).await
    })
    .await?;
    let moved = quick_migrate(state, run, vm, source, destination, VmState::Paused, cancel).await;
    if moved.is_err() {
        if let Err(error) = state.agents.at(&destination.address).delete(vm.id).await {
            tracing::warn!(error = ?anyhow::Error::from(error), vm_id = %vm.id, "cannot remove the VM's copy from the destination yet");
            leftovers::remove_copy_when_back(state, destination.address.clone(), vm.id);
        }
        match continue_paused(&source_agent, vm.id).await {
            Ok(runtime) => super::vm::record(state, vm.id, None, runtime.state, None).await?,
            Err(error) => {
                tracing::warn!(error = ?anyhow::Error::from(error), vm_id = %vm.id, "cannot continue the VM on its source; it stays saved there");
            }
        }
    }
    moved
}

/// Continues a saved VM from its saved state and pauses it again at once: how a paused VM's
/// move ends on whichever host keeps it.
pub(super) async fn continue_paused(
    agent: &AgentClient<'_>,
    vm_id: VmId,
) -> Result<drover_api::agent::VmRuntime, AgentError> {
    agent.action(vm_id, VmAction::Start).await?;
    agent.action(vm_id, VmAction::Pause).await
}

/// Quick migration of a VM without a process (stopped or saved): the destination fetches its
/// files from the source's transfer endpoint (resumable: a restarted job asks only for the
/// missing bytes; verified by SHA-256), defines the VM on them, and the VM switches hosts,
/// ending `arrived` there (a paused VM is continued from its saved state and paused). A cancel
/// during the copy stops it and removes what the destination fetched.
async fn quick_migrate(
    state: &AppState,
    run: &mut JobRun,
    vm: &Vm,
    source: &Host,
    destination: &Host,
    arrived: VmState,
    mut cancel: watch::Receiver<bool>,
) -> Result<(), ApiError> {
    let source_agent = state.agents.at(&source.address);
    let destination_agent = state.agents.at(&destination.address);
    let transfer_id = run.job.id.to_string();
    let fetched = run
        .transfer_step(&destination.address, &transfer_id, async {
            let files = source_agent
                .vm_files(vm.id, &VmFilesPlace::default())
                .await?;
            let request = AgentVmFilesFetch {
                source: String::new(),
                from: VmFilesPlace::default(),
                to: VmFilesPlace::default(),
                files,
                transfer_id: Some(transfer_id.clone()),
            };
            let fetch =
                super::vm::fetch_from(state, &destination.address, source.id, vm.id, request);
            tokio::select! {
                fetched = fetch => Ok(fetched??),
                _ = cancel.wait_for(|canceled| *canceled) => Err(ApiError::JobCanceled),
            }
        })
        .await;
    if matches!(fetched, Err(ApiError::JobCanceled))
        && let Err(undo) = destination_agent.delete(vm.id).await
    {
        tracing::warn!(error = ?anyhow::Error::from(undo), vm_id = %vm.id, "cannot remove the canceled copy from the destination");
    }
    let fetched = fetched?;
    run.note(&super::vm::describe_fetch(&fetched)).await;
    let defined = run
        .step(async {
            for network in vm_networks(state, vm).await? {
                super::network::ensure_on_host(state, network, destination).await?;
            }
            destination_agent
                .define(&super::vm::moved_agent_spec(state, vm).await?)
                .await?;
            if arrived == VmState::Paused {
                // The start uses the destination's saved state up; the source keeps its own copy
                // until the switch.
                continue_paused(&destination_agent, vm.id).await?;
            }
            Ok(())
        })
        .await;
    if let Err(error) = defined {
        if let Err(undo) = destination_agent.delete(vm.id).await {
            tracing::warn!(error = ?anyhow::Error::from(undo), vm_id = %vm.id, "cannot undo the define on the destination");
        }
        return Err(error);
    }
    run.step(switch(state, vm, source, destination, arrived))
        .await
}

/// Runs the copy on the source and follows it until it ends, with its figures in the step.
#[allow(clippy::too_many_arguments)]
async fn copy(
    state: &AppState,
    run: &mut JobRun,
    vm: &Vm,
    source: &Host,
    destination: &Host,
    ready: drover_api::migration::AgentIncomingReady,
    request: &VmMigrate,
    mut cancel: watch::Receiver<bool>,
) -> Result<(), ApiError> {
    let step = run.begin_step().await;
    let source_agent = state.agents.at(&source.address);
    let host = address_host(&destination.address)
        .map_err(|reason| ApiError::internal(anyhow::anyhow!("destination address: {reason}")))?;
    let order = AgentMigrate {
        destination: destination.address.clone(),
        host: host.to_owned(),
        nbd_port: ready.nbd_port,
        migration_port: ready.migration_port,
        sync: MirrorSync::for_disk(&vm.disk),
        mirror_bytes_per_second: request.mirror_bytes_per_second,
        downtime_limit_ms: DOWNTIME_LIMIT_MS,
    };
    if let Err(error) = source_agent.send_migration(vm.id, &order).await {
        run.end_step(step, JobStatus::Failed).await;
        return Err(error.into());
    }
    let mut cancel_sent = false;
    let mut last_answer = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = cancel.changed(), if !cancel_sent => {}
        }
        if canceled(&cancel) && !cancel_sent {
            cancel_sent = source_agent.cancel_migration(vm.id).await.is_ok();
        }
        let progress = match source_agent.migration_progress(vm.id).await {
            Ok(progress) => progress,
            Err(error) if last_answer.elapsed() > SOURCE_SILENCE => {
                run.end_step(step, JobStatus::Failed).await;
                return Err(error.into());
            }
            Err(_) => continue,
        };
        last_answer = tokio::time::Instant::now();
        let copied = progress.disk_bytes_mirrored + progress.ram_bytes_transferred;
        let whole = progress.disk_bytes_total + progress.ram_bytes_total;
        let done = (whole > 0).then(|| copied as f64 / whole as f64);
        run.detail(step, progress.summary(), done).await;
        match progress.phase {
            MigrationPhase::Completed => {
                run.end_step(step, JobStatus::Completed).await;
                return Ok(());
            }
            MigrationPhase::Canceled => {
                run.end_step(step, JobStatus::Canceled).await;
                return Err(ApiError::JobCanceled);
            }
            MigrationPhase::Failed => {
                run.end_step(step, JobStatus::Failed).await;
                let detail = progress.error.unwrap_or_else(|| {
                    drover_api::ErrorDetail::new(
                        "migration_failed",
                        "the live migration failed",
                        "check both hosts' agent logs, then migrate again",
                    )
                });
                return Err(ApiError::Agent {
                    status: 422,
                    detail,
                });
            }
            MigrationPhase::Mirroring | MigrationPhase::Migrating => {}
        }
    }
}

/// How often an evacuation looks at its migrations.
const EVACUATION_POLL: Duration = Duration::from_millis(500);

/// Submits a `vm.migrate` job from inside another job. Boxed with `Send` spelled out: a job that
/// submits jobs would otherwise make the job future's type depend on itself.
fn submit_migration<'a>(
    state: &'a AppState,
    vm_id: VmId,
    owner: &'a str,
) -> Pin<Box<dyn Future<Output = Result<Job, ApiError>> + Send + 'a>> {
    Box::pin(super::submit(
        state,
        super::JobSpec::VmMigrate {
            vm_id,
            request: VmMigrate::default(),
            destination: None,
        },
        owner,
        None,
    ))
}

/// Maintenance mode's second half: live-migrates every running VM of the host to the host
/// placement picks for it, each as its own `vm.migrate` job (so through the per-host slots), and
/// waits for them all. The step shows each VM's outcome; any VM left behind fails the job.
pub(super) async fn evacuate(
    state: &AppState,
    run: &mut JobRun,
    host: &Host,
) -> Result<(), ApiError> {
    let step = run.begin_step().await;
    let owner = run.job.owner.clone();
    let mut outcomes: Vec<(String, Result<JobId, String>)> = Vec::new();
    for vm_id in db::vms::ids_on_host(&state.db, host.id).await? {
        let Some(vm) = db::vms::get_by_id(&state.db, vm_id).await? else {
            continue;
        };
        if vm.state != VmState::Running {
            continue; // stopped and paused VMs stay
        }
        let submitted = submit_migration(state, vm_id, &owner).await;
        outcomes.push((
            vm.name,
            submitted.map(|job| job.id).map_err(|e| e.to_string()),
        ));
    }
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    for (vm, submitted) in outcomes {
        let line = match submitted {
            Ok(job_id) => {
                let job = loop {
                    match db::jobs::get(&state.db, job_id).await? {
                        Some(job)
                            if matches!(
                                job.status,
                                JobStatus::Completed | JobStatus::Failed | JobStatus::Canceled
                            ) =>
                        {
                            break job;
                        }
                        Some(_) => tokio::time::sleep(EVACUATION_POLL).await,
                        None => return Err(ApiError::JobNotFound(job_id.to_string())),
                    }
                };
                match (&job.status, &job.error) {
                    (JobStatus::Completed, _) => format!("{vm}: moved ({})", job.description),
                    (_, Some(error)) => format!("{vm}: {} (job {job_id})", error.message),
                    (status, None) => format!("{vm}: {status} (job {job_id})"),
                }
            }
            Err(reason) => format!("{vm}: not moved: {reason}"),
        };
        if !line.contains(": moved (") {
            failures.push(vm);
        }
        lines.push(line);
    }
    let detail = if lines.is_empty() {
        "no running VMs on the host".to_owned()
    } else {
        lines.join("; ")
    };
    run.detail(step, detail, None).await;
    if failures.is_empty() {
        run.end_step(step, JobStatus::Completed).await;
        Ok(())
    } else {
        run.end_step(step, JobStatus::Failed).await;
        Err(ApiError::EvacuationIncomplete {
            host: host.name.clone(),
            failures: failures.join(", "),
        })
    }
}

impl JobRun {
    /// Starts the job's next step by hand, for a step that reports as it goes.
    async fn begin_step(&mut self) -> usize {
        let index = self.next_step;
        self.next_step += 1;
        self.set_step(index, JobStatus::Running, None).await;
        index
    }

    /// Shows what a running step is doing; `done` (0 to 1) moves the job's progress within it.
    async fn detail(&mut self, index: usize, text: String, done: Option<f64>) {
        if let Some(step) = self.job.steps.get_mut(index) {
            step.detail = Some(text);
        }
        if let Some(done) = done {
            let total = self.job.steps.len().max(1) as f64;
            let percent = (index as f64 + done.clamp(0.0, 1.0)) * 100.0 / total;
            self.job.progress = percent as u8;
        }
        self.save().await;
    }

    async fn end_step(&mut self, index: usize, status: JobStatus) {
        self.set_step(index, status, None).await;
    }
}

impl super::Engine {
    /// A job that can be canceled while it runs; see [`super::cancel`].
    pub(super) fn cancelable(&self, job_id: JobId) -> watch::Receiver<bool> {
        let (sender, receiver) = watch::channel(false);
        self.cancels
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(job_id, sender);
        receiver
    }

    pub(super) fn forget_cancel(&self, job_id: JobId) {
        self.cancels
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(&job_id);
    }

    /// Asks a running cancelable job to stop; false when it is not one.
    pub(super) fn request_cancel(&self, job_id: JobId) -> bool {
        self.cancels
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(&job_id)
            .is_some_and(|sender| sender.send(true).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_host_and_come_back() {
        let slots = MigrationSlots::default();
        let (a, b, c) = (HostId::new(), HostId::new(), HostId::new());
        let first = slots.try_take(a, b).expect("a free slot");
        let second = slots.try_take(a, c).expect("a has a second slot");
        assert!(slots.try_take(a, c).is_none(), "a is full");
        assert!(slots.try_take(c, b).is_some(), "b and c have room");
        drop(first);
        assert!(slots.try_take(a, b).is_some(), "a slot came back");
        drop(second);
        slots.set_per_host(1);
        let only = slots.try_take(a, b).expect("one slot");
        assert!(slots.try_take(b, c).is_none());
        drop(only);
    }
}
