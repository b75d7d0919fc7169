//! Store and deploy. A stopped VM's disks move host -> library share (the VM becomes Stored,
//! its host the share's library server) and back library -> host (Stopped there), agent to agent
//! on the transfer port: the server only asks the receiver to fetch, and shows the transfer's
//! bytes and rate in the job. The host's files go only once the library's copy is verified, the
//! library's only once the host has the VM defined again; a copy cut short resumes when the job
//! is restarted.
//!
//! A linked clone keeps its overlay and its reference to the base rather than being flattened:
//! the base is a library item already, so the store moves only the guest's own blocks and a
//! deploy fetches the base into the host's cache only when it is not there (the overlay is
//! pointed at the host's copy when it is defined).

use super::{find_vm, host_of, moved_agent_spec, target, vm_networks};
use crate::db::{self, stored::StoredCopy};
use crate::http::ApiError;
use crate::jobs::host::find_host;
use crate::jobs::{JobRun, Plan, find_share};
use crate::placement;
use crate::state::AppState;
use drover_api::transfer::{AgentVmFilesFetch, AgentVmFilesFetched, VmFilesPlace};
use drover_api::vm_store::VmDeploy;
use drover_api::{Event, HostId, JobStatus, LibraryShareId, PlacementGoal, Vm, VmId, VmState};
use std::sync::atomic::{AtomicBool, Ordering};

/// How often a running transfer's progress is asked for and shown.
const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// How long after the sending agent broke off a fetch is tried again: long enough for an agent
/// to restart.
const SENDER_RETRY_WINDOW: std::time::Duration = std::time::Duration::from_secs(120);
const FIRST_SENDER_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
const MAX_SENDER_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// The VM, refused unless it is in `expected` (what `action` needs).
async fn vm_in_state(
    state: &AppState,
    vm_id: VmId,
    expected: VmState,
    action: &str,
) -> Result<Vm, ApiError> {
    let vm = find_vm(state, vm_id).await?;
    if vm.state != expected {
        return Err(ApiError::vm_state_conflict(&vm, action));
    }
    Ok(vm)
}

/// The transfer endpoint (`HOST:PORT`) of a host's agent.
async fn transfer_address(state: &AppState, host_id: HostId) -> Result<String, ApiError> {
    db::stored::transfer_address(&state.db, host_id)
        .await?
        .ok_or_else(|| ApiError::HostNotFound(host_id.to_string()))
}

impl JobRun {
    /// Runs the next step, whose work includes a transfer the agent at `receiver` follows as
    /// `transfer_id`: while it runs, the step's detail shows the bytes and the rate, and the
    /// job's progress moves within the step's share.
    pub(in crate::jobs) async fn transfer_step<T>(
        &mut self,
        receiver: &str,
        transfer_id: &str,
        work: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let index = self.next_step;
        self.next_step += 1;
        self.set_step(index, JobStatus::Running, None).await;
        let base_progress = self.job.progress;
        let step_share = 100 / u8::try_from(self.job.steps.len().max(1)).unwrap_or(1);
        // The first look after an interval: a step done sooner (most defines) costs no call.
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + PROGRESS_INTERVAL,
            PROGRESS_INTERVAL,
        );
        let mut work = std::pin::pin!(work);
        let outcome = loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                _ = ticks.tick() => {
                    let agent = self.state.agents.at(receiver);
                    // Not there yet (the work has not reached the transfer) or gone (done, or
                    // nothing to fetch): no news.
                    if let Ok(progress) = agent.transfer_progress(transfer_id).await
                        && let Some(step) = self.job.steps.get_mut(index)
                    {
                        step.detail = Some(progress.describe());
                        let within = u16::from(progress.percent()) * u16::from(step_share) / 100;
                        self.job.progress =
                            base_progress.saturating_add(u8::try_from(within).unwrap_or(0));
                        self.save().await;
                    }
                }
            }
        };
        let (status, detail) = match &outcome {
            Ok(_) => (JobStatus::Completed, None),
            Err(error) => (JobStatus::Failed, Some(error.detail().message)),
        };
        self.set_step(index, status, detail).await;
        outcome
    }
}

