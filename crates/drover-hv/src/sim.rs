//! The simulated driver, for scale benches of the control plane only (DESIGN.md section 7): it
//! starts no process and every change is instant, so one machine can play a thousand hosts.
//! Feature tests never use it. A simulated VM does not survive an agent restart ([`recover`]
//! finds nothing running), and its console socket never exists.
//!
//! [`recover`]: VmDriver::recover

use crate::{DriverError, RunStatus, RunningVm, VmDriver, VmEvent};
use async_trait::async_trait;
use drover_api::Accelerator;
use drover_api::agent::AgentVmSpec;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// Events a simulated VM may queue before its actor reads them (a shutdown sends two).
const EVENT_BUFFER: usize = 4;

/// The simulated hypervisor.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimDriver;

#[async_trait]
impl VmDriver for SimDriver {
    fn accelerator(&self) -> Accelerator {
        Accelerator::Kvm
    }

    async fn validate(&self, _spec: &AgentVmSpec) -> Result<(), DriverError> {
        Ok(())
    }

    async fn create(&self, _spec: &AgentVmSpec, _vm_dir: &Path) -> Result<(), DriverError> {
        Ok(())
    }

    async fn start(
        &self,
        _spec: &AgentVmSpec,
        vm_dir: &Path,
    ) -> Result<Box<dyn RunningVm>, DriverError> {
        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        Ok(Box::new(SimVm {
            status: RunStatus::Running,
            events,
            receiver: Some(receiver),
            serial: vm_dir.join("serial.sock"),
        }))
    }

    async fn recover(
        &self,
        _spec: &AgentVmSpec,
        _vm_dir: &Path,
    ) -> Result<Option<Box<dyn RunningVm>>, DriverError> {
        Ok(None)
    }

    async fn destroy(&self, vm_dir: &Path) -> Result<(), DriverError> {
        match std::fs::remove_dir_all(vm_dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(DriverError::Io {
                path: vm_dir.to_owned(),
                source,
            }),
        }
    }
}

/// A simulated running VM: a state and an event channel.
struct SimVm {
    status: RunStatus,
    events: mpsc::Sender<VmEvent>,
    receiver: Option<mpsc::Receiver<VmEvent>>,
    serial: PathBuf,
}

impl SimVm {
    /// Reports the end of the "process"; the actor reads it as a clean exit.
    async fn exit(&mut self, by_guest: bool) -> Result<(), DriverError> {
        for event in [
            VmEvent::ShutdownRequested { by_guest },
            VmEvent::Exited {
                clean: true,
                reason: "simulated VM stopped".to_owned(),
            },
        ] {
            self.events
                .send(event)
                .await
                .map_err(|_| DriverError::NotRunning)?;
        }
        Ok(())
    }
}

#[async_trait]
impl RunningVm for SimVm {
    async fn status(&mut self) -> Result<RunStatus, DriverError> {
        Ok(self.status)
    }

    async fn pause(&mut self) -> Result<(), DriverError> {
        self.status = RunStatus::Paused;
        Ok(())
    }

    async fn resume(&mut self) -> Result<(), DriverError> {
        self.status = RunStatus::Running;
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), DriverError> {
        Ok(())
    }

    async fn power_down(&mut self) -> Result<(), DriverError> {
        self.exit(true).await
    }

    async fn kill(&mut self) -> Result<(), DriverError> {
        self.exit(false).await
    }

    // A simulated VM has no devices: NIC and forward changes only live in the spec.
    async fn add_port_forward(
        &mut self,
        _nic: &str,
        _forward: &drover_api::PortForward,
    ) -> Result<(), DriverError> {
        Ok(())
    }

    async fn remove_port_forward(
        &mut self,
        _nic: &str,
        _forward: &drover_api::PortForward,
    ) -> Result<(), DriverError> {
        Ok(())
    }

    async fn add_nic(&mut self, _nic: &drover_api::agent::AgentNic) -> Result<(), DriverError> {
        Ok(())
    }

    async fn remove_nic(&mut self, _name: &str) -> Result<(), DriverError> {
        Ok(())
    }

    fn take_events(&mut self) -> Option<mpsc::Receiver<VmEvent>> {
        self.receiver.take()
    }

    fn serial_socket(&self) -> PathBuf {
        self.serial.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::{VmDisk, VmId};

    #[tokio::test]
    async fn instant_lifecycle() {
        let dir = tempfile::tempdir().expect("temp dir");
        let vm_dir = dir.path().join("vm");
        std::fs::create_dir(&vm_dir).expect("vm dir");
        let spec = AgentVmSpec {
            id: VmId::new(),
            name: "sim1".to_owned(),
            cpus: 1,
            memory_mib: 128,
            disk: VmDisk::None,
            kernel: None,
            initrd: None,
            cmdline: None,
            nics: vec![],
            port_forwards: vec![],
            seed: None,
            devices: Default::default(),
        };
        let driver = SimDriver;
        driver.validate(&spec).await.expect("valid");
        driver.create(&spec, &vm_dir).await.expect("created");
        let mut vm = driver.start(&spec, &vm_dir).await.expect("started");
        let mut events = vm.take_events().expect("events");
        vm.pause().await.expect("paused");
        assert_eq!(vm.status().await.expect("status"), RunStatus::Paused);
        vm.kill().await.expect("killed");
        assert_eq!(
            events.recv().await,
            Some(VmEvent::ShutdownRequested { by_guest: false })
        );
        assert!(matches!(
            events.recv().await,
            Some(VmEvent::Exited { clean: true, .. })
        ));
        assert!(
            driver
                .recover(&spec, &vm_dir)
                .await
                .expect("recover")
                .is_none()
        );
        driver.destroy(&vm_dir).await.expect("destroyed");
        assert!(!vm_dir.exists());
        driver
            .destroy(&vm_dir)
            .await
            .expect("destroy is idempotent");
    }
}
