//! `drover network create|list|show|delete`.

use crate::CliError;
use crate::output::{OutputFormat, Table, print_fields, print_json, time};
use crate::progress::{JobOptions, finish};
use drover_api::{Network, NetworkCreate, NetworkMode};
use drover_client::Client;

#[derive(Debug, Clone, clap::Args)]
pub struct NetworkCreateArgs {
    /// At most 12 characters: the host bridge is `dr-NAME`, within Linux's 15-byte limit.
    pub name: String,
    #[arg(long, value_parser = parse_mode)]
    pub mode: NetworkMode,
    /// IPv4 CIDR such as 10.10.0.0/24 (needed by nat and isolated).
    #[arg(long)]
    pub subnet: Option<String>,
    /// Default: the subnet's first address.
    #[arg(long)]
    pub gateway: Option<String>,
    /// FIRST-LAST; default: every address above the gateway.
    #[arg(long, value_name = "A-B")]
    pub dhcp_range: Option<String>,
    /// 802.1Q VLAN id on the uplink (bridged).
    #[arg(long)]
    pub vlan: Option<u16>,
    /// Host interface the bridge enslaves (bridged).
    #[arg(long, value_name = "IFACE")]
    pub uplink: Option<String>,
    /// Carry the network between hosts over VXLAN on the management network.
    #[arg(long)]
    pub overlay: bool,
    /// Realize the network only on the hosts of this host group's subtree (id or name); VMs on
    /// it are placed there only.
    #[arg(long, value_name = "HOSTGROUP")]
    pub group: Option<String>,
    #[command(flatten)]
    pub job: JobOptions,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum NetworkCommand {
    /// Create a network and realize it on every host (of its group, with --group).
    Create(Box<NetworkCreateArgs>),
    /// List networks.
    List,
    /// A network's settings, VMs and state on each host.
    Show { network: String },
    /// Delete a network (refused while VMs use it).
    Delete {
        network: String,
        #[command(flatten)]
        job: JobOptions,
    },
}

fn parse_mode(text: &str) -> Result<NetworkMode, String> {
    NetworkMode::parse(&text.to_ascii_lowercase()).ok_or_else(|| {
        let known: Vec<&str> = NetworkMode::ALL.iter().map(|mode| mode.as_str()).collect();
        format!("unknown mode '{text}'; use one of {}", known.join(", "))
    })
}

fn optional(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "-".to_owned())
}

fn network_table(networks: &[Network]) -> Table {
    let mut table = Table::new(&[
        "NAME", "MODE", "SUBNET", "GATEWAY", "VLAN", "OVERLAY", "VMS",
    ]);
    for network in networks {
        table.row(vec![
            network.name.clone(),
            network.mode.to_string(),
            optional(&network.subnet),
            optional(&network.gateway),
            network.vlan.map_or("-".to_owned(), |vlan| vlan.to_string()),
            if network.overlay { "yes" } else { "no" }.to_owned(),
            network.vms.len().to_string(),
        ]);
    }
    table
}

fn print_network(network: &Network) {
    let mut fields = vec![
        ("Name", network.name.clone()),
        ("Id", network.id.to_string()),
        ("Mode", network.mode.to_string()),
        ("Bridge", network.bridge.clone()),
        ("Subnet", optional(&network.subnet)),
        ("Gateway", optional(&network.gateway)),
    ];
    if let (Some(start), Some(end)) = (&network.dhcp_start, &network.dhcp_end) {
        fields.push(("DHCP range", format!("{start}-{end}")));
    }
    if let Some(vlan) = network.vlan {
        fields.push(("VLAN", vlan.to_string()));
    }
    if let Some(uplink) = &network.uplink {
        fields.push(("Uplink", uplink.clone()));
    }
    if let Some(vni) = network.vni {
        fields.push(("Overlay VNI", vni.to_string()));
    }
    if let Some(group) = &network.group {
        fields.push(("Host group", group.clone()));
    }
    fields.push(("VMs", network.vms.join(", ")));
    for host in &network.hosts {
        let mut text = host.state.as_str().to_owned();
        if let Some(reason) = &host.reason {
            text.push_str(&format!(": {reason}"));
        }
        fields.push(("Host", format!("{} {text}", host.host_name)));
    }
    fields.push(("Created", time(&network.created_at)));
    print_fields(&fields);
}

pub async fn run(
    client: &Client,
    command: &NetworkCommand,
    output: OutputFormat,
) -> Result<(), CliError> {
    match command {
        NetworkCommand::Create(args) => {
            let create = NetworkCreate {
                name: args.name.clone(),
                mode: args.mode,
                subnet: args.subnet.clone(),
                gateway: args.gateway.clone(),
                dhcp_range: args.dhcp_range.clone(),
                vlan: args.vlan,
                uplink: args.uplink.clone(),
                overlay: args.overlay,
                group: args.group.clone(),
            };
            let started = client.create_network(&create).await?;
            finish(client, started, args.job, output).await
        }
        NetworkCommand::List => {
            let networks = client.all_networks().await?;
            match output {
                OutputFormat::Json => print_json(&networks),
                OutputFormat::Table => {
                    network_table(&networks).print();
                    Ok(())
                }
            }
        }
        NetworkCommand::Show { network } => {
            let network = client.network(network).await?;
            match output {
                OutputFormat::Json => print_json(&network),
                OutputFormat::Table => {
                    print_network(&network);
                    Ok(())
                }
            }
        }
        NetworkCommand::Delete { network, job } => {
            let started = client.delete_network(network).await?;
            finish(client, started, *job, output).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_on_the_command_line() {
        assert_eq!(parse_mode("NAT"), Ok(NetworkMode::Nat));
        assert_eq!(parse_mode("bridged"), Ok(NetworkMode::Bridged));
        assert!(parse_mode("routed").is_err());
    }
}
