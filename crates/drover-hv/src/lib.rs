//! The hypervisor seam: [`VmDriver`] defines, starts, re-adopts and destroys VMs on one host, and
//! [`RunningVm`] drives one VM's process. The agent's per-VM actor owns a `Box<dyn RunningVm>`;
//! nothing else talks to the process. The QEMU driver is in [`qemu`]; [`sim`] is a driver without
//! processes for scale benches only. This crate knows nothing of
//! the server, jobs or HTTP.

pub mod qemu;
pub mod revert;
pub mod sim;

use async_trait::async_trait;
use drover_api::Accelerator;
use drover_api::agent::AgentVmSpec;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// What the process of a running VM says happened, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEvent {
    /// The vCPUs stopped (pause, or the start of a shutdown).
    Paused,
    /// The vCPUs run again.
    Resumed,
    /// The guest or the host asked the VM to shut down; the process ends next.
    ShutdownRequested { by_guest: bool },
    /// The process is gone. `clean` is true when a shutdown (by guest, ACPI or hard stop) came
    /// first; false when it died on its own (crash, kill from outside).
    Exited { clean: bool, reason: String },
}

/// What a checkpoint operation does to the VM's disk (and, with a process, its memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointOp {
    Create,
    Restore,
    Delete,
}

/// A checkpoint as the VM's disk holds it (a qcow2 internal snapshot named `tag`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskCheckpoint {
    pub tag: String,
    /// Size of the saved memory and device state; 0 for a checkpoint of a stopped VM.
    pub vm_state_bytes: u64,
}

/// Where a VM's process starts from other than a boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// The state [`RunningVm::save`] wrote; the file is removed once the guest runs again.
    SavedState,
    /// A checkpoint with memory: disk, memory and devices as they were when it was taken.
    Checkpoint(String),
}

/// The vCPU state of a live process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Paused,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A file the spec names (image, kernel, initrd) does not exist or cannot be read.
    #[error("{what} {path} does not exist or cannot be read")]
    MissingFile { what: &'static str, path: PathBuf },
    /// The spec cannot run on this host (for example more vCPUs than the host has).
    #[error("{0}")]
    Unsupported(String),
    /// A helper program (qemu-img, qemu-system) failed; `output` is its stderr.
    #[error("{program} failed: {output}")]
    Command { program: String, output: String },
    #[error("the VM process did not start: {0}")]
    StartFailed(String),
    #[error("the VM process is not running")]
    NotRunning,
    #[error("monitor command {command} failed")]
    Monitor {
        command: String,
        #[source]
        source: drover_qmp::QmpError,
    },
    /// QEMU or qemu-img refused a checkpoint or a save; `reason` has their words.
    #[error("{operation} failed: {reason}")]
    Snapshot { operation: String, reason: String },
    #[error("i/o error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Drives VMs of one kind of hypervisor on this host. Each VM has its own directory (`vm_dir`),
/// made by the agent; the driver keeps everything of the VM in it: disks, sockets, pid file,
/// logs. Every method is safe to call again after a failure or a restart of the agent.
#[async_trait]
pub trait VmDriver: Send + Sync + 'static {
    /// How guests run on this host, found by probing.
    fn accelerator(&self) -> Accelerator;

    /// Checks that `spec` can be defined here (files exist, sizes sane) without changing anything.
    async fn validate(&self, spec: &AgentVmSpec) -> Result<(), DriverError>;

    /// Creates the VM's disk and files in `vm_dir`. On error, leaves `vm_dir` as it found it.
    async fn create(&self, spec: &AgentVmSpec, vm_dir: &Path) -> Result<(), DriverError>;

    /// Starts the VM's process, outside the agent's process tree so that it outlives the agent.
    /// Returns once the guest runs. On error, no process is left behind.
    async fn start(
        &self,
        spec: &AgentVmSpec,
        vm_dir: &Path,
    ) -> Result<Box<dyn RunningVm>, DriverError>;

    /// Starts the VM's process waiting for a live migration from another host
    /// ([`qemu::migration`]): its disk exported empty, the guest paused until the migration
    /// resumes it. On error, no process is left behind.
    async fn start_incoming(
        &self,
        _spec: &AgentVmSpec,
        _vm_dir: &Path,
        _incoming: &qemu::migration::Incoming,
    ) -> Result<Box<dyn RunningVm>, DriverError> {
        Err(DriverError::Unsupported(
            "this host's driver cannot receive live migrations".into(),
        ))
    }

    /// Re-attaches to the VM's process after an agent restart; `None` when no process runs.
    async fn recover(
        &self,
        spec: &AgentVmSpec,
        vm_dir: &Path,
    ) -> Result<Option<Box<dyn RunningVm>>, DriverError>;

    /// Ends the VM's process if any and removes everything in `vm_dir`.
    async fn destroy(&self, vm_dir: &Path) -> Result<(), DriverError>;

    /// Starts the VM's process from a saved state or a checkpoint instead of booting it; as
    /// [`VmDriver::start`] otherwise.
    async fn start_from(
        &self,
        _spec: &AgentVmSpec,
        _vm_dir: &Path,
        _from: StartFrom,
    ) -> Result<Box<dyn RunningVm>, DriverError> {
        Err(not_supported())
    }

    /// Whether `vm_dir` holds a saved state written by [`RunningVm::save`].
    fn has_saved_state(&self, _vm_dir: &Path) -> bool {
        false
    }

    /// Removes the saved state, if any; the VM boots afresh at its next start.
    async fn discard_saved_state(&self, _vm_dir: &Path) -> Result<(), DriverError> {
        Ok(())
    }

    /// The checkpoints the VM's disk holds, oldest first; empty for a VM without a disk.
    async fn checkpoints(&self, _vm_dir: &Path) -> Result<Vec<DiskCheckpoint>, DriverError> {
        Ok(Vec::new())
    }

    /// Creates, restores or deletes a disk-only checkpoint of a VM that has no process.
    async fn checkpoint_offline(
        &self,
        _vm_dir: &Path,
        _op: CheckpointOp,
        _tag: &str,
    ) -> Result<(), DriverError> {
        Err(not_supported())
    }
}

