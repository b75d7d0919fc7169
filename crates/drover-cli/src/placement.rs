//! `drover placement rate`: every candidate host of a group rated 0 to 5 stars for a VM, best
//! first, with the reasons for each.

use crate::CliError;
use crate::output::{OutputFormat, Table, print_json};
use crate::vm::parse_memory_mib;
use drover_api::size::parse_bytes;
use drover_api::{PlacementGoal, PlacementRequest};
use drover_client::Client;

/// `--goal` on the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Goal {
    /// Spread VMs over hosts.
    #[default]
    LoadBalance,
    /// Pack VMs on as few hosts as possible.
    Consolidate,
}

impl From<Goal> for PlacementGoal {
    fn from(goal: Goal) -> PlacementGoal {
        match goal {
            Goal::LoadBalance => PlacementGoal::LoadBalance,
            Goal::Consolidate => PlacementGoal::Consolidate,
        }
    }
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum PlacementCommand {
    /// Rate every host of a group for a VM of this size (or of a template's).
    Rate {
        /// vCPUs (default: the template's, else 1).
        #[arg(long)]
        cpus: Option<u32>,
        /// Memory, such as 256M or 2G (default: the template's, else 256M).
        #[arg(long, value_parser = parse_memory_mib)]
        memory: Option<u64>,
        /// Disk size, such as 10G (default: the template disk's virtual size, else none).
        #[arg(long, value_parser = parse_bytes)]
        disk: Option<u64>,
        /// Template (id or name) whose hardware profile and disk give the sizes not set above.
        #[arg(long)]
        template: Option<String>,
        /// A network the VM's NICs use (repeat for several): hosts that cannot carry it rate 0.
        #[arg(long = "network", value_name = "NETWORK")]
        networks: Vec<String>,
        /// Group id or name (default: All Hosts).
        #[arg(long)]
        group: Option<String>,
        #[arg(long, value_enum, default_value_t = Goal::LoadBalance)]
        goal: Goal,
    },
}

/// Memory of the VM rated when neither `--memory` nor `--template` says.
const DEFAULT_MEMORY_MIB: u64 = 256;

/// Half stars as people read them: `★★★½☆ 3.5`.
fn stars(rating: f64) -> String {
    let halves = (rating * 2.0).round().clamp(0.0, 10.0) as usize;
    let full = "★".repeat(halves / 2);
    let half = if halves % 2 == 1 { "½" } else { "" };
    let empty = "☆".repeat(5 - halves / 2 - halves % 2);
    format!("{full}{half}{empty} {rating}")
}

pub async fn run(
    client: &Client,
    command: &PlacementCommand,
    output: OutputFormat,
) -> Result<(), CliError> {
    let PlacementCommand::Rate {
        cpus,
        memory,
        disk,
        template,
        networks,
        group,
        goal,
    } = command;
    // Without a template the server needs every figure: the CLI's defaults fill them.
    let defaults = template.is_none();
    let request = PlacementRequest {
        cpus: cpus.or(defaults.then_some(1)),
        memory_mib: memory.or(defaults.then_some(DEFAULT_MEMORY_MIB)),
        disk_bytes: *disk,
        template: template.clone(),
        networks: networks.clone(),
        group: group.clone(),
        goal: (*goal).into(),
    };
    let rating = client.rate_placement(&request).await?;
    if output == OutputFormat::Json {
        return print_json(&rating);
    }
    println!("Hosts of {} rated for {}", rating.group, rating.goal);
    let mut table = Table::new(&["HOST", "RATING", "REASONS"]);
    for host in &rating.ratings {
        let mut reasons = host.reasons.iter();
        table.row(vec![
            host.host_name.clone(),
            stars(host.rating),
            reasons.next().cloned().unwrap_or_default(),
        ]);
        for reason in reasons {
            table.row(vec![String::new(), String::new(), reason.clone()]);
        }
    }
    table.print();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_stars() {
        assert_eq!(stars(0.0), "☆☆☆☆☆ 0");
        assert_eq!(stars(3.5), "★★★½☆ 3.5");
        assert_eq!(stars(5.0), "★★★★★ 5");
    }
}
