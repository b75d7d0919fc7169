//! `drover vm create|list|show|start|stop|shutdown|pause|resume|restart|save|delete|console`
//! and `drover vm checkpoint ...` (in `checkpoint`).

use crate::CliError;
use crate::output::{OutputFormat, Table, print_fields, print_json, time};
use crate::progress::{JobOptions, finish};
use drover_api::network::PortProtocol;
use drover_api::size::{format_bytes, parse_bytes};
use drover_api::template::VmFromTemplate;
use drover_api::{PortForward, Vm, VmAction, VmCreate, VmDisk, VmState};
use drover_client::{Client, VmFilter};
use std::path::Path;

const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, clap::Args)]
#[command(group = clap::ArgGroup::new("disk_source").required(true).args(["disk", "image", "template"]))]
pub struct VmCreateArgs {
    pub name: String,
    /// Host id or name; without it the best-rated host of --group is chosen.
    #[arg(long, conflicts_with = "group")]
    pub host: Option<String>,
    /// Group to place the VM in when no --host is given (default: All Hosts).
    #[arg(long)]
    pub group: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Memory, such as 256M or 2G.
    #[arg(long, default_value = "256M", value_parser = parse_memory_mib)]
    pub memory: u64,
    /// Size of a new empty disk (such as 10G), or `none` for no disk.
    #[arg(long, value_parser = parse_disk)]
    pub disk: Option<VmDisk>,
    /// Disk image on the host; the VM gets a copy-on-write overlay of it.
    #[arg(long, value_name = "FILE")]
    pub image: Option<String>,
    /// A template: its hardware profile sets CPUs, memory and boot (--cpus, --memory and the
    /// kernel options are not taken with it), and the VM is a linked clone of its library disk,
    /// fetched once to the host's cache from the library server.
    #[arg(long, conflicts_with_all = ["kernel", "initrd", "cmdline"])]
    pub template: Option<String>,
    /// With --template: an independent copy of its disk (`qemu-img convert`) instead of a
    /// linked clone; the host's disk claim counts the copy's virtual size.
    #[arg(long, requires = "template")]
    pub full_clone: bool,
    /// Kernel file on the host, for direct kernel boot.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<String>,
    /// Initramfs file on the host.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub initrd: Option<String>,
    /// Kernel command line.
    #[arg(long, requires = "kernel")]
    pub cmdline: Option<String>,
    /// Start the VM once created (the create is undone if it cannot start).
    #[arg(long)]
    pub start: bool,
    /// A NIC on this network (repeat for more NICs, in order); default: one NIC on `user`.
    #[arg(long = "network", value_name = "NAME")]
    pub networks: Vec<String>,
    #[command(flatten)]
    pub devices: crate::vm_devices::DeviceArgs,
    #[command(flatten)]
    pub job: JobOptions,
}

