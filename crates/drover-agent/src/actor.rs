//! One actor (a tokio task) per VM: it alone owns the VM's process handle and state, runs the
//! power actions one at a time, turns the driver's events into state changes and publishes
//! every change at once. Others hold a [`VmHandle`]: a command channel and a read-only view of
//! the latest state. Not here: which VMs exist (see `registry`) and HTTP.

mod cdrom;
mod checkpoint;

use crate::error::AgentError;
use crate::network::Networks;
use crate::store::{self, StoreError};
use drover_api::agent::{AgentNic, AgentVmSpec, VmRuntime};
use drover_api::network::PortProtocol;
use drover_api::{PortForward, VmAction, VmId, VmState};
use drover_hv::qemu::migration::Monitor;
use drover_hv::{DriverError, RunStatus, RunningVm, StartFrom, VmDriver, VmEvent};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long `shutdown` waits for the guest to power off after the ACPI button.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// Commands waiting for an actor that is busy (a shutdown can take a while) queue here.
const COMMAND_QUEUE: usize = 32;

enum Command {
    Act {
        action: VmAction,
        reply: oneshot::Sender<Result<VmRuntime, AgentError>>,
    },
    /// Adds a port forward to the spec, and to the process when one runs.
    AddPortForward {
        forward: PortForward,
        reply: oneshot::Sender<Result<(), AgentError>>,
    },
    /// Removes the forward of a host port from the spec, and from the process when one runs.
    RemovePortForward {
        protocol: PortProtocol,
        host_port: u16,
        reply: oneshot::Sender<Result<(), AgentError>>,
    },
    /// Adds a NIC to the spec, hot-plugged when the VM runs.
    AddNic {
        nic: AgentNic,
        reply: oneshot::Sender<Result<(), AgentError>>,
    },
    /// Removes a NIC from the spec, hot-unplugged when the VM runs.
    RemoveNic {
        name: String,
        reply: oneshot::Sender<Result<(), AgentError>>,
    },
    /// Opens a console session, ending the previous one: QEMU serves one client at a time.
    OpenConsole {
        reply: oneshot::Sender<Result<ConsoleSession, AgentError>>,
    },
    /// End the process, remove the VM's files and stop the actor.
    Destroy {
        reply: oneshot::Sender<Result<(), AgentError>>,
    },
    /// The agent is stopping: let go of the process (it keeps running) and stop the actor.
    Detach,
    /// Creates, restores or deletes a checkpoint (see `checkpoint`).
    Checkpoint {
        op: drover_hv::CheckpointOp,
        tag: String,
        reply: oneshot::Sender<Result<drover_api::checkpoint::AgentCheckpointDone, AgentError>>,
    },
    /// A live migration begins: the VM becomes Migrating and the migration gets the controls.
    StartMigration {
        reply: oneshot::Sender<Result<Monitor, AgentError>>,
    },
    /// A live migration ended with the guest still here: the VM runs again.
    EndMigration,
    /// Changes the medium in the CD-ROM drive (see `cdrom`).
    ChangeCdrom {
        cdrom: drover_api::cdrom::VmCdrom,
        reply: oneshot::Sender<Result<(), AgentError>>,
    },
}

/// The right to use a VM's serial console until `ended` is cancelled (by a newer session, the
/// VM's deletion or the agent's shutdown).
pub struct ConsoleSession {
    pub serial_socket: PathBuf,
    pub ended: CancellationToken,
}

/// How the rest of the agent reaches one VM's actor.
#[derive(Clone)]
pub struct VmHandle {
    vm_id: VmId,
    /// The spec as of its last change (changes come through the actor: port forwards, NICs); a
    /// define with another spec is refused.
    spec: watch::Receiver<AgentVmSpec>,
    commands: mpsc::Sender<Command>,
    runtime: watch::Receiver<VmRuntime>,
}

