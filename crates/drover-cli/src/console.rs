//! `drover vm console`: relays standard input and output to a VM's serial console over the
//! server's WebSocket. On a terminal the terminal is put in raw mode so that every key reaches
//! the guest; Ctrl-] (byte 0x1d) detaches. Piped input works too: when it ends, output is still
//! shown until the console closes or Ctrl-] arrives.

use crate::CliError;
use drover_client::{Client, Message};
use futures_util::{SinkExt, StreamExt};
use std::io::{IsTerminal, Read};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Ctrl-], as telnet and virsh use it.
pub const DETACH_BYTE: u8 = 0x1d;

/// Raw mode of the terminal for as long as it lives.
#[derive(Debug)]
pub struct RawMode(());

impl RawMode {
    pub fn enable() -> Result<Self, CliError> {
        crossterm::terminal::enable_raw_mode().map_err(|error| {
            CliError::local(
                "terminal_error",
                format!("cannot put the terminal in raw mode: {error}"),
                "run the command in a terminal, or pipe its input",
            )
        })?;
        Ok(Self(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing more can be done if the terminal refuses; the shell's `reset` fixes it.
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Reads standard input on a thread of its own: a blocking read cannot be canceled, and the
/// thread must not keep the runtime from shutting down when the console detaches.
fn spawn_stdin_reader() -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buffer = [0u8; 4096];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(count) => {
                    if sender.blocking_send(buffer[..count].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    receiver
}

fn output_failed(error: std::io::Error) -> CliError {
    CliError::io("write to", std::path::Path::new("stdout"), &error)
}

pub async fn attach(client: &Client, vm: &str) -> Result<(), CliError> {
    let stream = client.console(vm).await?;
    let (mut to_guest, mut from_guest) = stream.split();
    let _raw_mode = if std::io::stdin().is_terminal() {
        Some(RawMode::enable()?)
    } else {
        None
    };
    eprint!("Connected to the serial console of {vm}; press Ctrl-] to detach.\r\n");
    let mut input = spawn_stdin_reader();
    let mut input_open = true;
    let mut stdout = tokio::io::stdout();
    let relay_failed = |error| {
        CliError::Client(drover_client::ClientError::WebSocket {
            url: client.url().to_string(),
            source: Box::new(error),
        })
    };
    loop {
        tokio::select! {
            bytes = input.recv(), if input_open => match bytes {
                Some(bytes) => {
                    let detach_at = bytes.iter().position(|&byte| byte == DETACH_BYTE);
                    let to_send = &bytes[..detach_at.unwrap_or(bytes.len())];
                    if !to_send.is_empty() {
                        to_guest.send(Message::binary(to_send.to_vec())).await.map_err(relay_failed)?;
                    }
                    if detach_at.is_some() {
                        break;
                    }
                }
                None => input_open = false,
            },
            message = from_guest.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    stdout.write_all(&data).await.map_err(output_failed)?;
                    stdout.flush().await.map_err(output_failed)?;
                }
                Some(Ok(Message::Text(text))) => {
                    stdout.write_all(text.as_bytes()).await.map_err(output_failed)?;
                    stdout.flush().await.map_err(output_failed)?;
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(relay_failed(error)),
            },
        }
    }
    // The server notices the detach either way; a failed close changes nothing for the user.
    let _ = to_guest.close().await;
    eprint!("\r\nDetached from {vm}.\r\n");
    Ok(())
}