/// A VM named by id or name, for the commands that start a job on it.
#[derive(Debug, Clone, clap::Args)]
pub struct VmTarget {
    pub vm: String,
    #[command(flatten)]
    pub job: JobOptions,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum VmCommand {
    /// Create a VM on a host (the best-rated one unless --host is given).
    Create(Box<VmCreateArgs>),
    /// List VMs.
    List {
        /// Only VMs on this host (id or name).
        #[arg(long)]
        host: Option<String>,
        /// Only VMs in this state (running, stopped, unknown, ...).
        #[arg(long, value_parser = parse_state)]
        state: Option<VmState>,
    },
    /// A VM's settings and state.
    Show { vm: String },
    /// Start a stopped VM, or continue a saved one.
    Start(VmTarget),
    /// Hard stop: end the VM's process at once.
    Stop(VmTarget),
    /// ACPI power button: ask the guest to power off.
    Shutdown(VmTarget),
    /// Stop the VM's vCPUs, keeping its memory.
    Pause(VmTarget),
    /// Run a paused VM again.
    Resume(VmTarget),
    /// Hard reset of a running VM.
    Restart(VmTarget),
    /// Delete a VM and its disk.
    Delete(VmTarget),
    /// Move the VM to another host; a running VM moves live, with its disk.
    Migrate(crate::migrate::MigrateArgs),
    /// Attach the terminal to the VM's serial console (Ctrl-] detaches).
    Console { vm: String },
    /// Add or remove network adapters (hot-plugged when the VM runs).
    #[command(subcommand)]
    Nic(NicCommand),
    /// Forward 127.0.0.1:HOSTPORT on the VM's host to GUESTPORT (TCP, or UDP with --udp;
    /// through the user-mode NIC); kept across restarts and applied at once to a running VM.
    /// `drover vm port-forward remove NAME HOSTPORT` stops one.
    PortForward(PortForwardArgs),
    /// Save the guest's memory to a file on its host and end its process; `start` continues
    /// the guest where it was, `stop` discards the saved state.
    Save(VmTarget),
    /// Checkpoints: points the VM can return to.
    #[command(subcommand)]
    Checkpoint(crate::checkpoint::CheckpointCommand),
    /// Move a stopped VM's disks into the library (state Stored); its host keeps nothing.
    Store {
        vm: String,
        /// The library share (id or name); the only share when omitted.
        #[arg(long)]
        share: Option<String>,
        #[command(flatten)]
        job: JobOptions,
    },
    /// Insert or eject the ISO in the VM's CD-ROM drive.
    #[command(subcommand)]
    Iso(crate::vm_devices::IsoCommand),
    /// Bring a stored VM back to a host, Stopped (the best-rated host unless --host is given).
    Deploy {
        vm: String,
        #[arg(long)]
        host: Option<String>,
        /// The host group to place it in (default "All Hosts"); not with --host.
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        job: JobOptions,
    },
}

#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PortForwardArgs {
    #[command(subcommand)]
    pub command: Option<PortForwardCommand>,
    #[arg(required = true)]
    pub vm: Option<String>,
    #[arg(value_name = "HOSTPORT:GUESTPORT", value_parser = PortForward::parse, required = true)]
    pub forward: Option<PortForward>,
    /// Forward UDP rather than TCP.
    #[arg(long)]
    pub udp: bool,
    #[command(flatten)]
    pub job: JobOptions,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum PortForwardCommand {
    /// Stop forwarding HOSTPORT (hot on a running VM; gone at its next start too).
    Remove {
        vm: String,
        host_port: u16,
        /// The UDP forward of the port rather than the TCP one.
        #[arg(long)]
        udp: bool,
        #[command(flatten)]
        job: JobOptions,
    },
}

fn protocol(udp: bool) -> PortProtocol {
    if udp {
        PortProtocol::Udp
    } else {
        PortProtocol::Tcp
    }
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum NicCommand {
    /// Add a NIC on a network (its MAC and IP come from the pools).
    Add {
        vm: String,
        #[arg(long, value_name = "NAME")]
        network: String,
        #[command(flatten)]
        job: JobOptions,
    },
    /// Remove the VM's last NIC on a network (its MAC and IP return to the pools).
    Remove {
        vm: String,
        #[arg(long, value_name = "NAME")]
        network: String,
        #[command(flatten)]
        job: JobOptions,
    },
}

pub(crate) fn parse_memory_mib(text: &str) -> Result<u64, String> {
    let bytes = parse_bytes(text)?;
    if bytes == 0 || bytes % MIB != 0 {
        return Err(format!(
            "'{text}' is not a whole number of MiB; use a size such as 256M or 2G"
        ));
    }
    Ok(bytes / MIB)
}

pub(crate) fn parse_disk(text: &str) -> Result<VmDisk, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(VmDisk::None);
    }
    let size_bytes = parse_bytes(text)?;
    if size_bytes == 0 {
        return Err("a disk needs a size above 0; use `none` for no disk".to_owned());
    }
    Ok(VmDisk::Blank { size_bytes })
}

fn parse_state(text: &str) -> Result<VmState, String> {
    VmState::parse(&text.to_ascii_lowercase()).ok_or_else(|| {
        let known: Vec<&str> = VmState::ALL.iter().map(|state| state.as_str()).collect();
        format!("unknown state '{text}'; use one of {}", known.join(", "))
    })
}

/// Paths name files on the host; a relative one is taken from the current directory, since the
/// agent has no current directory of the user's to resolve it against.
fn host_path(path: &str) -> String {
    let given = Path::new(path);
    if given.is_absolute() {
        return path.to_owned();
    }
    std::env::current_dir()
        .map(|dir| dir.join(given).to_string_lossy().into_owned())
        .unwrap_or_else(|_| path.to_owned())
}

