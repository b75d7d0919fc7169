//! The connection: handshake, the [`Qmp`] handle, and the one reader task that routes replies to
//! their callers and broadcasts events.

use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;

use crate::QmpError;
use crate::protocol::{self, Greeting, Message, QmpEvent};
use crate::transcript::{Direction, Transcript};

/// How long a command waits for its reply unless told otherwise.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take, up to and including the greeting.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to connect; `ConnectOptions::default()` suits most uses.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Reply timeout of [`Qmp::execute`].
    pub command_timeout: Duration,
    /// Bound on connecting and reading the greeting. QEMU serves one monitor client at a time, so
    /// a connection can sit unanswered in the backlog while another client holds the monitor.
    pub connect_timeout: Duration,
    /// Append every line sent and received to this file.
    pub transcript: Option<PathBuf>,
    /// Events kept for a slow subscriber before it starts to lag.
    pub event_capacity: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            transcript: None,
            event_capacity: 64,
        }
    }
}

/// A handle on one QMP connection, cheap to clone. The connection closes when the last clone is
/// dropped (or when QEMU closes it).
#[derive(Debug, Clone)]
pub struct Qmp {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    command_timeout: Duration,
    greeting: Greeting,
    closed: watch::Receiver<bool>,
    reader: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The reader owns the read half; ending it closes the socket, which frees QEMU's monitor
        // for the next client (an agent that re-attaches after a restart).
        self.reader.abort();
    }
}

/// What the reader task and the callers share.
#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    events: broadcast::Sender<QmpEvent>,
    transcript: Option<Transcript>,
}

type Reply = Result<Value, (String, String)>;

#[derive(Debug)]
struct Pending {
    /// False once the connection ended: no reply can arrive any more.
    open: bool,
    waiters: HashMap<u64, oneshot::Sender<Reply>>,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // The lock is never held across a panic point that matters; recover the data if it was.
        self.pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn record(&self, direction: Direction, line: &str) {
        if let Some(transcript) = &self.transcript {
            transcript.record(direction, line);
        }
    }
}

/// Removes a call's waiter when the call ends early (timeout, cancelled future).
struct WaiterGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.shared.pending().waiters.remove(&self.id);
    }
}