/// What drivers without saved states and checkpoints (the simulated one) answer.
fn not_supported() -> DriverError {
    DriverError::Unsupported("this host's driver cannot save VMs or take checkpoints".into())
}

/// One live VM process. Owned by exactly one task, the agent's actor for the VM.
#[async_trait]
pub trait RunningVm: Send + 'static {
    async fn status(&mut self) -> Result<RunStatus, DriverError>;
    async fn pause(&mut self) -> Result<(), DriverError>;
    async fn resume(&mut self) -> Result<(), DriverError>;
    /// Hard reset of the guest; the process stays.
    async fn reset(&mut self) -> Result<(), DriverError>;
    /// ACPI power button; the guest decides whether to power off.
    async fn power_down(&mut self) -> Result<(), DriverError>;
    /// Hard stop: ends the process now and waits until it is gone.
    async fn kill(&mut self) -> Result<(), DriverError>;
    /// Forwards `127.0.0.1:host_port` to the guest through the user-mode NIC `nic`, at once.
    async fn add_port_forward(
        &mut self,
        nic: &str,
        forward: &drover_api::PortForward,
    ) -> Result<(), DriverError>;
    /// Stops forwarding the host side of `forward` (its protocol and host port), at once.
    async fn remove_port_forward(
        &mut self,
        nic: &str,
        forward: &drover_api::PortForward,
    ) -> Result<(), DriverError>;
    /// Hot-plugs a NIC (its tap, if any, already on its bridge).
    async fn add_nic(&mut self, nic: &drover_api::agent::AgentNic) -> Result<(), DriverError>;
    /// Hot-unplugs the NIC `name`; returns once the guest released it and its backend is gone.
    async fn remove_nic(&mut self, name: &str) -> Result<(), DriverError>;
    /// Puts the ISO at `iso` into the VM's CD-ROM drive, or empties the drive with `None`.
    async fn change_cdrom(&mut self, _iso: Option<&Path>) -> Result<(), DriverError> {
        Err(not_supported())
    }
    /// Saves the guest's memory and device state into the VM's directory and ends the process;
    /// [`VmDriver::start_from`] with [`StartFrom::SavedState`] brings it back.
    async fn save(&mut self) -> Result<(), DriverError> {
        Err(not_supported())
    }
    /// Creates (with memory), restores or deletes a checkpoint while the process lives. A
    /// restore is atomic for the guest: its vCPUs are stopped around the load.
    async fn checkpoint(&mut self, _op: CheckpointOp, _tag: &str) -> Result<(), DriverError> {
        Err(not_supported())
    }
    /// The process's events; the channel closes after [`VmEvent::Exited`].
    fn take_events(&mut self) -> Option<mpsc::Receiver<VmEvent>>;
    /// Unix socket of the guest's serial console (one client at a time).
    fn serial_socket(&self) -> PathBuf;
    /// The process's live-migration controls; `None` when the driver has none.
    fn migration(&self) -> Option<qemu::migration::Monitor> {
        None
    }
}
