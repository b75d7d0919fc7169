//! `drover host add|list|show|remove|move|maintenance`.

use crate::CliError;
use crate::output::{OutputFormat, Table, print_fields, print_json, time};
use crate::progress::{JobOptions, finish};
use crate::vm::vm_table;
use drover_api::size::format_bytes;
use drover_api::{Host, HostAdd, Vm};
use drover_client::{Client, VmFilter};
use serde::Serialize;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum HostCommand {
    /// Enroll the agent at ADDRESS (host:port, port 8101 unless changed) with its one-time code.
    Add {
        address: String,
        /// The enrollment code the agent printed at its first start.
        #[arg(long)]
        code: String,
        /// Name in Drover (default: the host name the agent reports).
        #[arg(long)]
        name: Option<String>,
        /// Host group (default: All Hosts).
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        job: JobOptions,
    },
    /// List the managed hosts.
    List,
    /// A host's figures, state and VMs.
    Show { host: String },
    /// Stop managing a host (refused while VMs are on it).
    Remove {
        host: String,
        #[command(flatten)]
        job: JobOptions,
    },
    /// Move a host to another host group.
    Move {
        host: String,
        /// Group id or name.
        #[arg(long)]
        group: String,
        #[command(flatten)]
        job: JobOptions,
    },
    /// Maintenance mode: `on` stops new placements on the host and live-migrates its running VMs
    /// away, `off` returns it to service.
    Maintenance {
        #[arg(value_enum)]
        mode: Switch,
        host: String,
        #[command(flatten)]
        job: JobOptions,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

fn memory(mib: u64) -> String {
    format_bytes(mib.saturating_mul(1 << 20))
}

fn host_table(hosts: &[Host]) -> Table {
    let mut table = Table::new(&[
        "NAME",
        "STATE",
        "ADDRESS",
        "CPUS",
        "MEMORY",
        "DISK FREE",
        "ACCEL",
        "LOAD",
        "GROUP",
        "VMS",
    ]);
    for host in hosts {
        table.row(vec![
            host.name.clone(),
            host.state.to_string(),
            host.address.clone(),
            host.cpus.to_string(),
            memory(host.memory_mib),
            format_bytes(host.disk_free_bytes),
            host.accelerator.to_string(),
            format!("{} %", host.cpu_load_percent),
            host.group_name.clone(),
            host.vm_count.to_string(),
        ]);
    }
    table
}

/// `host show -o json`: the host object with its VMs.
#[derive(Debug, Serialize)]
struct HostWithVms<'a> {
    #[serde(flatten)]
    host: &'a Host,
    vms: &'a [Vm],
}

pub async fn run(
    client: &Client,
    command: &HostCommand,
    output: OutputFormat,
) -> Result<(), CliError> {
    match command {
        HostCommand::Add {
            address,
            code,
            name,
            group,
            job,
        } => {
            let add = HostAdd {
                address: address.clone(),
                enrollment_code: code.clone(),
                name: name.clone(),
                group: group.clone(),
            };
            let started = client.add_host(&add).await?;
            finish(client, started, *job, output).await
        }
        HostCommand::List => {
            let hosts = client.all_hosts().await?;
            match output {
                OutputFormat::Json => print_json(&hosts),
                OutputFormat::Table => {
                    host_table(&hosts).print();
                    Ok(())
                }
            }
        }
        HostCommand::Show { host } => {
            let host = client.host(host).await?;
            let filter = VmFilter {
                host: Some(host.id.to_string()),
                state: None,
            };
            let vms = client.all_vms(&filter).await?;
            if output == OutputFormat::Json {
                return print_json(&HostWithVms {
                    host: &host,
                    vms: &vms,
                });
            }
            let mut fields = vec![
                ("Name", host.name.clone()),
                ("Id", host.id.to_string()),
                ("Address", host.address.clone()),
                ("Group", host.group_name.clone()),
                ("State", host.state.to_string()),
            ];
            if let Some(reason) = &host.state_reason {
                fields.push(("Reason", reason.clone()));
            }
            fields.extend([
                ("CPUs", host.cpus.to_string()),
                ("CPU load", format!("{} %", host.cpu_load_percent)),
                (
                    "Memory",
                    format!(
                        "{} ({} free)",
                        memory(host.memory_mib),
                        memory(host.memory_free_mib)
                    ),
                ),
                ("Disk free", format_bytes(host.disk_free_bytes)),
                ("Accelerator", host.accelerator.to_string()),
                ("Agent version", host.agent_version.clone()),
                (
                    "Last seen",
                    host.last_seen
                        .as_ref()
                        .map(time)
                        .unwrap_or_else(|| "never".to_owned()),
                ),
                ("Added", time(&host.created_at)),
                ("VMs", vms.len().to_string()),
            ]);
            print_fields(&fields);
            if !vms.is_empty() {
                println!();
                vm_table(&vms).print();
            }
            Ok(())
        }
        HostCommand::Remove { host, job } => {
            let started = client.remove_host(host).await?;
            finish(client, started, *job, output).await
        }
        HostCommand::Move { host, group, job } => {
            let started = client.move_host(host, group).await?;
            finish(client, started, *job, output).await
        }
        HostCommand::Maintenance { mode, host, job } => {
            let started = client.host_maintenance(host, *mode == Switch::On).await?;
            finish(client, started, *job, output).await
        }
    }
}
