//! A live QEMU process: [`QemuVm`] drives it over QMP, and a watcher task turns QMP events and the
//! end of the QMP connection into [`VmEvent`]s.

use async_trait::async_trait;
use drover_qmp::{Qmp, QmpError, QmpEvent};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{VmFiles, process};
use crate::{CheckpointOp, DriverError, RunStatus, RunningVm, VmEvent};

/// How long QEMU gets to exit after `quit`, or after its monitor connection ended.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// How long the guest gets to release a hot-unplugged device (ACPI eject under TCG is slow).
const UNPLUG_TIMEOUT: Duration = Duration::from_secs(30);

/// One running QEMU, owned by the agent's actor for the VM. Dropping it detaches: QEMU keeps
/// running, the QMP connection closes and the event channel closes without [`VmEvent::Exited`],
/// so a later [`crate::VmDriver::recover`] can attach again.
pub struct QemuVm {
    // First field: dropped first, so the watcher stops before it could mistake our own
    // disconnect for QEMU's exit.
    _detach: oneshot::Sender<()>,
    qmp: Qmp,
    pid: Pid,
    files: VmFiles,
    /// Set before we end the process ourselves, so its exit counts as clean.
    stopping: Arc<AtomicBool>,
    /// The vCPU stop and restart around a checkpoint or a save, which are no news.
    own_pause: OwnPause,
    events: Option<mpsc::Receiver<VmEvent>>,
}

/// A STOP and a RESUME that we cause ourselves and the watcher swallows, once each.
#[derive(Debug, Clone, Default)]
struct OwnPause {
    stop: Arc<AtomicBool>,
    resume: Arc<AtomicBool>,
}

impl OwnPause {
    fn expect(&self, running: bool) {
        self.stop.store(running, Ordering::SeqCst);
        self.resume.store(running, Ordering::SeqCst);
    }

    /// Whether the event `name` is one we announced (and now no longer expect).
    fn swallow(&self, name: &str) -> bool {
        match name {
            "STOP" => self.stop.swap(false, Ordering::SeqCst),
            "RESUME" => self.resume.swap(false, Ordering::SeqCst),
            _ => false,
        }
    }
}

impl std::fmt::Debug for QemuVm {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("QemuVm")
            .field("pid", &self.pid)
            .field("dir", &self.files.dir())
            .finish_non_exhaustive()
    }
}

impl QemuVm {
    /// Starts watching `qmp`'s events. `skip_first_resume` drops the RESUME of the `cont` that
    /// starts a VM launched with `-S`: the VM was never seen paused, so it is no news.
    pub(crate) fn attach(qmp: Qmp, pid: Pid, files: VmFiles, skip_first_resume: bool) -> Self {
        let (event_sender, event_receiver) = mpsc::channel(64);
        let (detach, detached) = oneshot::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let own_pause = OwnPause::default();
        let watcher = Watcher {
            pid,
            files: files.clone(),
            stopping: stopping.clone(),
            own_pause: own_pause.clone(),
            sender: event_sender,
            skip_resume: skip_first_resume,
            shutdown_reason: None,
        };
        let run = watcher.run(qmp.events(), qmp.closed());
        tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = detached => {}
                () = run => {}
            }
        });
        Self {
            _detach: detach,
            qmp,
            pid,
            files,
            stopping,
            own_pause,
            events: Some(event_receiver),
        }
    }

    async fn is_running(&self) -> Result<bool, DriverError> {
        self.qmp
            .query_status()
            .await
            .map(|status| status.running)
            .map_err(|error| Self::monitor_error("query-status", error))
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub fn qmp(&self) -> &Qmp {
        &self.qmp
    }

    fn monitor_error(command: &str, error: QmpError) -> DriverError {
        match error {
            QmpError::Closed => DriverError::NotRunning,
            source => DriverError::Monitor {
                command: command.to_string(),
                source,
            },
        }
    }
}

#[async_trait]
impl RunningVm for QemuVm {
    async fn status(&mut self) -> Result<RunStatus, DriverError> {
        let status = self
            .qmp
            .query_status()
            .await
            .map_err(|error| Self::monitor_error("query-status", error))?;
        Ok(if status.running {
            RunStatus::Running
        } else {
            RunStatus::Paused
        })
    }

    async fn pause(&mut self) -> Result<(), DriverError> {
        self.qmp
            .stop()
            .await
            .map_err(|error| Self::monitor_error("stop", error))
    }

    async fn resume(&mut self) -> Result<(), DriverError> {
        self.qmp
            .cont()
            .await
            .map_err(|error| Self::monitor_error("cont", error))
    }