pub(crate) fn disk_text(disk: &VmDisk) -> String {
    match disk {
        VmDisk::None => "none".to_owned(),
        VmDisk::Blank { size_bytes } => format!("{} (blank)", format_bytes(*size_bytes)),
        VmDisk::Image { path } => format!("overlay on {path}"),
        VmDisk::Library { item, .. } => format!("linked clone of library item {item}"),
        VmDisk::LibraryCopy { item, .. } => format!("full clone of library item {item}"),
    }
}

pub fn vm_table(vms: &[Vm]) -> Table {
    let mut table = Table::new(&["NAME", "HOST", "STATE", "CPUS", "MEMORY", "DISK", "REASON"]);
    for vm in vms {
        table.row(vec![
            vm.name.clone(),
            vm.host_name.clone(),
            vm.state.to_string(),
            vm.cpus.to_string(),
            format_bytes(vm.memory_mib.saturating_mul(MIB)),
            disk_text(&vm.disk),
            vm.state_reason.clone().unwrap_or_default(),
        ]);
    }
    table
}

fn print_vm(vm: &Vm) {
    let mut fields = vec![
        ("Name", vm.name.clone()),
        ("Id", vm.id.to_string()),
        ("Host", vm.host_name.clone()),
        ("State", vm.state.to_string()),
    ];
    if let Some(reason) = &vm.state_reason {
        fields.push(("Reason", reason.clone()));
    }
    fields.extend([
        ("CPUs", vm.cpus.to_string()),
        ("Memory", format_bytes(vm.memory_mib.saturating_mul(MIB))),
        ("Disk", disk_text(&vm.disk)),
    ]);
    for (label, value) in [
        ("Kernel", &vm.kernel),
        ("Initrd", &vm.initrd),
        ("Cmdline", &vm.cmdline),
    ] {
        if let Some(value) = value {
            fields.push((label, value.clone()));
        }
    }
    for nic in &vm.nics {
        let mut text = format!("{} on {}", nic.mac, nic.network);
        if let Some(ip) = &nic.ip {
            text.push_str(&format!(", IP {ip}"));
        }
        if let Some(lease) = &nic.lease_ip {
            text.push_str(&format!(", leased {lease}"));
        }
        fields.push(("NIC", format!("{}: {text}", nic.name)));
    }
    for forward in &vm.port_forwards {
        fields.push(("Port forward", forward.to_string()));
    }
    fields.extend(crate::vm_devices::fields(&vm.devices));
    fields.extend([
        ("Created", time(&vm.created_at)),
        ("Updated", time(&vm.updated_at)),
    ]);
    print_fields(&fields);
}

async fn action(
    client: &Client,
    target: &VmTarget,
    action: VmAction,
    output: OutputFormat,
) -> Result<(), CliError> {
    let started = client.vm_action(&target.vm, action).await?;
    finish(client, started, target.job, output).await
}

