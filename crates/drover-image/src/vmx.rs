//! VMware's `.vmx` configuration: `key = "value"` lines, keys case-insensitive. Only what a VM
//! made from it needs is read: `numvcpus`, `memsize` (MiB), the disks of the SCSI, SATA, NVMe
//! and IDE controllers (`scsi0:0.fileName`, CD-ROMs left out) and the `ethernetN` adapters.

use std::collections::BTreeMap;

/// What a `.vmx` file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmxConfig {
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub nics: u32,
    /// Disk file names as written (relative to the `.vmx` file's directory), boot disk first:
    /// SCSI, then SATA, NVMe and IDE, each by controller and unit.
    pub disks: Vec<String>,
}

/// Controllers in the order their disks are taken; the first disk found boots.
const BUSES: [&str; 4] = ["scsi", "sata", "nvme", "ide"];

pub fn parse(text: &str) -> Result<VmxConfig, String> {
    let mut values = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(".encoding") {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {} is not key = \"value\": {line}", number + 1))?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or(value);
        values.insert(key.trim().to_ascii_lowercase(), value.to_owned());
    }
    let number = |key: &str| -> Result<Option<u64>, String> {
        values
            .get(key)
            .map(|value| {
                value
                    .parse()
                    .map_err(|_| format!("{key} = \"{value}\" is not a whole number"))
            })
            .transpose()
    };
    let enabled = |prefix: &str| {
        values
            .get(&format!("{prefix}.present"))
            .is_none_or(|present| present.eq_ignore_ascii_case("true"))
    };
    let mut disks = Vec::new();
    for (key, file) in &values {
        let Some(device) = key.strip_suffix(".filename") else {
            continue;
        };
        let Some((bus, slot)) = BUSES
            .iter()
            .enumerate()
            .find_map(|(rank, bus)| Some((rank, device.strip_prefix(bus)?)))
        else {
            continue;
        };
        let Some((controller, unit)) = slot.split_once(':') else {
            continue;
        };
        let (Ok(controller), Ok(unit)) = (controller.parse::<u32>(), unit.parse::<u32>()) else {
            continue;
        };
        let device_type = values
            .get(&format!("{device}.devicetype"))
            .map(|kind| kind.to_ascii_lowercase())
            .unwrap_or_default();
        let is_cdrom = device_type.contains("cdrom") || file.to_ascii_lowercase().ends_with(".iso");
        if enabled(device) && !is_cdrom {
            disks.push(((bus, controller, unit), file.clone()));
        }
    }
    disks.sort();
    let nics = values
        .keys()
        .filter_map(|key| key.strip_suffix(".present"))
        .filter(|device| {
            device
                .strip_prefix("ethernet")
                .is_some_and(|index| index.parse::<u32>().is_ok())
                && enabled(device)
        })
        .count();
    Ok(VmxConfig {
        cpus: number("numvcpus")?
            .map(|cpus| u32::try_from(cpus).map_err(|_| format!("numvcpus = {cpus} is too large")))
            .transpose()?,
        memory_mib: number("memsize")?,
        nics: u32::try_from(nics).unwrap_or(u32::MAX),
        disks: disks.into_iter().map(|(_, file)| file).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpus_memory_disks_and_nics() {
        let text = r#".encoding = "UTF-8"
config.version = "8"
numvcpus = "2"
memSize = "1024"
ide1:0.present = "TRUE"
ide1:0.fileName = "install.iso"
ide1:0.deviceType = "cdrom-image"
sata0:1.fileName = "data.vmdk"
scsi0:1.present = "FALSE"
scsi0:1.fileName = "old.vmdk"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "web.vmdk"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet1.present = "FALSE"
ethernet2.present = "TRUE"
"#;
        assert_eq!(
            parse(text).expect("parses"),
            VmxConfig {
                cpus: Some(2),
                memory_mib: Some(1024),
                nics: 2,
                disks: vec!["web.vmdk".into(), "data.vmdk".into()],
            }
        );
    }

    #[test]
    fn refuses_lines_and_numbers_it_cannot_read() {
        for (text, expected) in [
            ("numvcpus \"2\"", "not key = \"value\""),
            ("memsize = \"lots\"", "not a whole number"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