/// Has the agent at `receiver` fetch the VM's files from host `sender`; `request.source` is
/// filled in here. When the sender breaks off (its agent restarts, say), the fetch is tried
/// again with backoff for a while, the sender's transfer address read afresh each time (a
/// restarted agent may listen elsewhere); every attempt resumes where the last stopped. A
/// receiver that fails is not retried. The outer error says the sender cannot be found; the
/// inner one is the receiver's last answer, which the caller judges (a cut transfer can be
/// resumed later).
pub(in crate::jobs) async fn fetch_from(
    state: &AppState,
    receiver: &str,
    sender: HostId,
    vm_id: VmId,
    mut request: AgentVmFilesFetch,
) -> Result<Result<AgentVmFilesFetched, crate::agents::AgentError>, ApiError> {
    let mut backoff = FIRST_SENDER_RETRY;
    let mut give_up = None;
    loop {
        request.source = transfer_address(state, sender).await?;
        let error = match state
            .agents
            .at(receiver)
            .fetch_vm_files(vm_id, &request)
            .await
        {
            Ok(fetched) => return Ok(Ok(fetched)),
            Err(error) => error,
        };
        let sender_broke_off = matches!(
            &error,
            crate::agents::AgentError::Refused { detail, .. } if detail.code == "transfer_failed"
        );
        let deadline =
            *give_up.get_or_insert_with(|| tokio::time::Instant::now() + SENDER_RETRY_WINDOW);
        if !sender_broke_off || tokio::time::Instant::now() >= deadline {
            return Ok(Err(error));
        }
        tracing::info!(error = ?anyhow::Error::from(error), %vm_id, "the sending agent broke off; fetching again");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_SENDER_RETRY);
    }
}

/// "512 MiB in 2.1 s (384 MiB crossed the network, the rest was kept from an earlier attempt)".
pub(in crate::jobs) fn describe_fetch(fetched: &AgentVmFilesFetched) -> String {
    use drover_api::size::format_bytes;
    // Display only: milliseconds as seconds with one decimal.
    #[allow(clippy::cast_precision_loss)]
    let seconds = fetched.milliseconds as f64 / 1000.0;
    let mut text = format!("{} in {seconds:.1} s", format_bytes(fetched.bytes_total));
    if fetched.bytes_received < fetched.bytes_total {
        text.push_str(&format!(
            " ({} crossed the network, the rest was kept from an earlier attempt)",
            format_bytes(fetched.bytes_received)
        ));
    }
    text
}

const STORE_STEPS: [&str; 3] = [
    "Copy the VM's disks to the library",
    "Record the VM as stored",
    "Remove the VM's files from the host",
];

pub(in crate::jobs) async fn prepare_store(
    state: &AppState,
    vm_id: VmId,
    share_id: LibraryShareId,
) -> Result<Plan, ApiError> {
    let vm = vm_in_state(state, vm_id, VmState::Stopped, "store").await?;
    let share = find_share(state, &share_id.to_string()).await?;
    Ok(Plan {
        description: format!("Store VM {} in library share {}", vm.name, share.name),
        target: target(vm_id, &vm.name),
        done: Vec::new(),
        steps: STORE_STEPS.to_vec(),
    })
}

