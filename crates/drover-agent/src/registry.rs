//! Which VMs this agent has: a map from [`VmId`] to the VM's actor handle. Adding and removing
//! entries are the only operations on shared state; a VM's state lives in its actor. Also owns
//! the actors' tasks, so that an agent shutdown can wait for each to let go of its VM.

use crate::actor::{self, VmHandle, VmSetup};
use crate::error::AgentError;
use drover_api::VmId;
use drover_api::agent::VmRuntime;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::task::JoinSet;

/// How long an agent shutdown waits for actors busy with a long action (a guest shutdown).
const DETACH_TIMEOUT: Duration = Duration::from_secs(5);

enum Slot {
    /// A define is making the VM's files; the actor does not exist yet.
    Defining,
    Ready(VmHandle),
}

#[derive(Default)]
pub struct Registry {
    vms: Mutex<HashMap<VmId, Slot>>,
    actors: Mutex<JoinSet<()>>,
}

/// The right to define one VM id; dropped without [`Reservation::commit`], it frees the id.
pub struct Reservation<'a> {
    registry: &'a Registry,
    vm_id: VmId,
    committed: bool,
}

impl Reservation<'_> {
    /// Starts the VM's actor and makes the VM visible.
    pub fn commit(mut self, setup: VmSetup) -> VmHandle {
        self.committed = true;
        self.registry.spawn(setup)
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.registry.vms().remove(&self.vm_id);
        }
    }
}

impl Registry {
    fn vms(&self) -> MutexGuard<'_, HashMap<VmId, Slot>> {
        self.vms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn actors(&self) -> MutexGuard<'_, JoinSet<()>> {
        self.actors.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts an actor for a VM and registers it (replacing any reservation of its id).
    pub fn spawn(&self, setup: VmSetup) -> VmHandle {
        let vm_id = setup.spec.id;
        let (handle, run) = actor::actor(setup);
        {
            let mut actors = self.actors();
            // Reap actors of deleted VMs so the set does not grow without bound.
            while actors.try_join_next().is_some() {}
            actors.spawn(run);
        }
        self.vms().insert(vm_id, Slot::Ready(handle.clone()));
        handle
    }

    /// The VM's handle; `None` when the VM is unknown.
    pub fn find(&self, vm_id: VmId) -> Result<Option<VmHandle>, AgentError> {
        match self.vms().get(&vm_id) {
            None => Ok(None),
            Some(Slot::Defining) => Err(AgentError::VmBusy(vm_id)),
            Some(Slot::Ready(handle)) => Ok(Some(handle.clone())),
        }
    }

    pub fn get(&self, vm_id: VmId) -> Result<VmHandle, AgentError> {
        self.find(vm_id)?.ok_or(AgentError::VmNotFound(vm_id))
    }

    /// Claims an id that is not in use, for a define.
    pub fn reserve(&self, vm_id: VmId) -> Result<Reservation<'_>, AgentError> {
        let mut vms = self.vms();
        if vms.contains_key(&vm_id) {
            return Err(AgentError::VmBusy(vm_id));
        }
        vms.insert(vm_id, Slot::Defining);
        Ok(Reservation {
            registry: self,
            vm_id,
            committed: false,
        })
    }

    pub fn remove(&self, vm_id: VmId) {
        self.vms().remove(&vm_id);
    }

    /// The image files the defined VMs' disks are overlays on and the ISOs in their CD-ROM
    /// drives: never evicted from the cache.
    pub fn disk_images(&self) -> Vec<std::path::PathBuf> {
        self.vms()
            .values()
            .filter_map(|slot| match slot {
                Slot::Ready(handle) => Some(handle.spec()),
                Slot::Defining => None,
            })
            .flat_map(|spec| {
                let disk = match spec.disk {
                    drover_api::VmDisk::Image { path } => Some(path),
                    _ => None,
                };
                let iso = spec.devices.cdrom_iso().and_then(|iso| iso.path.clone());
                disk.into_iter().chain(iso).map(std::path::PathBuf::from)
            })
            .collect()
    }

    /// The state of every defined VM, ordered by id.
    pub fn runtimes(&self) -> Vec<VmRuntime> {
        let mut runtimes: Vec<VmRuntime> = self
            .vms()
            .values()
            .filter_map(|slot| match slot {
                Slot::Ready(handle) => Some(handle.runtime()),
                Slot::Defining => None,
            })
            .collect();
        runtimes.sort_by_key(|runtime| runtime.vm_id);
        runtimes
    }

    /// Stops every actor without touching its VM, and waits (bounded) until each has let go of
    /// its process, so that a new agent can take the VMs over.
    pub async fn detach_all(&self) {
        let handles: Vec<VmHandle> = self
            .vms()
            .drain()
            .filter_map(|(_, slot)| match slot {
                Slot::Ready(handle) => Some(handle),
                Slot::Defining => None,
            })
            .collect();
        for handle in &handles {
            handle.detach();
        }
        drop(handles);
        let mut actors = std::mem::take(&mut *self.actors());
        let all_done = async { while actors.join_next().await.is_some() {} };
        if tokio::time::timeout(DETACH_TIMEOUT, all_done)
            .await
            .is_err()
        {
            tracing::warn!("some VM actors were still busy at shutdown; abandoned");
        }
    }
}
