//! A VM's devices on the command line: `drover vm create --data-disk --boot --machine --iso`,
//! their lines in `drover vm show`, and `drover vm iso insert|eject`.

use crate::CliError;
use crate::output::OutputFormat;
use crate::progress::{JobOptions, finish};
use drover_api::cdrom::{VmCdrom, VmCdromChange};
use drover_api::size::parse_bytes;
use drover_api::{VmDevices, VmDisk};
use drover_client::Client;

#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// A further blank disk of this size, such as 1G (repeat for more; the guest's vdb, vdc...).
    #[arg(long = "data-disk", value_name = "SIZE", value_parser = parse_bytes, conflicts_with = "template")]
    pub data_disks: Vec<u64>,
    /// Boot devices, first choice first: disk, cdrom, network (such as `cdrom,disk`).
    #[arg(
        long = "boot",
        value_name = "ORDER",
        value_delimiter = ',',
        conflicts_with = "template"
    )]
    pub boot_order: Vec<String>,
    /// QEMU machine type, such as pc (the default) or q35.
    #[arg(long, value_name = "TYPE", conflicts_with = "template")]
    pub machine: Option<String>,
    /// A library ISO in the VM's CD-ROM drive (the host fetches it into its cache); with
    /// --template too.
    #[arg(long, value_name = "LIBRARY-ITEM")]
    pub iso: Option<String>,
}

impl DeviceArgs {
    /// The devices a create without a template asks for.
    pub fn devices(&self) -> VmDevices {
        VmDevices {
            data_disks: self
                .data_disks
                .iter()
                .map(|&size_bytes| VmDisk::Blank { size_bytes })
                .collect(),
            boot_order: self.boot_order.clone(),
            machine: self.machine.clone(),
            cdrom: self.iso.clone().map(VmCdrom::with_iso),
        }
    }
}

/// The lines `drover vm show` gives a VM's devices.
pub fn fields(devices: &VmDevices) -> Vec<(&'static str, String)> {
    let mut fields: Vec<(&'static str, String)> = devices
        .data_disks
        .iter()
        .enumerate()
        .map(|(index, disk)| {
            (
                "Data disk",
                format!("disk{}: {}", index + 1, crate::vm::disk_text(disk)),
            )
        })
        .collect();
    if !devices.boot_order.is_empty() {
        fields.push(("Boot order", devices.boot_order.join(", ")));
    }
    fields.push((
        "Machine",
        devices.machine.clone().unwrap_or_else(|| "pc".to_owned()),
    ));
    if devices.has_cdrom_drive() {
        let medium = match devices.cdrom_iso() {
            Some(iso) => format!("ISO {}", iso.item),
            None => "empty".to_owned(),
        };
        fields.push(("CD-ROM", medium));
    }
    fields
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum IsoCommand {
    /// Put a library ISO in the VM's CD-ROM drive (at once when it runs; a stopped VM without a
    /// drive gets one).
    Insert {
        vm: String,
        item: String,
        #[command(flatten)]
        job: JobOptions,
    },
    /// Take the ISO out of the VM's CD-ROM drive (the drive stays, empty).
    Eject {
        vm: String,
        #[command(flatten)]
        job: JobOptions,
    },
}

pub async fn run_iso(
    client: &Client,
    command: &IsoCommand,
    output: OutputFormat,
) -> Result<(), CliError> {
    let (vm, item, job) = match command {
        IsoCommand::Insert { vm, item, job } => (vm, Some(item.clone()), job),
        IsoCommand::Eject { vm, job } => (vm, None, job),
    };
    let started = client.change_cdrom(vm, &VmCdromChange { item }).await?;
    finish(client, started, *job, output).await
}