pub(in crate::jobs) async fn run_store(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    share_id: LibraryShareId,
) -> Result<(), ApiError> {
    let vm = vm_in_state(state, vm_id, VmState::Stopped, "store").await?;
    let host = host_of(state, &vm).await?;
    let share = find_share(state, &share_id.to_string()).await?;
    let library = find_host(state, share.host_id).await?;
    let sender = state.agents.at(&host.address);
    let files = sender.vm_files(vm_id, &VmFilesPlace::default()).await?;
    let request = AgentVmFilesFetch {
        source: String::new(),
        from: VmFilesPlace::default(),
        to: VmFilesPlace {
            share: Some(share.name.clone()),
        },
        files: files.clone(),
        transfer_id: Some(run.job.id.to_string()),
    };
    let fetched = run
        .transfer_step(&library.address, &run.job.id.to_string(), async {
            Ok(fetch_from(state, &library.address, host.id, vm_id, request).await??)
        })
        .await?;
    run.note(&describe_fetch(&fetched)).await;
    run.step(async {
        let copy = StoredCopy { share_id, files };
        if !db::stored::mark_stored(&state.db, vm_id, library.id, &copy).await? {
            return Err(ApiError::vm_state_conflict(
                &find_vm(state, vm_id).await?,
                "store",
            ));
        }
        state.publish(Event::VmChanged(find_vm(state, vm_id).await?));
        Ok(())
    })
    .await?;
    run.step(async { Ok(sender.delete(vm_id).await?) }).await
}

const DEPLOY_STEPS: [&str; 4] = [
    "Claim the host's capacity",
    "Copy the VM's disks to the host",
    "Define the VM on the host",
    "Remove the stored copy from the library",
];

/// The host a deploy goes to: the one named, if the VM fits there, else the best of the group.
pub(crate) async fn deploy_host(
    state: &AppState,
    vm: &Vm,
    request: &VmDeploy,
) -> Result<HostId, ApiError> {
    let needs = super::MovedVmNeeds::of(state, vm).await?;
    if let Some(name) = &request.host {
        let host = super::named_host(state, name, request.group.as_deref()).await?;
        let candidate = placement::rate_host(state, host.id, needs.needs()).await?;
        if candidate.rating.rating == 0.0 {
            return Err(super::unfit_host(&vm.name, host, &candidate.rating.reasons));
        }
        return Ok(host.id);
    }
    let rated = placement::rate_group(
        state,
        request.group.as_deref(),
        needs.needs(),
        PlacementGoal::LoadBalance,
    )
    .await?;
    rated
        .candidates
        .iter()
        .find(|candidate| candidate.rating.rating > 0.0)
        .map(|candidate| candidate.rating.host_id)
        .ok_or_else(|| ApiError::NoSuitableHost {
            reasons: placement::describe(&rated.candidates, None, 20),
            group: rated.group,
        })
}

pub(in crate::jobs) async fn prepare_deploy(
    state: &AppState,
    vm_id: VmId,
    host_id: HostId,
) -> Result<Plan, ApiError> {
    let vm = vm_in_state(state, vm_id, VmState::Stored, "deploy").await?;
    let host = find_host(state, host_id).await?;
    Ok(Plan {
        description: format!("Deploy VM {} to host {}", vm.name, host.name),
        target: target(vm_id, &vm.name),
        done: Vec::new(),
        steps: DEPLOY_STEPS.to_vec(),
    })
}

/// Deploys a stored VM. The host's capacity is claimed before the copy and given back if the
/// deploy fails. A copy cut short (either agent gone, the transfer broken) leaves its partial
/// files on the host so that a restart of the job resumes it; any other failure, and a cancel,
/// removes them.
pub(in crate::jobs) async fn run_deploy(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    host_id: HostId,
) -> Result<(), ApiError> {
    let cancel = state.engine.cancelable(run.job.id);
    let resumable = AtomicBool::new(false);
    let outcome = deploy(state, run, vm_id, host_id, cancel, &resumable).await;
    state.engine.forget_cancel(run.job.id);
    // Only a VM still Stored was not deployed: a failure after the move (the library's copy
    // not removed), or a job run again on a VM deployed since, leaves the host's VM alone.
    let still_stored = find_vm(state, vm_id)
        .await
        .is_ok_and(|vm| vm.state == VmState::Stored);
    if outcome.is_err() && still_stored {
        if let Err(error) = db::stored::release_deploy(&state.db, vm_id).await {
            tracing::error!(error = ?anyhow::Error::from(error), %vm_id, "cannot give back the deploy's claim");
        }
        if !resumable.load(Ordering::Relaxed)
            && let Ok(host) = find_host(state, host_id).await
            && let Err(undo) = state.agents.at(&host.address).delete(vm_id).await
        {
            tracing::warn!(error = ?anyhow::Error::from(undo), %vm_id, "cannot remove the deploy's files from the host");
        }
    }
    outcome
}

