//! Migrations the server's previous run left running. Their jobs are failed at start like any
//! other, but the agents may have carried on: a source agent finishes its copy and resumes the
//! guest on the destination without the server. So each is settled once both agents answer:
//! a copy still under way is canceled (the VM stays where the database has it); then the host
//! whose agent holds the guest running or paused is the VM's host, and the other side's
//! leftovers (incoming QEMU, defined copy, fetched files) are removed. A paused VM that its
//! move had saved and that stays on its source is continued there and paused again.

use super::{POLL_INTERVAL, switch};
use crate::agents::{AgentClient, AgentError};
use crate::db;
use crate::http::ApiError;
use crate::jobs::JobSpec;
use crate::jobs::host::find_host;
use crate::jobs::vm::{find_vm, host_of};
use crate::state::AppState;
use drover_api::{HostId, JobStatus, VmId, VmState};
use std::time::Duration;

/// How long a settle keeps trying while an agent does not answer.
const SETTLE_DEADLINE: Duration = Duration::from_secs(600);
const SETTLE_RETRY: Duration = Duration::from_secs(3);
/// How long a canceled copy may take to end (its roll-back waits for QEMU's block jobs).
const CANCEL_DEADLINE: Duration = Duration::from_secs(90);
/// More running migrations than this were never possible (two per host, a few hosts each).
const MOST_JOBS: u32 = 10_000;

/// A migration job that was running when the server stopped.
#[derive(Debug, Clone, Copy)]
pub(in crate::jobs) struct Interrupted {
    pub vm_id: VmId,
    pub destination: HostId,
    /// A paused VM's move, which saved the VM on its source first.
    pub saved_first: bool,
}

/// The migrations that were running; read before the jobs are failed. Their claims on their
/// destinations go: a settled move takes the VM's claim along with its row.
pub(in crate::jobs) async fn interrupted(
    state: &AppState,
) -> Result<Vec<Interrupted>, db::DbError> {
    db::migration::release_all(&state.db).await?;
    let mut found = Vec::new();
    for (_, job) in db::jobs::list(&state.db, Some(JobStatus::Running), None, MOST_JOBS).await? {
        if job.kind != "vm.migrate" {
            continue;
        }
        let Some(text) = db::jobs::spec(&state.db, job.id).await? else {
            continue;
        };
        if let Ok(JobSpec::VmMigrate {
            vm_id,
            destination: Some(destination),
            ..
        }) = serde_json::from_str(&text)
        {
            found.push(Interrupted {
                vm_id,
                destination,
                saved_first: job.steps.iter().any(|step| step.name == super::SAVE_STEP),
            });
        }
    }
    Ok(found)
}

/// Settles each interrupted migration in a task of its own.
pub(in crate::jobs) fn settle_all(state: &AppState, migrations: Vec<Interrupted>) {
    for migration in migrations {
        let state = state.clone();
        tokio::spawn(async move { settle(&state, migration).await });
    }
}

async fn settle(state: &AppState, migration: Interrupted) {
    let deadline = tokio::time::Instant::now() + SETTLE_DEADLINE;
    loop {
        match try_settle(state, migration).await {
            Ok(outcome) => {
                tracing::info!(vm_id = %migration.vm_id, outcome, "settled a migration the server's restart interrupted");
                return;
            }
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::info!(error = ?anyhow::Error::from(error), vm_id = %migration.vm_id, "cannot settle an interrupted migration yet; trying again");
                tokio::time::sleep(SETTLE_RETRY).await;
            }
            Err(error) => {
                tracing::warn!(error = ?anyhow::Error::from(error), vm_id = %migration.vm_id, "gave up settling an interrupted migration");
                return;
            }
        }
    }
}

/// Whether the agent said it knows no such migration.
fn no_migration(error: &AgentError) -> bool {
    matches!(error, AgentError::Refused { status: 404, .. })
}

async fn try_settle(state: &AppState, migration: Interrupted) -> Result<&'static str, ApiError> {
    let vm = find_vm(state, migration.vm_id).await?;
    let source = host_of(state, &vm).await?;
    if source.id == migration.destination {
        return Ok("the VM had switched hosts already");
    }
    let destination = find_host(state, migration.destination).await?;
    let source_agent = state.agents.at(&source.address);
    let destination_agent = state.agents.at(&destination.address);

    // A copy still under way is stopped; one that ended stays as it ended.
    match source_agent.migration_progress(vm.id).await {
        Ok(progress) if !progress.phase.is_final() => {
            match source_agent.cancel_migration(vm.id).await {
                Ok(()) => {}
                Err(error) if no_migration(&error) => {}
                Err(error) => return Err(error.into()),
            }
            let ended = tokio::time::Instant::now() + CANCEL_DEADLINE;
            while !source_agent
                .migration_progress(vm.id)
                .await?
                .phase
                .is_final()
            {
                if tokio::time::Instant::now() >= ended {
                    return Err(ApiError::internal(anyhow::anyhow!(
                        "the canceled copy did not end within {CANCEL_DEADLINE:?}"
                    )));
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
        Ok(_) => {}
        Err(error) if no_migration(&error) => {}
        Err(error) => return Err(error.into()),
    }

    let held = state_on(&destination_agent, vm.id).await?;
    if let Some(held @ (VmState::Running | VmState::Paused)) = held {
        // The guest runs on the destination: that is the VM's host now.
        switch(state, &vm, &source, &destination, held).await?;
        for forward in &vm.port_forwards {
            destination_agent.add_port_forward(vm.id, *forward).await?;
        }
        return Ok("the VM runs on its destination, which is now its host");
    }
    destination_agent.abort_incoming(vm.id).await?;
    destination_agent.delete(vm.id).await?;
    if migration.saved_first && state_on(&source_agent, vm.id).await? == Some(VmState::Saved) {
        // Paused before its move, paused again.
        let runtime = super::continue_paused(&source_agent, vm.id).await?;
        crate::jobs::vm::record(state, vm.id, None, runtime.state, None).await?;
    }
    Ok("the VM stays on its source; the destination's copy was removed")
}

/// The VM's state on the agent's host, if the host holds it.
async fn state_on(agent: &AgentClient<'_>, vm_id: VmId) -> Result<Option<VmState>, AgentError> {
    Ok(agent
        .vms()
        .await?
        .into_iter()
        .find(|runtime| runtime.vm_id == vm_id)
        .map(|runtime| runtime.state))
}