impl Qmp {
    /// Connects with [`ConnectOptions::default`].
    pub async fn connect(path: impl AsRef<Path>) -> Result<Qmp, QmpError> {
        Self::connect_with(path, ConnectOptions::default()).await
    }

    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub async fn connect_with(
        path: impl AsRef<Path>,
        options: ConnectOptions,
    ) -> Result<Qmp, QmpError> {
        let path = path.as_ref();
        let transcript = options
            .transcript
            .as_deref()
            .map(Transcript::open)
            .transpose()?;
        let handshake = async {
            let stream = UnixStream::connect(path)
                .await
                .map_err(|source| QmpError::Connect {
                    path: path.to_path_buf(),
                    source,
                })?;
            let (read_half, write_half) = stream.into_split();
            let mut reader = BufReader::new(read_half);
            let mut line = String::new();
            let read = reader
                .read_line(&mut line)
                .await
                .map_err(|source| QmpError::Io { source })?;
            if read == 0 {
                return Err(QmpError::Closed);
            }
            if let Some(transcript) = &transcript {
                transcript.record(Direction::Received, &line);
            }
            let greeting = protocol::parse_greeting(&line)?;
            Ok((reader, write_half, greeting))
        };
        let (reader, writer, greeting) =
            match tokio::time::timeout(options.connect_timeout, handshake).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(QmpError::Connect {
                        path: path.to_path_buf(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no greeting within {:?}", options.connect_timeout),
                        ),
                    });
                }
            };

        let (events, _) = broadcast::channel(options.event_capacity.max(1));
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                open: true,
                waiters: HashMap::new(),
            }),
            events,
            transcript,
        });
        let (closed_sender, closed) = watch::channel(false);
        let reader = tokio::spawn(read_loop(reader, shared.clone(), closed_sender));
        let qmp = Qmp {
            inner: Arc::new(Inner {
                writer: tokio::sync::Mutex::new(writer),
                shared,
                next_id: AtomicU64::new(1),
                command_timeout: options.command_timeout,
                greeting,
                closed,
                reader,
            }),
        };
        qmp.execute("qmp_capabilities", Value::Null).await?;
        Ok(qmp)
    }

    /// What QEMU said on connecting.
    pub fn greeting(&self) -> &Greeting {
        &self.inner.greeting
    }

    /// Runs any QMP command (the escape hatch). `arguments` is an object, or `Value::Null` for
    /// none. Returns the reply's `return` value.
    pub async fn execute(&self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        self.execute_with_timeout(command, arguments, self.inner.command_timeout)
            .await
    }

    /// [`Qmp::execute`] with its own reply timeout, for commands known to be slow.
    pub async fn execute_with_timeout(
        &self,
        command: &str,
        arguments: Value,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let shared = &*self.inner.shared;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let line = protocol::command_line(command, &arguments, id)?;
        let (sender, receiver) = oneshot::channel();
        {
            let mut pending = shared.pending();
            if !pending.open {
                return Err(QmpError::Closed);
            }
            pending.waiters.insert(id, sender);
        }
        let _guard = WaiterGuard { shared, id };
        let call = async {
            {
                let mut writer = self.inner.writer.lock().await;
                // Recorded under the writer lock so the transcript keeps the order on the wire.
                shared.record(Direction::Sent, &line);
                let written = async {
                    writer.write_all(line.as_bytes()).await?;
                    writer.write_all(b"\n").await
                };
                if let Err(source) = written.await {
                    return Err(if shared.pending().open {
                        QmpError::Io { source }
                    } else {
                        QmpError::Closed
                    });
                }
            }
            match receiver.await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err((class, desc))) => Err(QmpError::Command {
                    command: command.to_string(),
                    class,
                    desc,
                }),
                // The reader dropped our sender: the connection ended.
                Err(_) => Err(QmpError::Closed),
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(QmpError::Timeout {
                command: command.to_string(),
                after: timeout,
            }),
        }
    }

    /// A new subscription to QEMU's events; it sees the events that arrive after this call.
    pub fn events(&self) -> broadcast::Receiver<QmpEvent> {
        self.inner.shared.events.subscribe()
    }

    /// Resolves once the connection has ended. Every event received before the end has been sent
    /// to the subscribers by then.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closed = self.inner.closed.clone();
        async move {
            // An error means the reader is gone, which also means closed.
            let _ = closed.wait_for(|closed| *closed).await;
        }
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }
}

