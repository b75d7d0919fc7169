//! `GET /api/v1/events`: a WebSocket carrying every [`drover_api::Event`] as a JSON text message,
//! from the moment of the upgrade on. Nothing is replayed: a client reads state from the REST
//! endpoints, then follows changes here.

use super::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use drover_api::Event;
use tokio::sync::broadcast;

#[utoipa::path(get, path = "/api/v1/events",
    responses((status = 101, description = "WebSocket of JSON events", body = Event)))]
pub async fn stream(
    State(state): State<AppState>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|_| ApiError::WebSocketRequired)?;
    // Subscribe before answering, so that no event after the upgrade is lost.
    let events = state.subscribe();
    Ok(upgrade.on_upgrade(move |socket| forward(socket, events)))
}

async fn forward(mut socket: WebSocket, mut events: broadcast::Receiver<Event>) {
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    let Ok(text) = serde_json::to_string(&event) else { continue };
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "an event client fell behind; it missed events");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
