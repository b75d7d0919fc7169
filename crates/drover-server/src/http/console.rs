//! `GET /api/v1/vms/{vm}/console`: the VM's serial console as a WebSocket, relayed frame by frame
//! to the agent's console endpoint (mutual TLS). The server keeps no console state of its own.

use super::{ApiError, vms};
use crate::agents::ConsoleStream;
use crate::db;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use drover_api::VmState;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as AgentMessage;

#[utoipa::path(get, path = "/api/v1/vms/{vm}/console", params(("vm" = String, Path, description = "id or name")),
    responses((status = 101, description = "WebSocket: binary frames both ways"),
        (status = 409, body = drover_api::ErrorBody)))]
pub async fn attach(
    State(state): State<AppState>,
    Path(vm): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let vm = vms::find(&state, &vm).await?;
    if !matches!(vm.state, VmState::Running | VmState::Paused) {
        return Err(ApiError::VmNotRunning(vm.name));
    }
    let upgrade = upgrade.map_err(|_| ApiError::WebSocketRequired)?;
    let host = db::hosts::get_by_id(&state.db, vm.host_id)
        .await?
        .ok_or_else(|| ApiError::HostNotFound(vm.host_id.to_string()))?;
    // Connect first, so that an unreachable agent is an HTTP error rather than a closed socket.
    let agent = state.agents.console(&host.address, vm.id).await?;
    Ok(upgrade.on_upgrade(move |client| relay(client, agent)))
}

async fn relay(client: WebSocket, agent: ConsoleStream) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut agent_tx, mut agent_rx) = agent.split();
    let to_agent = async {
        while let Some(Ok(message)) = client_rx.next().await {
            let bytes = match message {
                Message::Binary(bytes) => bytes,
                Message::Text(text) => Bytes::copy_from_slice(text.as_str().as_bytes()),
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if agent_tx.send(AgentMessage::Binary(bytes)).await.is_err() {
                break;
            }
        }
        let _agent_may_be_gone = agent_tx.close().await;
    };
    let to_client = async {
        while let Some(Ok(message)) = agent_rx.next().await {
            let bytes = match message {
                AgentMessage::Binary(bytes) => bytes,
                AgentMessage::Text(text) => Bytes::copy_from_slice(text.as_str().as_bytes()),
                AgentMessage::Close(_) => break,
                _ => continue,
            };
            if client_tx.send(Message::Binary(bytes)).await.is_err() {
                break;
            }
        }
        let _client_may_be_gone = client_tx.close().await;
    };
    tokio::select! {
        () = to_agent => {}
        () = to_client => {}
    }
}
