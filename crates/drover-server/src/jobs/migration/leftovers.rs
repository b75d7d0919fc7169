//! A failed quick migration of a paused VM removes the copy its destination fetched. When the
//! destination's agent cannot be reached at that moment (it died mid-copy), the removal is tried
//! again until the agent answers: the copy's saved state is stale once the source continues
//! the VM, so nothing would ever resume from it.

use crate::agents::AgentError;
use crate::state::AppState;
use drover_api::VmId;
use std::time::Duration;

/// How long the removal keeps trying while the destination's agent does not answer.
const REMOVAL_DEADLINE: Duration = Duration::from_secs(600);
const REMOVAL_RETRY: Duration = Duration::from_secs(3);

/// Removes the VM's copy from the agent at `destination` in a task of its own, retrying while
/// the agent cannot be reached; an agent that answers (done or refused) ends it.
pub(super) fn remove_copy_when_back(state: &AppState, destination: String, vm_id: VmId) {
    let state = state.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + REMOVAL_DEADLINE;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(REMOVAL_RETRY).await;
            match state.agents.at(&destination).delete(vm_id).await {
                Err(AgentError::Unreachable { .. }) => continue,
                Ok(_) => {
                    tracing::info!(%vm_id, "removed a failed migration's copy from its destination")
                }
                Err(error) => {
                    tracing::warn!(error = ?anyhow::Error::from(error), %vm_id, "cannot remove a failed migration's copy from its destination")
                }
            }
            return;
        }
        tracing::warn!(%vm_id, destination, "a failed migration's copy stays on its destination: its agent did not come back");
    });
}
