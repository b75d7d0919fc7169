//! The job engine (DESIGN.md section 4). Every state-changing request becomes a persisted job:
//! [`submit`] checks the request at once (a bad request changes nothing and gets no job), stores
//! the job as Queued and runs it in a task. Jobs on one target run one after another, in the order
//! they were submitted; jobs on different targets run in parallel. A job's operation is stored
//! as a [`JobSpec`] so that a failed or canceled job can be run again. HTTP lives in `http::jobs`.

mod checkpoint;
mod host;
mod library;
mod migration;
mod network;
mod package;
mod template;
mod vm;

pub(crate) use checkpoint::find as find_checkpoint;
pub(crate) use library::{find_item, find_share, schedule_refresh, share_or_only};
pub(crate) use template::transfer_url;
pub(crate) use template::{
    ProfileKind, find_guest_os, find_hardware, find_template, vm_create_from,
};
pub(crate) use vm::cdrom::resolve as resolve_cdrom;
pub(crate) use vm::deploy_host;

use crate::db;
use crate::http::ApiError;
use crate::state::AppState;
use chrono::Utc;
use drover_api::library::{LibraryImport, LibraryRefresh, LibraryShareAdd};
use drover_api::migration::VmMigrate;
use drover_api::network::PortProtocol;
use drover_api::template::{GuestOsProfileCreate, HardwareProfileCreate, TemplateCreate};
use drover_api::{
    CheckpointId, ErrorDetail, Event, HostAdd, HostGroupId, HostId, Job, JobId, JobStatus, JobStep,
    JobTarget, LibraryItemId, LibraryShareId, NetworkCreate, NetworkId, PortForward, ProfileId,
    TemplateId, VmAction, VmCreate, VmId, VmState,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::oneshot;

/// What a job does, with everything needed to do it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "operation")]
pub enum JobSpec {
    HostAdd {
        host_id: HostId,
        request: HostAdd,
    },
    HostRemove {
        host_id: HostId,
    },
    HostMove {
        host_id: HostId,
        group_id: HostGroupId,
    },
    HostMaintenance {
        host_id: HostId,
        enabled: bool,
    },
    VmCreate {
        vm_id: VmId,
        request: VmCreate,
    },
    VmAction {
        vm_id: VmId,
        action: VmAction,
    },
    VmDelete {
        vm_id: VmId,
    },
    VmPortForward {
        vm_id: VmId,
        forward: PortForward,
    },
    VmPortForwardRemove {
        vm_id: VmId,
        protocol: PortProtocol,
        host_port: u16,
    },
    VmNicAdd {
        vm_id: VmId,
        network: String,
    },
    VmNicRemove {
        vm_id: VmId,
        nic: String,
    },
    NetworkCreate {
        network_id: NetworkId,
        request: NetworkCreate,
    },
    NetworkDelete {
        network_id: NetworkId,
    },
    LibraryShareAdd {
        share_id: LibraryShareId,
        request: LibraryShareAdd,
    },
    LibraryImport {
        item_id: LibraryItemId,
        request: LibraryImport,
    },
    LibraryRefresh {
        request: LibraryRefresh,
    },
    LibraryRemove {
        item_id: LibraryItemId,
    },
    HardwareProfileCreate {
        profile_id: ProfileId,
        request: HardwareProfileCreate,
    },
    GuestOsProfileCreate {
        profile_id: ProfileId,
        request: GuestOsProfileCreate,
    },
    TemplateCreate {
        template_id: TemplateId,
        request: TemplateCreate,
    },
    CheckpointCreate {
        vm_id: VmId,
        checkpoint_id: CheckpointId,
        name: String,
    },
    CheckpointRestore {
        vm_id: VmId,
        checkpoint_id: CheckpointId,
    },
    CheckpointDelete {
        vm_id: VmId,
        checkpoint_id: CheckpointId,
    },
    VmMigrate {
        vm_id: VmId,
        request: VmMigrate,
        /// Chosen when the job is submitted.
        #[serde(default)]
        destination: Option<HostId>,
    },
    VmStore {
        vm_id: VmId,
        share_id: LibraryShareId,
    },
    VmDeploy {
        vm_id: VmId,
        host_id: HostId,
    },
    V2vImport {
        vm_id: VmId,
        request: drover_api::v2v::V2vImport,
    },
    ProfileDelete {
        profile_id: ProfileId,
        kind: ProfileKind,
    },
    TemplateDelete {
        template_id: TemplateId,
    },
    VmCdrom {
        vm_id: VmId,
        change: drover_api::cdrom::VmCdromChange,
    },
}

impl JobSpec {
    /// The job kind shown in the API: `host.add`, `vm.start`, ...
    pub fn kind(&self) -> String {
        match self {
            JobSpec::HostAdd { .. } => "host.add".to_owned(),
            JobSpec::HostRemove { .. } => "host.remove".to_owned(),
            JobSpec::HostMove { .. } => "host.move".to_owned(),
            JobSpec::HostMaintenance { enabled: true, .. } => "host.maintenance_on".to_owned(),
            JobSpec::HostMaintenance { enabled: false, .. } => "host.maintenance_off".to_owned(),
            JobSpec::VmCreate { .. } => "vm.create".to_owned(),
            JobSpec::VmAction { action, .. } => format!("vm.{action}"),
            JobSpec::VmDelete { .. } => "vm.delete".to_owned(),
            JobSpec::VmPortForward { .. } => "vm.port_forward".to_owned(),
            JobSpec::VmPortForwardRemove { .. } => "vm.port_forward_remove".to_owned(),
            JobSpec::VmNicAdd { .. } => "vm.nic_add".to_owned(),
            JobSpec::VmNicRemove { .. } => "vm.nic_remove".to_owned(),
            JobSpec::NetworkCreate { .. } => "network.create".to_owned(),
            JobSpec::NetworkDelete { .. } => "network.delete".to_owned(),
            JobSpec::LibraryShareAdd { .. } => "library.share_add".to_owned(),
            JobSpec::LibraryImport { .. } => "library.import".to_owned(),
            JobSpec::LibraryRefresh { .. } => "library.refresh".to_owned(),
            JobSpec::LibraryRemove { .. } => "library.remove".to_owned(),
            JobSpec::HardwareProfileCreate { .. } => "profile.hardware_create".to_owned(),
            JobSpec::GuestOsProfileCreate { .. } => "profile.guest_os_create".to_owned(),
            JobSpec::TemplateCreate { .. } => "template.create".to_owned(),
            JobSpec::CheckpointCreate { .. } => "vm.checkpoint_create".to_owned(),
            JobSpec::CheckpointRestore { .. } => "vm.checkpoint_restore".to_owned(),
            JobSpec::CheckpointDelete { .. } => "vm.checkpoint_delete".to_owned(),
            JobSpec::VmMigrate { .. } => "vm.migrate".to_owned(),
            JobSpec::VmStore { .. } => "vm.store".to_owned(),
            JobSpec::VmDeploy { .. } => "vm.deploy".to_owned(),
            JobSpec::V2vImport { .. } => "v2v.import".to_owned(),
            JobSpec::ProfileDelete {
                kind: ProfileKind::Hardware,
                ..
            } => "profile.hardware_delete".to_owned(),
            JobSpec::ProfileDelete {
                kind: ProfileKind::GuestOs,
                ..
            } => "profile.guest_os_delete".to_owned(),
            JobSpec::TemplateDelete { .. } => "template.delete".to_owned(),
            JobSpec::VmCdrom { .. } => "vm.cdrom".to_owned(),
        }
    }
}

pub use vm::check_vm_size;
pub(crate) use vm::nic_networks;

/// What [`submit`] learns while checking a request: how to show the job.
#[derive(Debug)]
struct Plan {
    description: String,
    target: JobTarget,
    /// Steps already done while checking (placement), with what they found.
    done: Vec<(&'static str, String)>,
    steps: Vec<&'static str>,
}

/// Orders the jobs of each target: each job takes its place in its target's line when it is
/// submitted, and waits in Queued until every job submitted earlier for that target has finished.
/// A job never fails because another job holds the target; jobs of different targets overlap.
#[derive(Debug, Default)]
pub struct Engine {
    /// Per target, what the last job in line signals when it finishes.
    tails: Mutex<HashMap<String, oneshot::Receiver<()>>>,
    /// Running jobs that can be canceled, and how to tell them.
    cancels: Mutex<HashMap<JobId, tokio::sync::watch::Sender<bool>>>,
    /// Live migrations running per host.
    pub migration_slots: migration::MigrationSlots,
}

/// A place in a target's line, taken in submission order.
#[derive(Debug)]
pub struct Place {
    previous: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
}

/// The right to work on one target; the next job's turn comes when it is dropped.
#[derive(Debug)]
pub struct Turn {
    _done: oneshot::Sender<()>,
}

impl Place {
    /// Waits until the job ahead has finished (its `Turn` dropped, or it never ran).
    pub async fn turn(self) -> Turn {
        if let Some(previous) = self.previous {
            // An error means the sender is gone: the job ahead finished.
            let _ = previous.await;
        }
        Turn { _done: self.done }
    }
}

impl Engine {
    /// Takes the next place in `target`'s line, at once: the order of calls is the order of turns.
    pub fn enqueue(&self, target: &JobTarget) -> Place {
        let key = format!("{}:{}", target.kind, target.id);
        let (done, next) = oneshot::channel();
        let previous = self
            .tails
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(key, next);
        Place { previous, done }
    }

    /// Waits until every job submitted earlier for `target` has finished.
    pub async fn turn(&self, target: &JobTarget) -> Turn {
        self.enqueue(target).turn().await
    }
}

/// Checks `spec` and, when it can run, stores it as a Queued job and starts it.
pub async fn submit(
    state: &AppState,
    spec: JobSpec,
    owner: &str,
    restarted_from: Option<JobId>,
) -> Result<Job, ApiError> {
    let mut spec = spec;
    let mut chosen_destination = None;
    let plan = match &spec {
        JobSpec::HostAdd { host_id, request } => {
            host::prepare_add(state, *host_id, request).await?
        }
        JobSpec::HostRemove { host_id } => host::prepare_remove(state, *host_id).await?,
        JobSpec::HostMove { host_id, group_id } => {
            host::prepare_move(state, *host_id, *group_id).await?
        }
        JobSpec::HostMaintenance { host_id, enabled } => {
            host::prepare_maintenance(state, *host_id, *enabled).await?
        }
        JobSpec::VmCreate { vm_id, request } => vm::prepare_create(state, *vm_id, request).await?,
        JobSpec::VmAction { vm_id, action } => vm::prepare_action(state, *vm_id, *action).await?,
        JobSpec::VmDelete { vm_id } => vm::prepare_delete(state, *vm_id).await?,
        JobSpec::VmPortForward { vm_id, forward } => {
            vm::prepare_port_forward(state, *vm_id, *forward).await?
        }
        JobSpec::VmPortForwardRemove {
            vm_id,
            protocol,
            host_port,
        } => vm::prepare_port_forward_remove(state, *vm_id, *protocol, *host_port).await?,
        JobSpec::VmNicAdd { vm_id, network } => vm::prepare_nic_add(state, *vm_id, network).await?,
        JobSpec::VmNicRemove { vm_id, nic } => vm::prepare_nic_remove(state, *vm_id, nic).await?,
        JobSpec::NetworkCreate {
            network_id,
            request,
        } => network::prepare_create(state, *network_id, request).await?,
        JobSpec::NetworkDelete { network_id } => {
            network::prepare_delete(state, *network_id).await?
        }
        JobSpec::LibraryShareAdd { share_id, request } => {
            library::prepare_share_add(state, *share_id, request).await?
        }
        JobSpec::LibraryImport { request, .. } => library::prepare_import(state, request).await?,
        JobSpec::LibraryRefresh { request } => library::prepare_refresh(state, request).await?,
        JobSpec::LibraryRemove { item_id } => library::prepare_remove(state, *item_id).await?,
        JobSpec::HardwareProfileCreate {
            profile_id,
            request,
        } => template::prepare_hardware(state, *profile_id, request).await?,
        JobSpec::GuestOsProfileCreate {
            profile_id,
            request,
        } => template::prepare_guest_os(state, *profile_id, request).await?,
        JobSpec::TemplateCreate {
            template_id,
            request,
        } => template::prepare_template(state, *template_id, request).await?,
        JobSpec::CheckpointCreate { vm_id, name, .. } => {
            checkpoint::prepare_create(state, *vm_id, name).await?
        }
        JobSpec::CheckpointRestore {
            vm_id,
            checkpoint_id,
        } => checkpoint::prepare_restore(state, *vm_id, *checkpoint_id).await?,
        JobSpec::CheckpointDelete {
            vm_id,
            checkpoint_id,
        } => checkpoint::prepare_delete(state, *vm_id, *checkpoint_id).await?,
        JobSpec::VmMigrate { vm_id, request, .. } => {
            let (plan, destination) = migration::prepare(state, *vm_id, request).await?;
            chosen_destination = Some(destination);
            plan
        }
        JobSpec::VmStore { vm_id, share_id } => vm::prepare_store(state, *vm_id, *share_id).await?,
        JobSpec::VmDeploy { vm_id, host_id } => vm::prepare_deploy(state, *vm_id, *host_id).await?,
        JobSpec::V2vImport { vm_id, request } => {
            package::prepare_v2v(state, *vm_id, request).await?
        }
        JobSpec::ProfileDelete { profile_id, kind } => {
            template::prepare_profile_delete(state, *kind, *profile_id).await?
        }
        JobSpec::TemplateDelete { template_id } => {
            template::prepare_template_delete(state, *template_id).await?
        }
        JobSpec::VmCdrom { vm_id, change } => {
            vm::cdrom::prepare_change(state, *vm_id, change).await?
        }
    };
    if let JobSpec::VmMigrate { destination, .. } = &mut spec {
        *destination = chosen_destination;
    }
    let now = Utc::now();
    let done = plan.done.into_iter().map(|(name, detail)| JobStep {
        name: name.to_owned(),
        status: JobStatus::Completed,
        detail: Some(detail),
        started_at: Some(now),
        ended_at: Some(now),
    });
    let job = Job {
        id: JobId::new(),
        kind: spec.kind(),
        description: plan.description,
        target: plan.target,
        status: JobStatus::Queued,
        progress: 0,
        steps: done
            .chain(plan.steps.into_iter().map(|name| JobStep {
                name: name.to_owned(),
                status: JobStatus::Queued,
                detail: None,
                started_at: None,
                ended_at: None,
            }))
            .collect(),
        error: None,
        owner: owner.to_owned(),
        restarted_from,
        created_at: Utc::now(),
        started_at: None,
        ended_at: None,
    };
    let stored = async {
        let spec_json = serde_json::to_string(&spec).map_err(ApiError::internal)?;
        db::jobs::insert(&state.db, &job, &spec_json).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(error) = stored {
        undo_prepare(state, &spec).await;
        return Err(error);
    }
    state.publish(Event::JobChanged(job.clone()));
    // The place is taken here, not in the task, so that jobs run in the order they were submitted.
    let place = state.engine.enqueue(&job.target);
    tokio::spawn(execute(state.clone(), job.clone(), spec, place));
    Ok(job)
}

/// Takes back what checking a job did ahead of running it (a VM create reserves its row).
async fn undo_prepare(state: &AppState, spec: &JobSpec) {
    if let JobSpec::VmCreate { vm_id, .. } = spec {
        vm::forget(state, *vm_id).await;
    }
}

/// Cancels a Queued job. A Running job cannot be canceled: its steps are not interruptible.
pub async fn cancel(state: &AppState, id: JobId) -> Result<Job, ApiError> {
    let job = db::jobs::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::JobNotFound(id.to_string()))?;
    if job.status == JobStatus::Running && state.engine.request_cancel(id) {
        // The job stops itself and ends as Canceled.
        return Ok(job);
    }
    if !db::jobs::transition(&state.db, id, JobStatus::Queued, JobStatus::Canceled).await? {
        let status = db::jobs::get(&state.db, id)
            .await?
            .map_or(job.status, |job| job.status);
        return Err(ApiError::JobNotCancelable {
            id: id.to_string(),
            status: status.to_string(),
        });
    }
    undo_prepare(state, &stored_spec(state, id).await?).await;
    let job = db::jobs::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::JobNotFound(id.to_string()))?;
    state.publish(Event::JobChanged(job.clone()));
    Ok(job)
}

/// Runs a Failed or Canceled job's operation again as a new job.
pub async fn restart(state: &AppState, id: JobId, owner: &str) -> Result<Job, ApiError> {
    let job = db::jobs::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::JobNotFound(id.to_string()))?;
    if !matches!(job.status, JobStatus::Failed | JobStatus::Canceled) {
        return Err(ApiError::JobNotRestartable {
            id: id.to_string(),
            status: job.status.to_string(),
        });
    }
    let spec = stored_spec(state, id).await?;
    submit(state, spec, owner, Some(id)).await
}