impl VmHandle {
    /// The VM's state as of its last change; never waits for a busy actor.
    pub fn runtime(&self) -> VmRuntime {
        self.runtime.borrow().clone()
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, AgentError> {
        let (reply, answer) = oneshot::channel();
        // A closed channel means the actor ended: the VM was deleted meanwhile.
        let gone = || AgentError::VmNotFound(self.vm_id);
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }

    /// Runs a power action; answers once it is done, with the state it left.
    pub async fn act(&self, action: VmAction) -> Result<VmRuntime, AgentError> {
        self.request(|reply| Command::Act { action, reply }).await?
    }

    pub fn spec(&self) -> AgentVmSpec {
        self.spec.borrow().clone()
    }

    /// Forwards `127.0.0.1:host_port` to the guest; kept across restarts of the VM.
    pub async fn add_port_forward(&self, forward: PortForward) -> Result<(), AgentError> {
        self.request(|reply| Command::AddPortForward { forward, reply })
            .await?
    }

    /// Stops forwarding `127.0.0.1:host_port` (idempotent); at once when the VM runs.
    pub async fn remove_port_forward(
        &self,
        protocol: PortProtocol,
        host_port: u16,
    ) -> Result<(), AgentError> {
        self.request(|reply| Command::RemovePortForward {
            protocol,
            host_port,
            reply,
        })
        .await?
    }

    /// Adds a NIC (idempotent); plugged in at once when the VM runs.
    pub async fn add_nic(&self, nic: AgentNic) -> Result<(), AgentError> {
        self.request(|reply| Command::AddNic { nic, reply }).await?
    }

    /// Removes the NIC `name` (idempotent); unplugged at once when the VM runs.
    pub async fn remove_nic(&self, name: String) -> Result<(), AgentError> {
        self.request(|reply| Command::RemoveNic { name, reply })
            .await?
    }

    /// A session on the guest's serial console, while the VM runs.
    pub async fn open_console(&self) -> Result<ConsoleSession, AgentError> {
        self.request(|reply| Command::OpenConsole { reply }).await?
    }

    pub async fn destroy(&self) -> Result<(), AgentError> {
        self.request(|reply| Command::Destroy { reply }).await?
    }

    /// Marks the VM Migrating and hands out its migration controls; only a running VM moves.
    pub async fn start_migration(&self) -> Result<Monitor, AgentError> {
        self.request(|reply| Command::StartMigration { reply })
            .await?
    }

    /// The migration ended and the guest runs here again.
    pub async fn end_migration(&self) {
        // An ended actor has nothing left to mark.
        let _ = self.commands.send(Command::EndMigration).await;
    }

    /// Asks the actor to stop without touching the VM; returns at once.
    pub fn detach(&self) {
        // A full queue or an ended actor both mean it will stop on its own soon.
        let _ = self.commands.try_send(Command::Detach);
    }
}

/// Everything an actor starts from: a defined VM and, when re-adopted, its live process.
pub struct VmSetup {
    pub spec: AgentVmSpec,
    pub vm_dir: PathBuf,
    pub driver: Arc<dyn VmDriver>,
    pub networks: Arc<Networks>,
    pub process: Option<Box<dyn RunningVm>>,
    pub runtime: VmRuntime,
    pub changes: broadcast::Sender<VmRuntime>,
}

/// Makes the actor for `setup`; the caller spawns the returned future.
pub fn actor(setup: VmSetup) -> (VmHandle, impl Future<Output = ()> + Send + 'static) {
    let (commands_sender, commands) = mpsc::channel(COMMAND_QUEUE);
    let (runtime_sender, runtime) = watch::channel(setup.runtime.clone());
    let (spec_sender, spec) = watch::channel(setup.spec.clone());
    let vm_id = setup.spec.id;
    let mut process = setup.process;
    let vm_events = process.as_mut().and_then(|process| process.take_events());
    let handle = VmHandle {
        vm_id,
        spec,
        commands: commands_sender,
        runtime,
    };
    let actor = VmActor {
        spec: setup.spec,
        published_spec: spec_sender,
        vm_dir: setup.vm_dir,
        driver: setup.driver,
        networks: setup.networks,
        process,
        vm_events,
        runtime: runtime_sender,
        changes: setup.changes,
        console_session: CancellationToken::new(),
    };
    let span = tracing::info_span!("vm", vm_id = %vm_id);
    (handle, actor.run(commands).instrument(span))
}

struct VmActor {
    spec: AgentVmSpec,
    published_spec: watch::Sender<AgentVmSpec>,
    vm_dir: PathBuf,
    driver: Arc<dyn VmDriver>,
    networks: Arc<Networks>,
    process: Option<Box<dyn RunningVm>>,
    vm_events: Option<mpsc::Receiver<VmEvent>>,
    runtime: watch::Sender<VmRuntime>,
    changes: broadcast::Sender<VmRuntime>,
    console_session: CancellationToken,
}

/// The next event of the VM's process; never resolves when there is no process.
async fn next_vm_event(events: &mut Option<mpsc::Receiver<VmEvent>>) -> Option<VmEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

impl VmActor {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None | Some(Command::Detach) => break,
                    Some(Command::Destroy { reply }) => {
                        let _ = reply.send(self.destroy().await);
                        break;
                    }
                    Some(Command::Act { action, reply }) => {
                        let _ = reply.send(self.act(action).await);
                    }
                    Some(Command::AddPortForward { forward, reply }) => {
                        let _ = reply.send(self.add_port_forward(forward).await);
                    }
                    Some(Command::RemovePortForward { protocol, host_port, reply }) => {
                        let _ = reply.send(self.remove_port_forward(protocol, host_port).await);
                    }
                    Some(Command::AddNic { nic, reply }) => {
                        let _ = reply.send(self.add_nic(nic).await);
                    }
                    Some(Command::RemoveNic { name, reply }) => {
                        let _ = reply.send(self.remove_nic(&name).await);
                    }
                    Some(Command::OpenConsole { reply }) => {
                        let _ = reply.send(self.open_console());
                    }
                    Some(Command::Checkpoint { op, tag, reply }) => {
                        let _ = reply.send(self.checkpoint(op, &tag).await);
                    }
                    Some(Command::StartMigration { reply }) => {
                        let _ = reply.send(self.start_migration());
                    }
                    Some(Command::ChangeCdrom { cdrom, reply }) => {
                        let _ = reply.send(self.change_cdrom(cdrom).await);
                    }
                    Some(Command::EndMigration) => {
                        if self.state() == VmState::Migrating {
                            self.set_state(VmState::Running, None);
                        }
                    }
                },
                event = next_vm_event(&mut self.vm_events) => self.on_vm_event(event),
            }
        }
    }

    fn vm_id(&self) -> VmId {
        self.spec.id
    }

    fn state(&self) -> VmState {
        self.runtime.borrow().state
    }

    /// Records, persists and publishes a new state; an unchanged state publishes nothing.
    fn set_state(&mut self, state: VmState, reason: Option<String>) {
        let runtime = VmRuntime {
            vm_id: self.vm_id(),
            state,
            reason,
        };
        if *self.runtime.borrow() == runtime {
            return;
        }
        if let Err(error) = store::save_state(&self.vm_dir, &runtime) {
            tracing::warn!(error = ?anyhow::Error::from(error), "cannot save state.json");
        }
        tracing::info!(state = %state, reason = ?runtime.reason, "VM state changed");
        self.runtime.send_replace(runtime.clone());
        // Nobody listening is fine: the next snapshot carries the state.
        let _ = self.changes.send(runtime);
    }

    fn lose_process(&mut self) {
        self.process = None;
        self.vm_events = None;
    }

    fn on_vm_event(&mut self, event: Option<VmEvent>) {
        let state = self.state();
        match event {
            Some(VmEvent::Paused) if state == VmState::Running => {
                self.set_state(VmState::Paused, None);
            }
            Some(VmEvent::Resumed) if state == VmState::Paused => {
                self.set_state(VmState::Running, None);
            }
            Some(VmEvent::ShutdownRequested { .. }) if state.has_process() => {
                self.set_state(VmState::Stopping, None);
            }
            Some(VmEvent::Exited { clean, reason }) => {
                self.lose_process();
                if clean {
                    self.set_state(VmState::Stopped, None);
                } else {
                    self.set_state(VmState::Failed, Some(reason));
                }
            }
            Some(_) => {}
            None => {
                self.lose_process();
                self.set_state(
                    VmState::Failed,
                    Some("the agent lost contact with the VM process".to_owned()),
                );
            }
        }
    }

    fn conflict(&self, action: VmAction) -> AgentError {
        AgentError::VmStateConflict {
            vm_id: self.vm_id(),
            action,
            state: self.state(),
        }
    }

    fn not_running(&self) -> AgentError {
        AgentError::VmNotRunning {
            vm_id: self.vm_id(),
            state: self.state(),
        }
    }

    /// The live process, when the state says there is one.
    fn process(&mut self) -> Result<&mut Box<dyn RunningVm>, AgentError> {
        let error = self.not_running();
        self.process.as_mut().ok_or(error)
    }

    fn driver_error(&self, error: DriverError) -> AgentError {
        match error {
            // The process died under us; its Exited event tells the rest.
            DriverError::NotRunning => self.not_running(),
            other => other.into(),
        }
    }

    async fn act(&mut self, action: VmAction) -> Result<VmRuntime, AgentError> {
        let state = self.state();
        let result = match (action, state) {
            (VmAction::Start, VmState::Stopped | VmState::Failed) => self.start(None).await,
            (VmAction::Start, VmState::Saved) => self.start(Some(StartFrom::SavedState)).await,
            (VmAction::Stop, VmState::Saved) => self.discard_saved_state().await,
            (VmAction::Save, VmState::Running | VmState::Paused) => self.save().await,
            (VmAction::Stop, VmState::Running | VmState::Paused | VmState::Stopping) => {
                self.kill().await
            }
            (VmAction::Shutdown, VmState::Running) => self.shutdown().await,
            (VmAction::Pause, VmState::Running) => self.pause().await,
            (VmAction::Resume, VmState::Paused) => self.resume().await,
            (VmAction::Restart, VmState::Running) => self.reset().await,
            _ => Err(self.conflict(action)),
        };
        result.map(|()| self.runtime.borrow().clone())
    }

    /// Boots the VM, or continues it from a saved state or a checkpoint.
    async fn start(&mut self, from: Option<StartFrom>) -> Result<(), AgentError> {
        let before = self.runtime.borrow().clone();
        // The taps must exist, each on its bridge, before QEMU opens them.
        self.networks.plug(self.spec.clone()).await?;
        self.set_state(VmState::Starting, None);
        let started = match from {
            None => self.driver.start(&self.spec, &self.vm_dir).await,
            Some(from) => self.driver.start_from(&self.spec, &self.vm_dir, from).await,
        };
        match started {
            Ok(mut process) => {
                self.vm_events = process.take_events();
                self.process = Some(process);
                self.set_state(VmState::Running, None);
                Ok(())
            }
            Err(error) => {
                // Nothing ran, so the VM is as it was.
                self.set_state(before.state, before.reason);
                Err(error.into())
            }
        }
    }

    async fn kill(&mut self) -> Result<(), AgentError> {
        match self.process()?.kill().await {
            Ok(()) | Err(DriverError::NotRunning) => {}
            Err(error) => return Err(self.driver_error(error)),
        }
        self.lose_process();
        self.set_state(VmState::Stopped, None);
        Ok(())
    }

    async fn shutdown(&mut self) -> Result<(), AgentError> {
        if let Err(error) = self.process()?.power_down().await {
            return Err(self.driver_error(error));
        }
        self.set_state(VmState::Stopping, None);
        let deadline = tokio::time::sleep(SHUTDOWN_TIMEOUT);
        tokio::pin!(deadline);
        while self.state().has_process() {
            tokio::select! {
                event = next_vm_event(&mut self.vm_events) => self.on_vm_event(event),
                () = &mut deadline => {
                    // The guest ignored the button and still runs.
                    self.set_state(VmState::Running, None);
                    return Err(AgentError::ShutdownTimeout {
                        vm_id: self.vm_id(),
                        after: SHUTDOWN_TIMEOUT,
                    });
                }
            }
        }
        match self.state() {
            VmState::Failed => Err(AgentError::Internal(anyhow::anyhow!(
                "the VM process died during the shutdown"
            ))),
            _ => Ok(()),
        }
    }

    async fn pause(&mut self) -> Result<(), AgentError> {
        if let Err(error) = self.process()?.pause().await {
            return Err(self.driver_error(error));
        }
        self.set_state(VmState::Paused, None);
        Ok(())
    }

    async fn resume(&mut self) -> Result<(), AgentError> {
        if let Err(error) = self.process()?.resume().await {
            return Err(self.driver_error(error));
        }
        self.set_state(VmState::Running, None);
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), AgentError> {
        if let Err(error) = self.process()?.reset().await {
            return Err(self.driver_error(error));
        }
        self.set_state(VmState::Running, None);
        Ok(())
    }

    /// Saves a changed spec (so a restarted agent and the next start use it) and shows it.
    fn set_spec(&mut self, spec: AgentVmSpec) -> Result<(), AgentError> {
        store::save_spec(&self.vm_dir, &spec).map_err(internal)?;
        self.spec = spec.clone();
        self.published_spec.send_replace(spec);
        Ok(())
    }

    async fn add_port_forward(&mut self, forward: PortForward) -> Result<(), AgentError> {
        if self.spec.port_forwards.contains(&forward) {
            return Ok(());
        }
        let Some(nic) = self.spec.user_nic().map(|nic| nic.name.clone()) else {
            return Err(AgentError::VmSpecInvalid(format!(
                "VM {} has no user-mode NIC to forward ports through",
                self.vm_id()
            )));
        };
        if let Some(taken) = self
            .spec
            .port_forwards
            .iter()
            .find(|existing| existing.same_host_socket(&forward))
        {
            return Err(AgentError::VmSpecInvalid(format!(
                "host port {} already forwards to guest port {}",
                taken.host_port, taken.guest_port
            )));
        }
        if let Some(process) = self.process.as_mut()
            && let Err(error) = process.add_port_forward(&nic, &forward).await
        {
            return Err(self.driver_error(error));
        }
        let mut spec = self.spec.clone();
        spec.port_forwards.push(forward);
        self.set_spec(spec)
    }

    async fn remove_port_forward(
        &mut self,
        protocol: PortProtocol,
        host_port: u16,
    ) -> Result<(), AgentError> {
        let Some(forward) = self
            .spec
            .port_forwards
            .iter()
            .find(|forward| forward.protocol == protocol && forward.host_port == host_port)
            .copied()
        else {
            return Ok(());
        };
        if let Some(nic) = self.spec.user_nic().map(|nic| nic.name.clone())
            && let Some(process) = self.process.as_mut()
            && let Err(error) = process.remove_port_forward(&nic, &forward).await
        {
            return Err(self.driver_error(error));
        }
        let mut spec = self.spec.clone();
        spec.port_forwards.retain(|kept| *kept != forward);
        self.set_spec(spec)
    }

    /// The spec with `nic` alone, to plug or unplug just that NIC's tap and lease.
    fn only(&self, nic: AgentNic) -> AgentVmSpec {
        AgentVmSpec {
            nics: vec![nic],
            ..self.spec.clone()
        }
    }

    async fn add_nic(&mut self, nic: AgentNic) -> Result<(), AgentError> {
        if let Some(existing) = self.spec.nics.iter().find(|known| known.name == nic.name) {
            return if *existing == nic {
                Ok(())
            } else {
                Err(AgentError::VmSpecInvalid(format!(
                    "VM {} already has a different NIC named {}",
                    self.vm_id(),
                    nic.name
                )))
            };
        }
        let mut spec = self.spec.clone();
        spec.nics.push(nic.clone());
        if self.process.is_some() {
            self.networks.plug(self.only(nic.clone())).await?;
            let plugged = match self.process.as_mut() {
                Some(process) => process.add_nic(&nic).await,
                None => Ok(()),
            };
            if let Err(error) = plugged {
                self.networks.unplug(self.only(nic)).await;
                return Err(self.driver_error(error));
            }
        }
        self.set_spec(spec)?;
        self.networks.add_leases(self.only(nic)).await;
        Ok(())
    }

    async fn remove_nic(&mut self, name: &str) -> Result<(), AgentError> {
        let Some(nic) = self.spec.nics.iter().find(|nic| nic.name == name).cloned() else {
            return Ok(());
        };
        if let Some(process) = self.process.as_mut()
            && let Err(error) = process.remove_nic(name).await
        {
            return Err(self.driver_error(error));
        }
        let mut spec = self.spec.clone();
        spec.nics.retain(|known| known.name != name);
        self.set_spec(spec)?;
        self.networks.unplug(self.only(nic)).await;
        Ok(())
    }

    fn start_migration(&mut self) -> Result<Monitor, AgentError> {
        if self.state() != VmState::Running {
            return Err(AgentError::VmNotRunning {
                vm_id: self.vm_id(),
                state: self.state(),
            });
        }
        let monitor = self
            .process
            .as_ref()
            .and_then(|process| process.migration())
            .ok_or_else(|| {
                AgentError::Unsupported("this host's driver cannot live-migrate VMs".into())
            })?;
        self.set_state(VmState::Migrating, None);
        Ok(monitor)
    }

    fn open_console(&mut self) -> Result<ConsoleSession, AgentError> {
        let Some(process) = &self.process else {
            return Err(self.not_running());
        };
        let serial_socket = process.serial_socket();
        // A second client would wait unserved behind the first; the newer one wins instead.
        self.console_session.cancel();
        self.console_session = CancellationToken::new();
        Ok(ConsoleSession {
            serial_socket,
            ended: self.console_session.clone(),
        })
    }

    async fn destroy(&mut self) -> Result<(), AgentError> {
        self.console_session.cancel();
        if let Some(process) = self.process.as_mut() {
            match process.kill().await {
                Ok(()) | Err(DriverError::NotRunning) => {}
                Err(error) => {
                    tracing::warn!(error = ?anyhow::Error::from(error), "kill failed; destroy ends the process")
                }
            }
            self.lose_process();
        }
        self.driver.destroy(&self.vm_dir).await?;
        self.networks.unplug(self.spec.clone()).await;
        store::remove_dir_optional(&self.vm_dir)
            .map_err(|error| AgentError::Internal(error.into()))?;
        tracing::info!("VM deleted");
        Ok(())
    }
}

