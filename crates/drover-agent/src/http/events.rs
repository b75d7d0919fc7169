//! `GET /v1/events`: the NDJSON stream of [`AgentEvent`]s. A snapshot first, then every VM state
//! change as the actors publish it, and the host's figures as a heartbeat. A reader too slow for
//! the broadcast gets a fresh snapshot instead of a gap.

use super::AgentState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use drover_api::agent::{AgentEvent, HEARTBEAT_SECONDS, VmRuntime};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Instant, Interval, MissedTickBehavior};

struct Feed {
    state: Arc<AgentState>,
    changes: broadcast::Receiver<VmRuntime>,
    heartbeat: Interval,
    snapshot_due: bool,
}

impl Feed {
    fn snapshot(&self) -> AgentEvent {
        AgentEvent::Snapshot {
            host: self.state.host_info(),
            vms: self.state.registry.runtimes(),
        }
    }

    async fn next(&mut self) -> Option<AgentEvent> {
        if std::mem::take(&mut self.snapshot_due) {
            return Some(self.snapshot());
        }
        tokio::select! {
            change = self.changes.recv() => match change {
                Ok(runtime) => Some(AgentEvent::Vm(runtime)),
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "event reader lagged; sending a snapshot");
                    Some(self.snapshot())
                }
                Err(RecvError::Closed) => None,
            },
            _ = self.heartbeat.tick() => Some(AgentEvent::Host(self.state.host_info())),
            () = self.state.shutdown.cancelled() => None,
        }
    }
}

fn line(event: &AgentEvent) -> Bytes {
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

pub async fn stream(State(state): State<Arc<AgentState>>) -> Response {
    let period = Duration::from_secs(HEARTBEAT_SECONDS);
    let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Subscribe before the snapshot is taken so that no change falls between the two.
    let feed = Feed {
        changes: state.changes.subscribe(),
        state,
        heartbeat,
        snapshot_due: true,
    };
    let body = futures_util::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok::<_, Infallible>(line(&event)), feed))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}