async fn stored_spec(state: &AppState, id: JobId) -> Result<JobSpec, ApiError> {
    let text = db::jobs::spec(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::JobNotFound(id.to_string()))?;
    serde_json::from_str(&text).map_err(ApiError::internal)
}

/// At server start no job task exists: every job that was Queued or Running is Failed, and VMs
/// whose create was cut short are Failed too, so that they can be deleted or their job restarted.
/// Migrations that were running are settled with their agents in the background.
pub async fn fail_interrupted(state: &AppState) -> Result<u64, db::DbError> {
    let error = ErrorDetail::new(
        "server_restarted",
        "the server stopped while this job ran",
        "restart the job with `drover job restart ID`",
    );
    let migrations = migration::interrupted(state).await?;
    let failed = db::jobs::fail_unfinished(&state.db, &error).await?;
    migration::settle_all(state, migrations);
    for vm_id in db::vms::ids_in_state(&state.db, VmState::Creating).await? {
        db::vms::set_state(
            &state.db,
            vm_id,
            VmState::Failed,
            Some("the server stopped while this VM was being created"),
        )
        .await?;
    }
    Ok(failed)
}

#[tracing::instrument(skip_all, fields(job_id = %job.id, kind = %job.kind))]
async fn execute(state: AppState, job: Job, spec: JobSpec, place: Place) {
    let _turn = place.turn().await;
    match db::jobs::transition(&state.db, job.id, JobStatus::Queued, JobStatus::Running).await {
        Ok(true) => {}
        Ok(false) => return, // canceled while it waited
        Err(error) => {
            tracing::error!(error = ?anyhow::Error::from(error), "cannot start the job");
            return;
        }
    }
    let next_step = job
        .steps
        .iter()
        .take_while(|step| step.status == JobStatus::Completed)
        .count();
    let mut run = JobRun {
        state: state.clone(),
        job,
        next_step,
    };
    run.job.status = JobStatus::Running;
    run.job.started_at = Some(Utc::now());
    run.save().await;
    let outcome = match spec {
        JobSpec::HostAdd { host_id, request } => {
            host::run_add(&state, &mut run, host_id, request).await
        }
        JobSpec::HostRemove { host_id } => host::run_remove(&state, &mut run, host_id).await,
        JobSpec::HostMove { host_id, group_id } => {
            host::run_move(&state, &mut run, host_id, group_id).await
        }
        JobSpec::HostMaintenance { host_id, enabled } => {
            host::run_maintenance(&state, &mut run, host_id, enabled).await
        }
        JobSpec::VmCreate { vm_id, request } => {
            vm::run_create(&state, &mut run, vm_id, request).await
        }
        JobSpec::VmAction { vm_id, action } => {
            vm::run_action(&state, &mut run, vm_id, action).await
        }
        JobSpec::VmDelete { vm_id } => vm::run_delete(&state, &mut run, vm_id).await,
        JobSpec::VmPortForward { vm_id, forward } => {
            vm::run_port_forward(&state, &mut run, vm_id, forward).await
        }
        JobSpec::VmPortForwardRemove {
            vm_id,
            protocol,
            host_port,
        } => vm::run_port_forward_remove(&state, &mut run, vm_id, protocol, host_port).await,
        JobSpec::VmNicAdd { vm_id, network } => {
            vm::run_nic_add(&state, &mut run, vm_id, network).await
        }
        JobSpec::VmNicRemove { vm_id, nic } => {
            vm::run_nic_remove(&state, &mut run, vm_id, nic).await
        }
        JobSpec::NetworkCreate {
            network_id,
            request,
        } => network::run_create(&state, &mut run, network_id, request).await,
        JobSpec::NetworkDelete { network_id } => {
            network::run_delete(&state, &mut run, network_id).await
        }
        JobSpec::LibraryShareAdd { share_id, request } => {
            library::run_share_add(&state, &mut run, share_id, request).await
        }
        JobSpec::LibraryImport { item_id, request } => {
            library::run_import(&state, &mut run, item_id, request).await
        }
        JobSpec::LibraryRefresh { request } => {
            library::run_refresh(&state, &mut run, request).await
        }
        JobSpec::LibraryRemove { item_id } => library::run_remove(&state, &mut run, item_id).await,
        JobSpec::HardwareProfileCreate {
            profile_id,
            request,
        } => template::run_hardware(&state, &mut run, profile_id, request).await,
        JobSpec::GuestOsProfileCreate {
            profile_id,
            request,
        } => template::run_guest_os(&state, &mut run, profile_id, request).await,
        JobSpec::TemplateCreate {
            template_id,
            request,
        } => template::run_template(&state, &mut run, template_id, request).await,
        JobSpec::CheckpointCreate {
            vm_id,
            checkpoint_id,
            name,
        } => checkpoint::run_create(&state, &mut run, vm_id, checkpoint_id, name).await,
        JobSpec::CheckpointRestore {
            vm_id,
            checkpoint_id,
        } => checkpoint::run_restore(&state, &mut run, vm_id, checkpoint_id).await,
        JobSpec::CheckpointDelete {
            vm_id,
            checkpoint_id,
        } => checkpoint::run_delete(&state, &mut run, vm_id, checkpoint_id).await,
        JobSpec::VmMigrate {
            vm_id,
            request,
            destination,
        } => match destination {
            Some(destination) => {
                migration::run(&state, &mut run, vm_id, destination, request).await
            }
            None => Err(ApiError::internal(anyhow::anyhow!(
                "a migration job without its destination"
            ))),
        },
        JobSpec::VmStore { vm_id, share_id } => {
            vm::run_store(&state, &mut run, vm_id, share_id).await
        }
        JobSpec::VmDeploy { vm_id, host_id } => {
            vm::run_deploy(&state, &mut run, vm_id, host_id).await
        }
        JobSpec::V2vImport { vm_id, request } => {
            package::run_v2v(&state, &mut run, vm_id, request).await
        }
        JobSpec::ProfileDelete { profile_id, kind } => {
            template::run_profile_delete(&state, &mut run, kind, profile_id).await
        }
        JobSpec::TemplateDelete { template_id } => {
            template::run_template_delete(&state, &mut run, template_id).await
        }
        JobSpec::VmCdrom { vm_id, change } => {
            vm::cdrom::run_change(&state, &mut run, vm_id, change).await
        }
    };
    run.finish(outcome).await;
}