/// Defines a new VM on disk: its directory, the driver's files and `spec.json`. On error,
/// removes what it made, so that a failed define leaves nothing behind.
pub async fn define(
    driver: &dyn VmDriver,
    spec: &AgentVmSpec,
    vm_dir: &Path,
) -> Result<VmRuntime, AgentError> {
    driver.validate(spec).await?;
    let result = async {
        store::create_private_dir(vm_dir).map_err(internal)?;
        driver.create(spec, vm_dir).await?;
        store::save_spec(vm_dir, spec).map_err(internal)?;
        // A VM moved in with its saved memory (quick migration) continues from it.
        let state = if driver.has_saved_state(vm_dir) {
            VmState::Saved
        } else {
            VmState::Stopped
        };
        let runtime = VmRuntime {
            vm_id: spec.id,
            state,
            reason: None,
        };
        store::save_state(vm_dir, &runtime).map_err(internal)?;
        Ok(runtime)
    }
    .await;
    if result.is_err()
        && let Err(error) = store::remove_dir_optional(vm_dir)
    {
        tracing::warn!(error = ?anyhow::Error::from(error), "cannot undo a failed define");
    }
    result
}

fn internal(error: StoreError) -> AgentError {
    AgentError::Internal(error.into())
}

/// The state of a VM found on disk at start: re-adopted when its process still runs, else
/// Stopped, or Failed when that is the last thing the agent recorded.
pub async fn recover(
    driver: &dyn VmDriver,
    spec: &AgentVmSpec,
    vm_dir: &Path,
    last_state: Option<VmRuntime>,
) -> (Option<Box<dyn RunningVm>>, VmRuntime) {
    let runtime = |state, reason| VmRuntime {
        vm_id: spec.id,
        state,
        reason,
    };
    match driver.recover(spec, vm_dir).await {
        Ok(Some(mut process)) => {
            let state = match process.status().await {
                Ok(RunStatus::Paused) => VmState::Paused,
                Ok(RunStatus::Running) => VmState::Running,
                Err(error) => {
                    tracing::warn!(vm_id = %spec.id, error = ?anyhow::Error::from(error), "re-adopted VM does not answer; assuming it runs");
                    VmState::Running
                }
            };
            tracing::info!(vm_id = %spec.id, state = %state, "re-adopted running VM");
            (Some(process), runtime(state, None))
        }
        Ok(None) if driver.has_saved_state(vm_dir) => (None, runtime(VmState::Saved, None)),
        Ok(None) => match last_state {
            Some(last) if last.state == VmState::Failed => (None, runtime(last.state, last.reason)),
            _ => (None, runtime(VmState::Stopped, None)),
        },
        Err(error) => {
            let reason = format!("the agent could not re-adopt the VM: {error}");
            tracing::warn!(vm_id = %spec.id, error = ?anyhow::Error::from(error), "recover failed");
            (None, runtime(VmState::Failed, Some(reason)))
        }
    }
}