async fn deploy(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    host_id: HostId,
    mut cancel: tokio::sync::watch::Receiver<bool>,
    resumable: &AtomicBool,
) -> Result<(), ApiError> {
    let vm = find_vm(state, vm_id).await?;
    let copy = db::stored::stored_copy(&state.db, vm_id)
        .await?
        .ok_or_else(|| ApiError::vm_state_conflict(&vm, "deploy"))?;
    let share = find_share(state, &copy.share_id.to_string()).await?;
    let library = host_of(state, &vm).await?;
    let host = find_host(state, host_id).await?;
    let receiver = state.agents.at(&host.address);
    let no_room = || {
        ApiError::InsufficientHostResources(format!(
            "VM '{}' no longer fits on host '{}'",
            vm.name, host.name
        ))
    };
    let reserves = run
        .step(async {
            let needs = super::MovedVmNeeds::of(state, &vm).await?;
            let reserves = placement::rate_host(state, host.id, needs.needs())
                .await?
                .reserves;
            if !db::stored::claim_deploy(&state.db, vm_id, host.id, reserves).await? {
                return Err(no_room());
            }
            Ok(reserves)
        })
        .await?;
    let request = AgentVmFilesFetch {
        source: String::new(),
        from: VmFilesPlace {
            share: Some(share.name.clone()),
        },
        to: VmFilesPlace::default(),
        files: copy.files,
        transfer_id: Some(run.job.id.to_string()),
    };
    let fetched = run
        .transfer_step(&host.address, &run.job.id.to_string(), async {
            tokio::select! {
                fetched = fetch_from(state, &host.address, library.id, vm_id, request) => {
                    fetched?.map_err(|error| {
                        resumable.store(error.is_cut_transfer(), Ordering::Relaxed);
                        error.into()
                    })
                }
                _ = cancel.wait_for(|canceled| *canceled) => Err(ApiError::JobCanceled),
            }
        })
        .await?;
    run.note(&describe_fetch(&fetched)).await;
    let defined = run
        .step(async {
            for network in vm_networks(state, &vm).await? {
                crate::jobs::network::ensure_on_host(state, network, &host).await?;
            }
            receiver
                .define(&moved_agent_spec(state, &vm).await?)
                .await?;
            if !db::stored::claim_deployed(&state.db, vm_id, host.id, reserves).await? {
                return Err(no_room());
            }
            state.publish(Event::VmChanged(find_vm(state, vm_id).await?));
            Ok(())
        })
        .await;
    // The stored copy is whole: on failure the host's copy goes (the caller removes it), and the
    // VM stays Stored.
    defined?;
    let sender = state.agents.at(&library.address);
    run.step(async { Ok(sender.remove_stored_vm_files(vm_id, &share.name).await?) })
        .await
}

/// Removes a stored VM's files from its share (before its row goes).
pub(in crate::jobs) async fn remove_stored_copy(state: &AppState, vm: &Vm) -> Result<(), ApiError> {
    let Some(copy) = db::stored::stored_copy(&state.db, vm.id).await? else {
        return Ok(());
    };
    let share = find_share(state, &copy.share_id.to_string()).await?;
    let library = host_of(state, vm).await?;
    Ok(state
        .agents
        .at(&library.address)
        .remove_stored_vm_files(vm.id, &share.name)
        .await?)
}