/// A job while it runs: updates its steps and progress, persisting and announcing each change.
pub struct JobRun {
    state: AppState,
    job: Job,
    next_step: usize,
}

impl JobRun {
    /// Runs the job's next step.
    async fn step<T>(
        &mut self,
        work: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let index = self.next_step;
        self.next_step += 1;
        self.set_step(index, JobStatus::Running, None).await;
        let outcome = work.await;
        let status = match &outcome {
            Ok(_) => JobStatus::Completed,
            Err(_) => JobStatus::Failed,
        };
        let detail = outcome.as_ref().err().map(|error| error.detail().message);
        self.set_step(index, status, detail).await;
        outcome
    }

    /// Adds a note to the step that ran last (why it had nothing to do, for example).
    async fn note(&mut self, detail: &str) {
        if let Some(step) = self
            .next_step
            .checked_sub(1)
            .and_then(|i| self.job.steps.get_mut(i))
        {
            step.detail = Some(detail.to_owned());
            self.save().await;
        }
    }

    async fn set_step(&mut self, index: usize, status: JobStatus, detail: Option<String>) {
        let Some(step) = self.job.steps.get_mut(index) else {
            return;
        };
        let now = Utc::now();
        step.status = status;
        match status {
            JobStatus::Running => step.started_at = Some(now),
            _ => step.ended_at = Some(now),
        }
        if detail.is_some() {
            step.detail = detail;
        }
        let done = self
            .job
            .steps
            .iter()
            .filter(|s| s.status == JobStatus::Completed)
            .count();
        let total = self.job.steps.len().max(1);
        self.job.progress = u8::try_from(done * 100 / total).unwrap_or(100);
        self.save().await;
    }