    async fn reset(&mut self) -> Result<(), DriverError> {
        self.qmp
            .system_reset()
            .await
            .map_err(|error| Self::monitor_error("system_reset", error))
    }

    async fn power_down(&mut self) -> Result<(), DriverError> {
        self.qmp
            .system_powerdown()
            .await
            .map_err(|error| Self::monitor_error("system_powerdown", error))
    }

    async fn kill(&mut self) -> Result<(), DriverError> {
        self.stopping.store(true, Ordering::SeqCst);
        if !process::is_alive(self.pid) {
            return Ok(());
        }
        if let Err(error) = self.qmp.quit().await {
            // SIGKILL below still ends it.
            tracing::warn!(pid = %self.pid, %error, "qmp quit failed");
        }
        if process::wait_gone(self.pid, EXIT_GRACE).await
            || process::end(self.pid, Signal::SIGKILL, EXIT_GRACE).await
        {
            super::remove_runtime_files(&self.files);
            Ok(())
        } else {
            Err(DriverError::Command {
                program: "kill".into(),
                output: format!("QEMU (pid {}) survived SIGKILL", self.pid),
            })
        }
    }

    async fn add_port_forward(
        &mut self,
        nic: &str,
        forward: &drover_api::PortForward,
    ) -> Result<(), DriverError> {
        let rule = super::command_line::hostfwd_rule(forward);
        self.qmp
            .hostfwd_add(&super::command_line::netdev_id(nic), &rule)
            .await
            .map_err(|error| match error {
                // QEMU's own words say why (most often: the host port is taken).
                QmpError::Command { desc, .. } => {
                    DriverError::Unsupported(format!("cannot forward {forward}: {desc}"))
                }
                other => Self::monitor_error("hostfwd_add", other),
            })
    }

    async fn remove_port_forward(
        &mut self,
        nic: &str,
        forward: &drover_api::PortForward,
    ) -> Result<(), DriverError> {
        let source = super::command_line::hostfwd_source(forward);
        self.qmp
            .hostfwd_remove(&super::command_line::netdev_id(nic), &source)
            .await
            .map_err(|error| match error {
                QmpError::Command { desc, .. } => {
                    DriverError::Unsupported(format!("cannot stop forwarding {forward}: {desc}"))
                }
                other => Self::monitor_error("hostfwd_remove", other),
            })
    }

    async fn add_nic(&mut self, nic: &drover_api::agent::AgentNic) -> Result<(), DriverError> {
        use super::command_line::{device_arguments, netdev_arguments, netdev_id};
        self.qmp
            .netdev_add(netdev_arguments(nic))
            .await
            .map_err(|error| Self::monitor_error("netdev_add", error))?;
        if let Err(error) = self.qmp.device_add(device_arguments(nic)).await {
            // Leave no backend without its device.
            let _ = self.qmp.netdev_del(&netdev_id(&nic.name)).await;
            return Err(Self::monitor_error("device_add", error));
        }
        Ok(())
    }

    async fn change_cdrom(&mut self, iso: Option<&Path>) -> Result<(), DriverError> {
        let device = drover_api::cdrom::CDROM_DEVICE;
        let (command, arguments) = match iso {
            Some(path) => (
                "blockdev-change-medium",
                serde_json::json!({
                    "id": device, "filename": path, "format": "raw",
                    "read-only-mode": "read-only", "force": true,
                }),
            ),
            // `force`: the guest may have locked the tray (a mounted ISO); the user's eject wins.
            None => ("eject", serde_json::json!({ "id": device, "force": true })),
        };
        self.qmp
            .execute(command, arguments)
            .await
            .map(drop)
            .map_err(|error| Self::monitor_error(command, error))
    }

