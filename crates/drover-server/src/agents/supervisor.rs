//! One task per host that keeps the agent's event stream (`GET /v1/events`, NDJSON) open and
//! applies every line to the database the moment it arrives, then announces the change on the
//! server's event bus. When the stream breaks or goes quiet the host is Not Responding and its VMs
//! Unknown (never guessed stopped) until a reconnect's snapshot tells the truth again.

use crate::db;
use crate::state::AppState;
use drover_api::agent::{AgentEvent, AgentHostInfo, HEARTBEAT_SECONDS, VmRuntime};
use drover_api::{Event, HostId, VmState};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::task::AbortHandle;

/// A stream with no line for this long is dead: three heartbeats missed.
const SILENCE_LIMIT: Duration = Duration::from_secs(3 * HEARTBEAT_SECONDS);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const NOT_RESPONDING: &str = "host not responding";

/// The running supervisor tasks, by host.
#[derive(Debug, Default)]
pub struct Supervisors {
    tasks: Mutex<HashMap<HostId, AbortHandle>>,
}

impl Supervisors {
    /// Starts supervising a host, replacing any earlier task for it.
    pub fn start(&self, state: &AppState, host_id: HostId, address: String) {
        let task = tokio::spawn(supervise(state.clone(), host_id, address));
        let mut tasks = self
            .tasks
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(previous) = tasks.insert(host_id, task.abort_handle()) {
            previous.abort();
        }
    }

    pub fn stop(&self, host_id: HostId) {
        let mut tasks = self
            .tasks
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(task) = tasks.remove(&host_id) {
            task.abort();
        }
    }

    pub fn stop_all(&self) {
        let mut tasks = self
            .tasks
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        for (_, task) in tasks.drain() {
            task.abort();
        }
    }
}

#[tracing::instrument(skip(state), fields(host_id = %host_id))]
async fn supervise(state: AppState, host_id: HostId, address: String) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let (synced, reason) = follow(&state, host_id, &address).await;
        if synced {
            backoff = FIRST_BACKOFF;
        }
        tracing::info!(%address, %reason, "lost the agent's event stream");
        if let Err(error) = mark_not_responding(&state, host_id).await {
            tracing::error!(error = ?anyhow::Error::from(error), "cannot record the host as not responding");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Follows one connection of the event stream until it ends; whether a snapshot arrived, and why
/// it ended.
async fn follow(state: &AppState, host_id: HostId, address: &str) -> (bool, String) {
    let response = match state.agents.at(address).events().await {
        Ok(response) => response,
        Err(error) => return (false, format!("{:#}", anyhow::Error::from(error))),
    };
    let mut stream = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    let mut follower = Follower {
        state,
        host_id,
        last_info: None,
        synced: false,
    };
    loop {
        let chunk = match tokio::time::timeout(SILENCE_LIMIT, stream.next()).await {
            Err(_) => return (follower.synced, format!("no event for {SILENCE_LIMIT:?}")),
            Ok(None) => return (follower.synced, "the agent closed the stream".to_owned()),
            Ok(Some(Err(error))) => return (follower.synced, error.to_string()),
            Ok(Some(Ok(chunk))) => chunk,
        };
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<AgentEvent>(line) {
                Ok(event) => {
                    if let Err(error) = follower.apply(event).await {
                        tracing::error!(error = ?anyhow::Error::from(error), "cannot apply an agent event");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "ignoring an event line the server does not understand")
                }
            }
        }
    }
}

struct Follower<'a> {
    state: &'a AppState,
    host_id: HostId,
    last_info: Option<AgentHostInfo>,
    synced: bool,
}

impl Follower<'_> {
    async fn apply(&mut self, event: AgentEvent) -> Result<(), db::DbError> {
        match event {
            AgentEvent::Snapshot { host, vms } => {
                self.apply_host(host).await?;
                self.apply_snapshot(&vms).await?;
                self.synced = true;
            }
            AgentEvent::Vm(runtime) => self.apply_vm(&runtime).await?,
            AgentEvent::Host(info) => self.apply_host(info).await?,
        }
        Ok(())
    }

    /// Announces host figures only when they change: heartbeats alone are not news.
    async fn apply_host(&mut self, info: AgentHostInfo) -> Result<(), db::DbError> {
        let assessment = super::health::assess(&info);
        let host = db::hosts::apply_info(&self.state.db, self.host_id, &info, assessment).await?;
        if self.last_info.as_ref() != Some(&info) {
            if let Some(host) = host {
                self.state.publish(Event::HostChanged(host));
            }
            self.last_info = Some(info);
        }
        Ok(())
    }

    async fn apply_vm(&self, runtime: &drover_api::agent::VmRuntime) -> Result<(), db::DbError> {
        // Only for a VM Drover places on this host: a host's word about a VM that has moved
        // (stored in the library, deployed or migrated elsewhere) is stale.
        let changed = db::vms::set_state_on(
            &self.state.db,
            self.host_id,
            runtime.vm_id,
            runtime.state,
            runtime.reason.as_deref(),
        )
        .await?;
        if let Some(vm) = changed {
            self.state.publish(Event::VmChanged(vm));
        }
        Ok(())
    }

    /// The snapshot is the whole truth about the host's VMs. A VM it does not name and that was
    /// Unknown is gone from the host; one being created is not there yet.
    async fn apply_snapshot(&self, vms: &[VmRuntime]) -> Result<(), db::DbError> {
        for runtime in vms {
            self.apply_vm(runtime).await?;
        }
        for vm_id in db::vms::ids_on_host(&self.state.db, self.host_id).await? {
            if vms.iter().any(|runtime| runtime.vm_id == vm_id) {
                continue;
            }
            let changed = db::vms::set_state_if(
                &self.state.db,
                vm_id,
                VmState::Unknown,
                VmState::Failed,
                Some("the host no longer knows this VM"),
            )
            .await?;
            if let Some(vm) = changed {
                self.state.publish(Event::VmChanged(vm));
            }
        }
        Ok(())
    }
}

async fn mark_not_responding(state: &AppState, host_id: HostId) -> Result<(), db::DbError> {
    if let Some(host) = db::hosts::mark_not_responding(&state.db, host_id, NOT_RESPONDING).await? {
        state.publish(Event::HostChanged(host));
    }
    let changed = db::vms::set_state_on_host(
        &state.db,
        host_id,
        VmState::Unknown,
        Some(NOT_RESPONDING),
        &[VmState::Creating, VmState::Stored],
    )
    .await?;
    for vm in changed {
        state.publish(Event::VmChanged(vm));
    }
    Ok(())
}
