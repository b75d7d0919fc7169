//! `GET /v1/vms/{id}/console`: a WebSocket relayed byte for byte to the guest's serial console
//! (QEMU's Unix socket). Binary frames both ways; either side ending closes the other.

use super::AgentState;
use crate::actor::ConsoleSession;
use crate::error::AgentError;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use drover_api::VmId;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

pub async fn attach(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AgentError> {
    let Path(vm_id) = path?;
    let handle = state.registry.get(vm_id)?;
    let runtime = handle.runtime();
    if !runtime.state.has_process() {
        return Err(AgentError::VmNotRunning {
            vm_id,
            state: runtime.state,
        });
    }
    // Only a real upgrade may end the current console session.
    let upgrade = upgrade?;
    let session = handle.open_console().await?;
    let shutdown = state.shutdown.clone();
    Ok(upgrade.on_upgrade(move |socket| async move {
        if let Err(error) = relay(socket, session, shutdown).await {
            tracing::debug!(vm_id = %vm_id, error = ?error, "console relay ended with an error");
        }
    }))
}

async fn relay(
    socket: WebSocket,
    session: ConsoleSession,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (mut client_sender, mut client_receiver) = socket.split();
    let serial = match UnixStream::connect(&session.serial_socket).await {
        Ok(serial) => serial,
        Err(error) => {
            let _ = client_sender.send(Message::Close(None)).await;
            return Err(anyhow::Error::from(error).context("connect to the serial socket"));
        }
    };
    let (mut serial_reader, mut serial_writer) = serial.into_split();
    let guest_to_client = async {
        let mut buffer = vec![0_u8; 4096];
        loop {
            let count = serial_reader.read(&mut buffer).await?;
            if count == 0 {
                return anyhow::Ok(());
            }
            let bytes = Bytes::copy_from_slice(&buffer[..count]);
            client_sender.send(Message::Binary(bytes)).await?;
        }
    };
    let client_to_guest = async {
        while let Some(message) = client_receiver.next().await {
            match message? {
                Message::Binary(bytes) => serial_writer.write_all(&bytes).await?,
                Message::Text(text) => serial_writer.write_all(text.as_bytes()).await?,
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
        anyhow::Ok(())
    };
    let result = tokio::select! {
        result = guest_to_client => result,
        result = client_to_guest => result,
        () = shutdown.cancelled() => Ok(()),
        () = session.ended.cancelled() => Ok(()),
    };
    let _ = client_sender.send(Message::Close(None)).await;
    result
}