    async fn finish(mut self, outcome: Result<(), ApiError>) {
        match outcome {
            Ok(()) => {
                self.job.status = JobStatus::Completed;
                self.job.progress = 100;
            }
            Err(ApiError::JobCanceled) => {
                self.job.status = JobStatus::Canceled;
                self.job.error = Some(ApiError::JobCanceled.detail());
            }
            Err(error) => {
                self.job.status = JobStatus::Failed;
                self.job.error = Some(error.detail());
                if error.status().is_server_error() {
                    tracing::error!(error = ?anyhow::Error::from(error), "job failed");
                }
            }
        }
        self.job.ended_at = Some(Utc::now());
        self.save().await;
    }

    /// Persists the job and announces it. A failed write is logged: the job goes on, and the
    /// next write (or the restart check) repairs the record.
    async fn save(&self) {
        if let Err(error) = db::jobs::update(&self.state.db, &self.job).await {
            tracing::error!(error = ?anyhow::Error::from(error), "cannot record the job's progress");
        }
        self.state.publish(Event::JobChanged(self.job.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_as_json() {
        let spec = JobSpec::VmAction {
            vm_id: VmId::new(),
            action: VmAction::Shutdown,
        };
        let text = serde_json::to_string(&spec).expect("serializes");
        assert_eq!(
            serde_json::from_str::<JobSpec>(&text).expect("parses"),
            spec
        );
        assert_eq!(spec.kind(), "vm.shutdown");
    }
}
