//! `drover hostgroup create|list|show|move|set|delete`: the host group tree, its reserves and
//! rating weights. Group changes answer at once (they touch no host, so they are not jobs).

use crate::CliError;
use crate::output::{OutputFormat, Table, print_fields, print_json, time};
use crate::vm::parse_memory_mib;
use drover_api::hostgroup::{GroupSetting, GroupSettings};
use drover_api::size::{format_bytes, parse_bytes};
use drover_api::{HostGroup, HostGroupCreate, HostGroupUpdate};
use drover_client::Client;

/// Reserves and weights; each one given overrides what the group inherits.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SettingsArgs {
    /// Share of each host's CPU kept back for the host, in % (0 to 100).
    #[arg(long, value_name = "PERCENT")]
    pub reserve_cpu: Option<u32>,
    /// Memory kept back on each host, such as 512M or 2G.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory_mib)]
    pub reserve_memory: Option<u64>,
    /// Disk space kept back on each host, such as 10G.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub reserve_disk: Option<u64>,
    /// Weight of CPU in the placement rating (0 to 100).
    #[arg(long, value_name = "N")]
    pub weight_cpu: Option<u32>,
    /// Weight of memory in the placement rating (0 to 100).
    #[arg(long, value_name = "N")]
    pub weight_memory: Option<u32>,
    /// Weight of disk in the placement rating (0 to 100).
    #[arg(long, value_name = "N")]
    pub weight_disk: Option<u32>,
    /// Weight of network in the placement rating (0 to 100).
    #[arg(long, value_name = "N")]
    pub weight_network: Option<u32>,
}

impl SettingsArgs {
    fn settings(&self) -> GroupSettings {
        GroupSettings {
            reserve_cpu_percent: self.reserve_cpu,
            reserve_memory_mib: self.reserve_memory,
            reserve_disk_bytes: self.reserve_disk,
            weight_cpu: self.weight_cpu,
            weight_memory: self.weight_memory,
            weight_disk: self.weight_disk,
            weight_network: self.weight_network,
        }
    }
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum HostGroupCommand {
    /// Create a group (under "All Hosts" unless --parent is given).
    Create {
        name: String,
        /// Parent group id or name.
        #[arg(long)]
        parent: Option<String>,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Every group, in tree order, with the reserves in force.
    List,
    /// A group's own settings and those in force, with where each comes from.
    Show { group: String },
    /// Move a group (with its hosts and groups) under another group.
    Move {
        group: String,
        #[arg(long)]
        parent: String,
    },
    /// Set reserves and weights, or return them to inheritance with --inherit.
    Set {
        group: String,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Settings to inherit from the parent again (reserve_cpu_percent, weight_disk, ...).
        #[arg(long, value_parser = parse_setting, value_delimiter = ',')]
        inherit: Vec<GroupSetting>,
    },
    /// Delete an empty group (refused while it holds hosts or groups).
    Delete { group: String },
}

fn parse_setting(text: &str) -> Result<GroupSetting, String> {
    let wanted = text.replace('-', "_");
    GroupSetting::ALL
        .into_iter()
        .find(|setting| setting.as_str() == wanted)
        .ok_or_else(|| {
            let known: Vec<&str> = GroupSetting::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown setting '{text}'; use one of {}", known.join(", "))
        })
}

fn value_text(setting: GroupSetting, value: u64) -> String {
    match setting {
        GroupSetting::ReserveCpuPercent => format!("{value} %"),
        GroupSetting::ReserveMemoryMib => format_bytes(value.saturating_mul(1 << 20)),
        GroupSetting::ReserveDiskBytes => format_bytes(value),
        GroupSetting::WeightCpu
        | GroupSetting::WeightMemory
        | GroupSetting::WeightDisk
        | GroupSetting::WeightNetwork => value.to_string(),
    }
}

fn effective(group: &HostGroup, setting: GroupSetting) -> String {
    group
        .effective
        .iter()
        .find(|e| e.setting == setting)
        .map(|e| value_text(setting, e.value))
        .unwrap_or_default()
}

fn print_group(group: &HostGroup) {
    print_fields(&[
        ("Name", group.name.clone()),
        ("Id", group.id.to_string()),
        ("Path", group.path.clone()),
        ("Hosts", group.host_count.to_string()),
        ("Groups", group.child_count.to_string()),
        ("Created", time(&group.created_at)),
    ]);
    println!();
    let mut table = Table::new(&["SETTING", "VALUE", "FROM"]);
    for item in &group.effective {
        let from = if item.from == group.name {
            "this group".to_owned()
        } else {
            format!("inherited from {}", item.from)
        };
        table.row(vec![
            item.setting.to_string(),
            value_text(item.setting, item.value),
            from,
        ]);
    }
    table.print();
}

fn print_one(group: &HostGroup, output: OutputFormat) -> Result<(), CliError> {
    match output {
        OutputFormat::Json => print_json(group),
        OutputFormat::Table => {
            print_group(group);
            Ok(())
        }
    }
}

pub async fn run(
    client: &Client,
    command: &HostGroupCommand,
    output: OutputFormat,
) -> Result<(), CliError> {
    match command {
        HostGroupCommand::Create {
            name,
            parent,
            settings,
        } => {
            let create = HostGroupCreate {
                name: name.clone(),
                parent: parent.clone(),
                settings: settings.settings(),
            };
            print_one(&client.create_host_group(&create).await?, output)
        }
        HostGroupCommand::List => {
            let groups = client.host_groups().await?;
            if output == OutputFormat::Json {
                return print_json(&groups);
            }
            let mut table = Table::new(&[
                "PATH",
                "HOSTS",
                "GROUPS",
                "RESERVE CPU",
                "RESERVE MEMORY",
                "RESERVE DISK",
            ]);
            for group in &groups {
                table.row(vec![
                    group.path.clone(),
                    group.host_count.to_string(),
                    group.child_count.to_string(),
                    effective(group, GroupSetting::ReserveCpuPercent),
                    effective(group, GroupSetting::ReserveMemoryMib),
                    effective(group, GroupSetting::ReserveDiskBytes),
                ]);
            }
            table.print();
            Ok(())
        }
        HostGroupCommand::Show { group } => print_one(&client.host_group(group).await?, output),
        HostGroupCommand::Move { group, parent } => {
            let update = HostGroupUpdate {
                parent: Some(parent.clone()),
                ..HostGroupUpdate::default()
            };
            print_one(&client.update_host_group(group, &update).await?, output)
        }
        HostGroupCommand::Set {
            group,
            settings,
            inherit,
        } => {
            let update = HostGroupUpdate {
                parent: None,
                settings: settings.settings(),
                inherit: inherit.clone(),
            };
            print_one(&client.update_host_group(group, &update).await?, output)
        }
        HostGroupCommand::Delete { group } => {
            client.delete_host_group(group).await?;
            if output == OutputFormat::Table {
                println!("deleted host group {group}");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_names() {
        assert_eq!(
            parse_setting("reserve-cpu-percent"),
            Ok(GroupSetting::ReserveCpuPercent)
        );
        assert_eq!(parse_setting("weight_disk"), Ok(GroupSetting::WeightDisk));
        assert!(parse_setting("colour").is_err());
        assert_eq!(value_text(GroupSetting::ReserveMemoryMib, 1024), "1 GiB");
        assert_eq!(value_text(GroupSetting::ReserveCpuPercent, 10), "10 %");
    }
}
