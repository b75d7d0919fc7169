//! A VM's devices beyond its CPUs, memory, first disk and NICs: further disks, the firmware's
//! boot order and the QEMU machine type. A template's hardware profile and an imported package
//! give them; a plain `vm create` may too.

use crate::vm::VmDisk;
use serde::{Deserialize, Serialize};

/// The boot devices a boot order may name.
pub const BOOT_DEVICES: [&str; 3] = ["disk", "cdrom", "network"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmDevices {
    /// Disks after the first, in order (the guest's `vdb`, `vdc`, ...): blank disks, or library
    /// images (the disks of an imported package after its boot disk).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_disks: Vec<VmDisk>,
    /// `disk`, `cdrom`, `network`, first choice first; empty leaves the firmware's default
    /// (the first disk). `cdrom` gives the VM a CD-ROM drive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boot_order: Vec<String>,
    /// QEMU machine type (`pc`, `q35`, `pc-i440fx-10.0`); `pc` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// The CD-ROM drive (an IDE one, on the machine's own controller), with its ISO if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdrom: Option<crate::cdrom::VmCdrom>,
}

impl VmDevices {
    /// Whether the VM has a CD-ROM drive: it was given one, or its boot order names one.
    pub fn has_cdrom_drive(&self) -> bool {
        self.cdrom.is_some() || self.boot_order.iter().any(|device| device == "cdrom")
    }

    /// The ISO in the CD-ROM drive, if any.
    pub fn cdrom_iso(&self) -> Option<&crate::cdrom::CdromIso> {
        self.cdrom.as_ref().and_then(|cdrom| cdrom.iso.as_deref())
    }

    /// Host disk space the data disks may come to use (blank disks' sizes; see
    /// [`VmDisk::committed_bytes`]).
    pub fn committed_bytes(&self) -> u64 {
        self.data_disks
            .iter()
            .map(VmDisk::committed_bytes)
            .fold(0, u64::saturating_add)
    }
}

/// Checks a boot order and a machine type as a user wrote them.
pub fn validate(boot_order: &[String], machine: Option<&str>) -> Result<(), String> {
    if let Some(bad) = boot_order
        .iter()
        .find(|device| !BOOT_DEVICES.contains(&device.as_str()))
    {
        return Err(format!(
            "'{bad}' is not a boot device; use disk, cdrom or network"
        ));
    }
    if let Some(machine) = machine {
        let valid = !machine.is_empty()
            && machine.len() <= 63
            && machine
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !valid {
            return Err(format!(
                "'{machine}' is not a QEMU machine type such as pc or q35"
            ));
        }
    }
    Ok(())
}

/// Checks a VM's devices: boot order, machine type and data disks (a blank one needs a size).
pub fn validate_devices(devices: &VmDevices) -> Result<(), String> {
    validate(&devices.boot_order, devices.machine.as_deref())?;
    for (index, disk) in devices.data_disks.iter().enumerate() {
        match disk {
            VmDisk::Blank { size_bytes: 0 } | VmDisk::None => {
                return Err(format!(
                    "data disk {} needs a size above 0 or an image",
                    index + 1
                ));
            }
            VmDisk::LibraryCopy { .. } => {
                return Err(format!(
                    "data disk {} cannot be a full clone; only the first disk can",
                    index + 1
                ));
            }
            VmDisk::Blank { .. } | VmDisk::Image { .. } | VmDisk::Library { .. } => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_orders_machines_and_disks() {
        let order = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert!(
            validate(
                &order(&["network", "disk", "cdrom"]),
                Some("pc-i440fx-10.0")
            )
            .is_ok()
        );
        assert!(validate(&order(&["floppy"]), None).is_err());
        for bad in ["", "pc,accel=kvm", "q35 -device x"] {
            assert!(validate(&[], Some(bad)).is_err(), "{bad}");
        }
        let devices = VmDevices {
            data_disks: vec![
                VmDisk::Blank {
                    size_bytes: 1 << 20,
                },
                VmDisk::Blank { size_bytes: 0 },
            ],
            ..VmDevices::default()
        };
        assert!(
            validate_devices(&devices)
                .expect_err("empty disk")
                .contains("disk 2")
        );
        assert_eq!(devices.committed_bytes(), 1 << 20);
    }
}
