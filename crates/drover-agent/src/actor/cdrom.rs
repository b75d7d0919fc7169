//! The actor's CD-ROM medium changes: kept in the spec (so the next start has the medium) and,
//! when the VM runs, made at once through the driver. A running VM's drive cannot be added, only
//! filled or emptied: IDE has no hot-plug.

use super::{Command, VmActor, VmHandle};
use crate::error::AgentError;
use drover_api::cdrom::VmCdrom;
use std::path::Path;

impl VmHandle {
    /// Puts `cdrom`'s ISO (already in the cache) into the drive, or empties it.
    pub async fn change_cdrom(&self, cdrom: VmCdrom) -> Result<(), AgentError> {
        self.request(|reply| Command::ChangeCdrom { cdrom, reply })
            .await?
    }
}

impl VmActor {
    pub(super) async fn change_cdrom(&mut self, cdrom: VmCdrom) -> Result<(), AgentError> {
        if self.spec.devices.cdrom.as_ref() == Some(&cdrom) {
            return Ok(());
        }
        if self.process.is_some() && !self.spec.devices.has_cdrom_drive() {
            return Err(AgentError::VmSpecInvalid(format!(
                "VM {} runs without a CD-ROM drive, and a drive cannot be added to a running VM",
                self.vm_id()
            )));
        }
        let iso = cdrom.iso.as_ref().and_then(|iso| iso.path.as_deref());
        if let Some(process) = self.process.as_mut()
            && let Err(error) = process.change_cdrom(iso.map(Path::new)).await
        {
            return Err(self.driver_error(error));
        }
        let mut spec = self.spec.clone();
        spec.devices.cdrom = Some(cdrom);
        self.set_spec(spec)
    }
}