/// The one reader: routes replies by id, broadcasts events, and on EOF fails every pending call.
async fn read_loop(
    mut reader: BufReader<OwnedReadHalf>,
    shared: Arc<Shared>,
    closed: watch::Sender<bool>,
) {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "qmp read failed; treating the connection as closed");
                break;
            }
        }
        shared.record(Direction::Received, &line);
        match protocol::parse_message(&line) {
            Ok(Message::Reply { id, result }) => {
                let waiter = id.and_then(|id| shared.pending().waiters.remove(&id));
                match waiter {
                    // The caller may have given up (timeout) just now; nothing to do then.
                    Some(waiter) => {
                        let _ = waiter.send(result);
                    }
                    None => tracing::debug!(?id, "qmp reply nobody waits for"),
                }
            }
            Ok(Message::Event(event)) => {
                // No subscriber is fine: events are offered, not queued.
                let _ = shared.events.send(event);
            }
            Err(error) => tracing::warn!(%error, "ignoring a qmp line"),
        }
    }
    {
        let mut pending = shared.pending();
        pending.open = false;
        // Dropping the senders fails each waiting call with Closed.
        pending.waiters.clear();
    }
    let _ = closed.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::Lines;
    use tokio::net::UnixListener;

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "test"}, "capabilities": ["oob"]}}"#;

    /// A scripted QMP server: the test says what it expects and what it answers.
    struct FakeQemu {
        lines: Lines<BufReader<OwnedReadHalf>>,
        writer: OwnedWriteHalf,
    }

    impl FakeQemu {
        async fn accept(listener: &UnixListener) -> Self {
            let (stream, _) = listener.accept().await.expect("accept");
            let (read_half, writer) = stream.into_split();
            let mut fake = FakeQemu {
                lines: BufReader::new(read_half).lines(),
                writer,
            };
            fake.send_raw(GREETING).await;
            fake
        }

        /// Accepts and completes the handshake.
        async fn accept_ready(listener: &UnixListener) -> Self {
            let mut fake = Self::accept(listener).await;
            let id = fake.expect("qmp_capabilities").await;
            fake.send(json!({"return": {}, "id": id})).await;
            fake
        }

        /// Reads the next command, checks its name and returns its id.
        async fn expect(&mut self, command: &str) -> Value {
            let message = self.read().await;
            assert_eq!(message["execute"], command, "{message}");
            message["id"].clone()
        }

        async fn read(&mut self) -> Value {
            let line = self
                .lines
                .next_line()
                .await
                .expect("read")
                .expect("a line, not eof");
            serde_json::from_str(&line).expect("client sends json")
        }

        async fn send(&mut self, value: Value) {
            self.send_raw(&value.to_string()).await;
        }

        async fn send_raw(&mut self, line: &str) {
            // QEMU ends lines with CRLF.
            self.writer
                .write_all(format!("{line}\r\n").as_bytes())
                .await
                .expect("write");
        }

        async fn event(&mut self, name: &str, data: Value) {
            self.send(json!({"event": name, "data": data, "timestamp": {"seconds": 1, "microseconds": 2}}))
                .await;
        }
    }

    fn listen() -> (tempfile::TempDir, PathBuf, UnixListener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        (dir, path, listener)
    }

    async fn connected() -> (tempfile::TempDir, Qmp, FakeQemu) {
        let (dir, path, listener) = listen();
        let (qmp, fake) = tokio::join!(Qmp::connect(&path), FakeQemu::accept_ready(&listener));
        (dir, qmp.expect("connect"), fake)
    }

    #[tokio::test]
    async fn handshake_reads_greeting_and_negotiates_capabilities() {
        let (dir, path, listener) = listen();
        let transcript = dir.path().join("qmp.log");
        let options = ConnectOptions {
            transcript: Some(transcript.clone()),
            ..ConnectOptions::default()
        };
        let server = async {
            let mut fake = FakeQemu::accept(&listener).await;
            let message = fake.read().await;
            assert_eq!(message["execute"], "qmp_capabilities");
            assert!(message.get("arguments").is_none(), "{message}");
            fake.send(json!({"return": {}, "id": message["id"]})).await;
            fake
        };
        let (qmp, _fake) = tokio::join!(Qmp::connect_with(&path, options), server);
        let qmp = qmp.expect("connect");
        assert_eq!(qmp.greeting().version, "10.0.2");
        assert_eq!(qmp.greeting().capabilities, vec!["oob".to_string()]);
        assert!(!qmp.is_closed());

        let log = std::fs::read_to_string(&transcript).expect("transcript");
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 3, "{log}");
        assert!(lines[0].contains(" < {\"QMP\""), "{log}");
        assert!(
            lines[1].contains(" > ") && lines[1].contains("qmp_capabilities"),
            "{log}"
        );
        assert!(
            lines[2].contains(" < {") && lines[2].contains("\"return\""),
            "{log}"
        );
    }

    #[tokio::test]
    async fn hostfwd_add_goes_through_hmp_and_reports_its_text() {
        let (_dir, qmp, mut fake) = connected().await;
        let server = async {
            let message = fake.read().await;
            assert_eq!(message["execute"], "human-monitor-command");
            assert_eq!(
                message["arguments"]["command-line"],
                "hostfwd_add net0 tcp:127.0.0.1:8080-:80"
            );
            fake.send(json!({"return": "", "id": message["id"]})).await;
            let message = fake.read().await;
            fake.send(
                json!({"return": "Could not set up host forwarding rule\r\n", "id": message["id"]}),
            )
            .await;
        };
        let client = async {
            let first = qmp.hostfwd_add("net0", "tcp:127.0.0.1:8080-:80").await;
            let second = qmp.hostfwd_add("net0", "tcp:127.0.0.1:8080-:80").await;
            (first, second)
        };
        let ((), (first, second)) = tokio::join!(server, client);
        first.expect("an empty answer is success");
        match second {
            Err(QmpError::Command { desc, .. }) => {
                assert_eq!(desc, "Could not set up host forwarding rule");
            }
            other => panic!("expected a command error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn hostfwd_remove_succeeds_only_when_qemu_says_removed() {
        let (_dir, qmp, mut fake) = connected().await;
        let server = async {
            for answer in [
                "host forwarding rule for udp:127.0.0.1:5353 removed\r\n",
                "host forwarding rule for udp:127.0.0.1:5353 not found\r\n",
            ] {
                let message = fake.read().await;
                assert_eq!(
                    message["arguments"]["command-line"],
                    "hostfwd_remove net0 udp:127.0.0.1:5353"
                );
                fake.send(json!({"return": answer, "id": message["id"]}))
                    .await;
            }
        };
        let client = async {
            let first = qmp.hostfwd_remove("net0", "udp:127.0.0.1:5353").await;
            let second = qmp.hostfwd_remove("net0", "udp:127.0.0.1:5353").await;
            (first, second)
        };
        let ((), (first, second)) = tokio::join!(server, client);
        first.expect("removed is success");
        match second {
            Err(QmpError::Command { desc, .. }) => assert!(desc.ends_with("not found"), "{desc}"),
            other => panic!("expected a command error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn replies_are_routed_by_id_between_events() {
        let (_dir, qmp, mut fake) = connected().await;
        let mut events = qmp.events();
        let server = async {
            let first = fake.expect("query-status").await;
            let second = fake.expect("query-name").await;
            fake.event("STOP", json!(null)).await;
            fake.send(json!({"return": {"name": "vm1"}, "id": second}))
                .await;
            fake.event("RESUME", json!({})).await;
            fake.send(json!({"return": {"status": "running", "running": true}, "id": first}))
                .await;
        };
        let clients = async {
            // Sequenced writes so the server sees query-status first.
            let status = qmp.query_status();
            let name = async {
                tokio::task::yield_now().await;
                qmp.execute("query-name", Value::Null).await
            };
            tokio::join!(status, name)
        };
        let ((status, name), ()) = tokio::join!(clients, server);
        assert_eq!(
            status.expect("status"),
            crate::StatusInfo {
                status: "running".into(),
                running: true
            }
        );
        assert_eq!(name.expect("name"), json!({"name": "vm1"}));
        let stop = events.recv().await.expect("STOP");
        assert_eq!(stop.event, "STOP");
        assert_eq!(stop.data, Value::Null);
        assert_eq!(events.recv().await.expect("RESUME").event, "RESUME");
    }

    #[tokio::test]
    async fn error_reply_names_command_class_and_text() {
        let (_dir, qmp, mut fake) = connected().await;
        let server = async {
            let id = fake.expect("cont").await;
            fake.send(json!({"error": {"class": "GenericError", "desc": "no way"}, "id": id}))
                .await;
        };
        let (result, ()) = tokio::join!(qmp.cont(), server);
        match result {
            Err(QmpError::Command {
                command,
                class,
                desc,
            }) => {
                assert_eq!(
                    (command.as_str(), class.as_str(), desc.as_str()),
                    ("cont", "GenericError", "no way")
                );
            }
            other => panic!("expected a command error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn eof_fails_pending_calls_and_later_calls() {
        let (_dir, qmp, mut fake) = connected().await;
        let closed = qmp.closed();
        let server = async move {
            fake.expect("query-status").await;
            fake.expect("stop").await;
            drop(fake);
        };
        let ((status, stop), ()) = tokio::join!(
            async { tokio::join!(qmp.query_status(), qmp.stop()) },
            server
        );
        assert!(matches!(status, Err(QmpError::Closed)), "{status:?}");
        assert!(matches!(stop, Err(QmpError::Closed)), "{stop:?}");
        tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("closed() resolves on eof");
        assert!(qmp.is_closed());
        assert!(matches!(qmp.cont().await, Err(QmpError::Closed)));
    }

    #[tokio::test]
    async fn events_before_eof_reach_subscribers_before_closed() {
        let (_dir, qmp, mut fake) = connected().await;
        let mut events = qmp.events();
        fake.event(
            "SHUTDOWN",
            json!({"guest": true, "reason": "guest-shutdown"}),
        )
        .await;
        drop(fake);
        qmp.closed().await;
        let event = events
            .try_recv()
            .expect("the event is queued before closed");
        assert_eq!(event.event, "SHUTDOWN");
        assert_eq!(event.data["guest"], true);
    }

    #[tokio::test]
    async fn timeout_then_late_reply_is_ignored() {
        let (_dir, qmp, mut fake) = connected().await;
        let after = Duration::from_millis(200);
        let (result, late_id) = tokio::join!(
            qmp.execute_with_timeout("query-status", Value::Null, after),
            fake.expect("query-status")
        );
        match result {
            Err(QmpError::Timeout {
                command,
                after: got,
            }) => {
                assert_eq!(command, "query-status");
                assert_eq!(got, after);
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        let server = async {
            let id = fake.expect("stop").await;
            fake.send(json!({"return": {"late": true}, "id": late_id}))
                .await;
            fake.send(json!({"return": {}, "id": id})).await;
        };
        let (stop, ()) = tokio::join!(qmp.stop(), server);
        stop.expect("the connection still works after a timeout");
    }

    #[tokio::test]
    async fn quit_succeeds_when_qemu_exits_before_replying() {
        let (_dir, qmp, mut fake) = connected().await;
        let server = async move {
            fake.expect("quit").await;
            fake.event(
                "SHUTDOWN",
                json!({"guest": false, "reason": "host-qmp-quit"}),
            )
            .await;
            drop(fake);
        };
        let (quit, ()) = tokio::join!(qmp.quit(), server);
        quit.expect("eof after quit is success");
    }

    #[tokio::test]
    async fn dropping_the_last_handle_closes_the_socket() {
        let (_dir, qmp, mut fake) = connected().await;
        let clone = qmp.clone();
        drop(qmp);
        drop(clone);
        let next = tokio::time::timeout(Duration::from_secs(5), fake.lines.next_line())
            .await
            .expect("eof comes promptly")
            .expect("read");
        assert_eq!(next, None);
    }

    #[tokio::test]
    async fn connect_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nothing.sock");
        assert!(matches!(
            Qmp::connect(&missing).await,
            Err(QmpError::Connect { path, .. }) if path == missing
        ));

        let (_dir, path, listener) = listen();
        let server = async {
            let (mut stream, _) = listener.accept().await.expect("accept");
            stream.write_all(b"hello\r\n").await.expect("write");
            stream
        };
        let (result, _stream) = tokio::join!(Qmp::connect(&path), server);
        assert!(matches!(result, Err(QmpError::Protocol(_))), "{result:?}");

        // A server that accepts but never greets (a monitor busy with another client).
        let (_dir, path, _listener) = listen();
        let options = ConnectOptions {
            connect_timeout: Duration::from_millis(200),
            ..ConnectOptions::default()
        };
        let result = Qmp::connect_with(&path, options).await;
        assert!(
            matches!(result, Err(QmpError::Connect { .. })),
            "{result:?}"
        );
    }
}