pub async fn run(
    client: &Client,
    command: &VmCommand,
    output: OutputFormat,
) -> Result<(), CliError> {
    match command {
        VmCommand::Create(args) => {
            if let Some(template) = &args.template {
                let request = VmFromTemplate {
                    name: args.name.clone(),
                    host: args.host.clone(),
                    group: args.group.clone(),
                    start: args.start,
                    full_clone: args.full_clone,
                    iso: args.devices.iso.clone(),
                };
                let started = client.create_vm_from_template(template, &request).await?;
                return finish(client, started, args.job, output).await;
            }
            let disk = match (&args.disk, &args.image) {
                (_, Some(image)) => VmDisk::Image {
                    path: host_path(image),
                },
                (Some(disk), None) => disk.clone(),
                (None, None) => {
                    return Err(CliError::local(
                        "missing_disk",
                        "no disk given",
                        "pass --disk SIZE, --disk none or --image FILE",
                    ));
                }
            };
            let create = VmCreate {
                name: args.name.clone(),
                host: args.host.clone(),
                group: args.group.clone(),
                cpus: args.cpus,
                memory_mib: args.memory,
                disk,
                kernel: args.kernel.as_deref().map(host_path),
                initrd: args.initrd.as_deref().map(host_path),
                cmdline: args.cmdline.clone(),
                start: args.start,
                networks: args.networks.clone(),
                seed: None,
                devices: args.devices.devices(),
            };
            let started = client.create_vm(&create).await?;
            finish(client, started, args.job, output).await
        }
        VmCommand::List { host, state } => {
            let filter = VmFilter {
                host: host.clone(),
                state: *state,
            };
            let vms = client.all_vms(&filter).await?;
            match output {
                OutputFormat::Json => print_json(&vms),
                OutputFormat::Table => {
                    vm_table(&vms).print();
                    Ok(())
                }
            }
        }
        VmCommand::Show { vm } => {
            let vm = client.vm(vm).await?;
            match output {
                OutputFormat::Json => print_json(&vm),
                OutputFormat::Table => {
                    print_vm(&vm);
                    Ok(())
                }
            }
        }
        VmCommand::Start(target) => action(client, target, VmAction::Start, output).await,
        VmCommand::Stop(target) => action(client, target, VmAction::Stop, output).await,
        VmCommand::Shutdown(target) => action(client, target, VmAction::Shutdown, output).await,
        VmCommand::Pause(target) => action(client, target, VmAction::Pause, output).await,
        VmCommand::Resume(target) => action(client, target, VmAction::Resume, output).await,
        VmCommand::Restart(target) => action(client, target, VmAction::Restart, output).await,
        VmCommand::Delete(target) => {
            let started = client.delete_vm(&target.vm).await?;
            finish(client, started, target.job, output).await
        }
        VmCommand::Console { vm } => crate::console::attach(client, vm).await,
        VmCommand::Migrate(args) => crate::migrate::run(client, args, output).await,
        VmCommand::Nic(NicCommand::Add { vm, network, job }) => {
            let started = client.add_nic(vm, network).await?;
            finish(client, started, *job, output).await
        }
        VmCommand::Nic(NicCommand::Remove { vm, network, job }) => {
            let shown = client.vm(vm).await?;
            let Some(nic) = shown.nics.iter().rev().find(|nic| nic.network == *network) else {
                return Err(CliError::local(
                    "nic_not_found",
                    format!("VM {vm} has no NIC on network {network}"),
                    "list the VM's NICs with `drover vm show`",
                ));
            };
            let started = client.remove_nic(vm, &nic.name).await?;
            finish(client, started, *job, output).await
        }
        VmCommand::PortForward(PortForwardArgs {
            command:
                Some(PortForwardCommand::Remove {
                    vm,
                    host_port,
                    udp,
                    job,
                }),
            ..
        }) => {
            let started = client
                .remove_port_forward(vm, protocol(*udp), *host_port)
                .await?;
            finish(client, started, *job, output).await
        }
        VmCommand::Save(target) => action(client, target, VmAction::Save, output).await,
        VmCommand::Iso(command) => crate::vm_devices::run_iso(client, command, output).await,
        VmCommand::Checkpoint(command) => crate::checkpoint::run(client, command, output).await,
        VmCommand::Store { vm, share, job } => {
            let request = drover_api::vm_store::VmStore {
                share: share.clone(),
            };
            let started = client.store_vm(vm, &request).await?;
            finish(client, started, *job, output).await
        }
        VmCommand::Deploy {
            vm,
            host,
            group,
            job,
        } => {
            let request = drover_api::vm_store::VmDeploy {
                host: host.clone(),
                group: group.clone(),
            };
            let started = client.deploy_vm(vm, &request).await?;
            finish(client, started, *job, output).await
        }
        VmCommand::PortForward(PortForwardArgs {
            vm: Some(vm),
            forward: Some(forward),
            udp,
            job,
            ..
        }) => {
            let forward = PortForward {
                protocol: protocol(*udp),
                ..*forward
            };
            let started = client.add_port_forward(vm, &forward).await?;
            finish(client, started, *job, output).await
        }
        VmCommand::PortForward(_) => Err(CliError::local(
            "usage",
            "give NAME HOSTPORT:GUESTPORT, or `remove NAME HOSTPORT`",
            "see `drover vm port-forward --help`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_on_the_command_line() {
        assert_eq!(parse_memory_mib("256M"), Ok(256));
        assert_eq!(parse_memory_mib("2G"), Ok(2048));
        assert!(parse_memory_mib("1000K").is_err());
        assert!(parse_memory_mib("0").is_err());
        assert_eq!(parse_disk("none"), Ok(VmDisk::None));
        assert_eq!(
            parse_disk("1G"),
            Ok(VmDisk::Blank {
                size_bytes: 1 << 30
            })
        );
        assert!(parse_disk("0").is_err());
        assert!(parse_disk("lots").is_err());
        assert_eq!(parse_state("Running"), Ok(VmState::Running));
        assert!(parse_state("asleep").is_err());
    }
}
