//! `GET /v1/events`: the NDJSON stream of [`AgentEvent`]s. A snapshot first, then every VM state
//! change as the actors publish it, and the host's figures as a heartbeat and right after each
//! VM change (memory and disk move when VMs come and go, and placement wants them fresh). A
//! reader too slow for the broadcast gets a fresh snapshot instead of a gap.

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
    host_due: bool,
}

impl Feed {
    fn new(state: Arc<AgentState>) -> Self {
        let period = Duration::from_secs(HEARTBEAT_SECONDS);
        let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Subscribe before the snapshot is taken so that no change falls between the two.
        Self {
            changes: state.changes.subscribe(),
            state,
            heartbeat,
            snapshot_due: true,
            host_due: false,
        }
    }

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
        if std::mem::take(&mut self.host_due) {
            return Some(AgentEvent::Host(self.state.host_info()));
        }
        tokio::select! {
            change = self.changes.recv() => match change {
                Ok(runtime) => {
                    self.host_due = true;
                    Some(AgentEvent::Vm(runtime))
                }
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
    let body = futures_util::stream::unfold(Feed::new(state), |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok::<_, Infallible>(line(&event)), feed))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrollment::Enrollment;
    use crate::registry::Registry;
    use drover_api::{Accelerator, VmId, VmState};
    use drover_hv::qemu::{QemuConfig, QemuDriver};
    use tokio_util::sync::CancellationToken;

    fn agent_state(data_dir: &std::path::Path, buffer: usize) -> Arc<AgentState> {
        let driver = QemuDriver::new(QemuConfig {
            accelerator: Some(Accelerator::Tcg),
            ..QemuConfig::default()
        });
        Arc::new(AgentState {
            data_dir: data_dir.to_owned(),
            driver: Arc::new(driver),
            networks: crate::network::Networks::open(data_dir, 0).expect("networks"),
            registry: Registry::default(),
            enrollment: Enrollment::open(data_dir, None).expect("enrollment"),
            roles: vec!["host".to_owned()],
            library: crate::library::Library::open(data_dir, &[]).expect("library"),
            images: crate::cache::ImageCache::new(data_dir, 0),
            transfer_port: 0,
            transfers: crate::transfers::Transfers::default(),
            transfer_rate_limit: None,
            changes: broadcast::channel(buffer).0,
            shutdown: CancellationToken::new(),
            migrations: crate::migration::Migrations::new(
                0..=0,
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            ),
        })
    }

    fn change(state: VmState) -> VmRuntime {
        VmRuntime {
            vm_id: VmId::new(),
            state,
            reason: None,
        }
    }

    #[tokio::test]
    async fn snapshot_first_then_changes_and_a_fresh_snapshot_after_lagging() {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let state = agent_state(data_dir.path(), 2);
        let mut feed = Feed::new(state.clone());
        assert!(matches!(
            feed.next().await,
            Some(AgentEvent::Snapshot { .. })
        ));

        let running = change(VmState::Running);
        state.changes.send(running.clone()).expect("a subscriber");
        assert_eq!(feed.next().await, Some(AgentEvent::Vm(running)));
        assert!(
            matches!(feed.next().await, Some(AgentEvent::Host(_))),
            "fresh host figures follow a VM change"
        );

        let burst: Vec<VmRuntime> = (0..5).map(|_| change(VmState::Stopped)).collect();
        for runtime in &burst {
            state.changes.send(runtime.clone()).expect("a subscriber");
        }
        assert!(
            matches!(feed.next().await, Some(AgentEvent::Snapshot { .. })),
            "a lagging reader is resynced"
        );
        // What is still buffered follows: the newest changes, each with the host's figures.
        assert_eq!(feed.next().await, Some(AgentEvent::Vm(burst[3].clone())));
        assert!(matches!(feed.next().await, Some(AgentEvent::Host(_))));
        assert_eq!(feed.next().await, Some(AgentEvent::Vm(burst[4].clone())));
    }

    #[tokio::test]
    async fn heartbeat_and_end_at_shutdown() {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let state = agent_state(data_dir.path(), 8);
        let mut feed = Feed::new(state.clone());
        assert!(matches!(
            feed.next().await,
            Some(AgentEvent::Snapshot { .. })
        ));
        let heartbeat =
            tokio::time::timeout(Duration::from_secs(HEARTBEAT_SECONDS + 2), feed.next())
                .await
                .expect("a heartbeat in time");
        assert!(matches!(heartbeat, Some(AgentEvent::Host(_))));
        state.shutdown.cancel();
        assert_eq!(feed.next().await, None);
    }
}