    async fn remove_nic(&mut self, name: &str) -> Result<(), DriverError> {
        // Subscribed before asking, so the event cannot come first and be missed.
        let mut events = self.qmp.events();
        self.qmp
            .device_del(name)
            .await
            .map_err(|error| Self::monitor_error("device_del", error))?;
        let deleted = async {
            loop {
                match events.recv().await {
                    Ok(event)
                        if event.event == "DEVICE_DELETED"
                            && event.data["device"].as_str() == Some(name) =>
                    {
                        return true;
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return false,
                }
            }
        };
        match tokio::time::timeout(UNPLUG_TIMEOUT, deleted).await {
            Ok(true) => {}
            Ok(false) => return Err(DriverError::NotRunning),
            Err(_) => {
                return Err(DriverError::Unsupported(format!(
                    "the guest did not release NIC {name} within {UNPLUG_TIMEOUT:?} (it needs ACPI PCI hotplug)"
                )));
            }
        }
        self.qmp
            .netdev_del(&super::command_line::netdev_id(name))
            .await
            .map_err(|error| Self::monitor_error("netdev_del", error))
    }

    async fn save(&mut self) -> Result<(), DriverError> {
        let was_running = self.is_running().await?;
        self.own_pause.expect(was_running);
        if was_running {
            self.pause().await?;
        }
        if let Err(error) = super::saved_state::write(&self.qmp, &self.files).await {
            if was_running {
                // The guest goes on as if nothing happened.
                let _ = self.resume().await;
            }
            return Err(error);
        }
        self.kill().await
    }

    async fn checkpoint(&mut self, op: CheckpointOp, tag: &str) -> Result<(), DriverError> {
        let was_running = self.is_running().await?;
        // A delete leaves the vCPUs alone; a save or a load stops them for its duration.
        self.own_pause
            .expect(was_running && op != CheckpointOp::Delete);
        let outcome = super::snapshot::online(&self.qmp, op, tag).await;
        if outcome.is_err() && !self.is_running().await.unwrap_or(false) {
            // A failed load leaves the vCPUs stopped: a later RESUME is news again.
            self.own_pause.resume.store(false, Ordering::SeqCst);
        }
        outcome
    }

    fn take_events(&mut self) -> Option<mpsc::Receiver<VmEvent>> {
        self.events.take()
    }

    fn serial_socket(&self) -> PathBuf {
        self.files.serial_socket()
    }

    fn migration(&self) -> Option<super::migration::Monitor> {
        Some(super::migration::Monitor::new(self.qmp.clone()))
    }
}

/// Turns QMP events into [`VmEvent`]s and reports the exit.
struct Watcher {
    pid: Pid,
    files: VmFiles,
    stopping: Arc<AtomicBool>,
    own_pause: OwnPause,
    sender: mpsc::Sender<VmEvent>,
    skip_resume: bool,
    /// QEMU's reason from the SHUTDOWN event, once one came.
    shutdown_reason: Option<String>,
}

impl Watcher {
    async fn run(
        mut self,
        mut events: broadcast::Receiver<QmpEvent>,
        closed: impl Future<Output = ()>,
    ) {
        tokio::pin!(closed);
        loop {
            tokio::select! {
                // Events first: those that came before the end must be reported before Exited.
                biased;
                received = events.recv() => match received {
                    Ok(event) => self.on_event(event).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(pid = %self.pid, missed, "qmp events lost");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                () = &mut closed => {
                    loop {
                        match events.try_recv() {
                            Ok(event) => self.on_event(event).await,
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                            Err(_) => break,
                        }
                    }
                    break;
                }
            }
        }
        let exited = self.exit().await;
        // QEMU removes its sockets and pid file only when it exits normally; a killed one leaves
        // them. Gone before Exited is sent, so a start right after sees a clean directory.
        super::remove_runtime_files(&self.files);
        let _ = self.sender.send(exited).await;
    }

    async fn on_event(&mut self, event: QmpEvent) {
        if self.own_pause.swallow(&event.event) {
            return;
        }
        let vm_event = match event.event.as_str() {
            "STOP" => VmEvent::Paused,
            "RESUME" if std::mem::take(&mut self.skip_resume) => return,
            "RESUME" => VmEvent::Resumed,
            "SHUTDOWN" => {
                let reason = event.data["reason"].as_str().unwrap_or("shutdown");
                self.shutdown_reason = Some(reason.to_string());
                VmEvent::ShutdownRequested {
                    by_guest: event.data["guest"].as_bool().unwrap_or(false),
                }
            }
            _ => return,
        };
        let _ = self.sender.send(vm_event).await;
    }

    /// The QMP connection ended: QEMU exits (or died). Confirms the process is gone.
    async fn exit(&mut self) -> VmEvent {
        let gone = process::wait_gone(self.pid, EXIT_GRACE).await;
        if !gone {
            // A QEMU without its monitor cannot be driven any more; end it rather than leave
            // an unmanaged VM behind.
            tracing::warn!(pid = %self.pid, "qmp connection ended but qemu still runs; killing it");
            process::end(self.pid, Signal::SIGKILL, EXIT_GRACE).await;
            return VmEvent::Exited {
                clean: false,
                reason: "the monitor connection was lost; QEMU was killed".into(),
            };
        }
        if let Some(reason) = self.shutdown_reason.take() {
            return VmEvent::Exited {
                clean: true,
                reason,
            };
        }
        if self.stopping.load(Ordering::SeqCst) {
            return VmEvent::Exited {
                clean: true,
                reason: "stopped by the agent".into(),
            };
        }
        VmEvent::Exited {
            clean: false,
            reason: "QEMU exited without a shutdown request".into(),
        }
    }
}
