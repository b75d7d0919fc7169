//! The rating function: how well one host fits one VM, from figures alone (no I/O), so that it
//! is table-tested and rates 1,000 hosts in well under a millisecond.
//!
//! A host is out (0 stars) when it is not Responding, is in maintenance, has fewer CPUs than the
//! VM asks for, or lacks the memory or disk the VM needs after its group's reserves and what its
//! VMs have claimed. CPU load above the share the group leaves usable scores the CPU 0 but does
//! not rule the host out (load swings by the second). Otherwise each resource
//! scores the share of its capacity left once the VM is there (CPU: half live load, half vCPUs
//! claimed against a nominal overcommit), the group's weights combine the scores, and the goal
//! decides whether room (load balance) or fullness (consolidate) rates high. A host that fits
//! never rates below half a star, so 0 always means "cannot".

use drover_api::hostgroup::GroupSettings;
use drover_api::size::format_bytes;
use drover_api::{HostId, HostRating, HostState, PlacementGoal};

/// vCPUs per host CPU that count as "full" in the CPU score. vCPUs are not a hard limit (10 idle
/// guests share 2 cores well); memory and disk are.
pub const VCPUS_PER_CPU: u64 = 4;
const MIB: u64 = 1 << 20;

/// What the VMs on a host have claimed, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Claimed {
    pub vms: u64,
    pub cpus: u64,
    pub memory_mib: u64,
    pub disk_bytes: u64,
}

/// A host as placement sees it: the agent's latest figures and the claims of its VMs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub id: HostId,
    pub name: String,
    pub state: HostState,
    pub state_reason: Option<String>,
    pub cpus: u32,
    pub memory_mib: u64,
    pub memory_free_mib: u64,
    pub disk_free_bytes: u64,
    pub cpu_load_percent: u32,
    pub claimed: Claimed,
}

/// The reserves and weights in force for a host (its group's effective settings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    pub reserve_cpu_percent: u32,
    pub reserve_memory_mib: u64,
    pub reserve_disk_bytes: u64,
    pub weight_cpu: u32,
    pub weight_memory: u32,
    pub weight_disk: u32,
    pub weight_network: u32,
}

impl From<&GroupSettings> for Policy {
    fn from(settings: &GroupSettings) -> Policy {
        Policy {
            reserve_cpu_percent: settings.reserve_cpu_percent.unwrap_or_default().min(100),
            reserve_memory_mib: settings.reserve_memory_mib.unwrap_or_default(),
            reserve_disk_bytes: settings.reserve_disk_bytes.unwrap_or_default(),
            weight_cpu: settings.weight_cpu.unwrap_or_default(),
            weight_memory: settings.weight_memory.unwrap_or_default(),
            weight_disk: settings.weight_disk.unwrap_or_default(),
            weight_network: settings.weight_network.unwrap_or_default(),
        }
    }
}

/// What the VM asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_bytes: u64,
}

fn mib(value: u64) -> String {
    format_bytes(value.saturating_mul(MIB))
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 / whole as f64).clamp(0.0, 1.0)
}

/// `host` rated 0: the VM cannot go there, for `reasons`.
pub fn ruled_out(host: &HostFacts, reasons: Vec<String>) -> HostRating {
    HostRating {
        host_id: host.id,
        host_name: host.name.clone(),
        rating: 0.0,
        score: 0.0,
        reasons,
    }
}

/// Rates `host` for a VM asking `demand` under `policy`.
pub fn rate(host: &HostFacts, policy: &Policy, demand: &Demand, goal: PlacementGoal) -> HostRating {
    match host.state {
        HostState::Responding => {}
        HostState::Maintenance => {
            return ruled_out(
                host,
                vec!["host is in maintenance mode: no new VMs are placed on it".to_owned()],
            );
        }
        HostState::NotResponding | HostState::NeedsAttention => {
            let why = host
                .state_reason
                .as_deref()
                .map(|reason| format!(": {reason}"))
                .unwrap_or_default();
            return ruled_out(host, vec![format!("host is {}{why}", host.state)]);
        }
    }
    let claimed = host.claimed;
    let mut blockers = Vec::new();
    let mut reasons = Vec::new();

    // CPU: a hard limit on vCPUs per VM only. Live load is soft: it swings by the second (a
    // build on a shared host reads 100 %), so it lowers the score instead of ruling hosts out.
    let usable_percent = 100 - policy.reserve_cpu_percent.min(100);
    let cpu_slots = u64::from(host.cpus) * VCPUS_PER_CPU;
    let claimed_cpus = claimed.cpus + u64::from(demand.cpus);
    if demand.cpus > host.cpus {
        blockers.push(format!(
            "cpu: VM needs {} vCPUs, host has {} CPUs",
            demand.cpus, host.cpus
        ));
    }
    let load_room = ratio(
        u64::from(usable_percent.saturating_sub(host.cpu_load_percent)),
        u64::from(usable_percent),
    );
    let slot_room = 1.0 - ratio(claimed_cpus, cpu_slots);
    let cpu_score = (load_room + slot_room) / 2.0;
    let load_text = if host.cpu_load_percent >= usable_percent {
        format!(
            "load {} % is above the {usable_percent} % usable after the {} % reserve",
            host.cpu_load_percent, policy.reserve_cpu_percent
        )
    } else {
        format!(
            "load {} % of {usable_percent} % usable",
            host.cpu_load_percent
        )
    };
    reasons.push(format!(
        "cpu: {load_text}, {claimed_cpus} of {cpu_slots} vCPU slots with this VM (weight {})",
        policy.weight_cpu
    ));

    // Memory: never overcommitted. Claims are the bound; the live figure catches other users.
    let memory_capacity = host.memory_mib.saturating_sub(policy.reserve_memory_mib);
    let memory_left = memory_capacity.saturating_sub(claimed.memory_mib);
    if memory_left < demand.memory_mib {
        blockers.push(format!(
            "memory: {} free after reserves and {} VMs, VM needs {}",
            mib(memory_left),
            claimed.vms,
            mib(demand.memory_mib)
        ));
    } else if host.memory_free_mib < demand.memory_mib {
        blockers.push(format!(
            "memory: only {} free on the host now, VM needs {}",
            mib(host.memory_free_mib),
            mib(demand.memory_mib)
        ));
    }
    let memory_score = ratio(
        memory_left.saturating_sub(demand.memory_mib),
        memory_capacity,
    );
    reasons.push(format!(
        "memory: {} free after reserves and {} VMs, VM needs {} (weight {})",
        mib(memory_left),
        claimed.vms,
        mib(demand.memory_mib),
        policy.weight_memory
    ));

    // Disk: blank disks count at full size, since thin disks may fill.
    let disk_capacity = host
        .disk_free_bytes
        .saturating_sub(policy.reserve_disk_bytes);
    let disk_left = disk_capacity.saturating_sub(claimed.disk_bytes);
    if disk_left < demand.disk_bytes {
        blockers.push(format!(
            "disk: {} free after reserves and claimed disks, VM needs {}",
            format_bytes(disk_left),
            format_bytes(demand.disk_bytes)
        ));
    }
    let disk_score = ratio(disk_left.saturating_sub(demand.disk_bytes), disk_capacity);
    reasons.push(format!(
        "disk: {} free after reserves and claimed disks, VM needs {} (weight {})",
        format_bytes(disk_left),
        format_bytes(demand.disk_bytes),
        policy.weight_disk
    ));

    // Network: agents report no traffic figures yet; every host counts as idle.
    let network_score = 1.0;
    reasons.push(format!(
        "network: no traffic figures yet, counted as idle (weight {})",
        policy.weight_network
    ));

    if !blockers.is_empty() {
        return ruled_out(host, blockers);
    }
    let weighted = [
        (policy.weight_cpu, cpu_score),
        (policy.weight_memory, memory_score),
        (policy.weight_disk, disk_score),
        (policy.weight_network, network_score),
    ];
    let total_weight: u32 = weighted.iter().map(|(weight, _)| weight).sum();
    let room = if total_weight == 0 {
        1.0
    } else {
        weighted
            .iter()
            .map(|(weight, score)| f64::from(*weight) * score)
            .sum::<f64>()
            / f64::from(total_weight)
    };
    let score = match goal {
        PlacementGoal::LoadBalance => room,
        PlacementGoal::Consolidate => 1.0 - room,
    };
    HostRating {
        host_id: host.id,
        host_name: host.name.clone(),
        rating: ((score * 10.0).round() / 2.0).clamp(0.5, 5.0),
        score,
        reasons,
    }
}

/// Best first: rating, then score, then name (so that equal hosts order the same every time).
pub fn compare(a: &HostRating, b: &HostRating) -> std::cmp::Ordering {
    b.rating
        .total_cmp(&a.rating)
        .then(b.score.total_cmp(&a.score))
        .then_with(|| a.host_name.cmp(&b.host_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB_MIB: u64 = 1024;

    fn host(name: &str) -> HostFacts {
        HostFacts {
            id: HostId::new(),
            name: name.to_owned(),
            state: HostState::Responding,
            state_reason: None,
            cpus: 8,
            memory_mib: 16 * GIB_MIB,
            memory_free_mib: 12 * GIB_MIB,
            disk_free_bytes: 100 << 30,
            cpu_load_percent: 10,
            claimed: Claimed::default(),
        }
    }

    fn policy() -> Policy {
        Policy {
            reserve_cpu_percent: 10,
            reserve_memory_mib: 1024,
            reserve_disk_bytes: 1 << 30,
            weight_cpu: 1,
            weight_memory: 1,
            weight_disk: 1,
            weight_network: 1,
        }
    }

    const VM: Demand = Demand {
        cpus: 2,
        memory_mib: 2 * GIB_MIB,
        disk_bytes: 10 << 30,
    };

    #[test]
    fn rating_table() {
        let mut full_memory = host("full-memory");
        full_memory.claimed = Claimed {
            vms: 3,
            cpus: 6,
            memory_mib: 13 * GIB_MIB + 800,
            disk_bytes: 0,
        };
        let mut maintenance = host("maintenance");
        maintenance.state = HostState::Maintenance;
        let mut lost = host("lost");
        lost.state = HostState::NotResponding;
        lost.state_reason = Some("host not responding".to_owned());
        let mut small = host("small");
        small.cpus = 1;
        let mut busy = host("busy");
        busy.cpu_load_percent = 95;
        let mut no_disk = host("no-disk");
        no_disk.disk_free_bytes = 5 << 30;
        let mut half_full = host("half-full");
        half_full.claimed = Claimed {
            vms: 2,
            cpus: 16,
            memory_mib: 7 * GIB_MIB,
            disk_bytes: 40 << 30,
        };
        let mut starved = host("starved-live");
        starved.memory_free_mib = 1024;
        let empty = host("empty");

        // (host, goal, expected stars, a reason that must appear)
        let cases: Vec<(HostFacts, PlacementGoal, f64, &str)> = vec![
            (
                full_memory,
                PlacementGoal::LoadBalance,
                0.0,
                "memory: 1.2 GiB free after reserves and 3 VMs, VM needs 2 GiB",
            ),
            (
                maintenance,
                PlacementGoal::LoadBalance,
                0.0,
                "maintenance mode",
            ),
            (
                lost,
                PlacementGoal::LoadBalance,
                0.0,
                "host is Not Responding: host not responding",
            ),
            (
                small,
                PlacementGoal::LoadBalance,
                0.0,
                "VM needs 2 vCPUs, host has 1 CPUs",
            ),
            (
                busy,
                PlacementGoal::LoadBalance,
                4.0,
                "cpu: load 95 % is above the 90 % usable after the 10 % reserve",
            ),
            (
                no_disk,
                PlacementGoal::LoadBalance,
                0.0,
                "disk: 4 GiB free after reserves",
            ),
            (
                starved,
                PlacementGoal::LoadBalance,
                0.0,
                "only 1 GiB free on the host now",
            ),
            (
                empty.clone(),
                PlacementGoal::LoadBalance,
                4.5,
                "cpu: load 10 % of 90 % usable",
            ),
            (
                half_full.clone(),
                PlacementGoal::LoadBalance,
                3.0,
                "memory: 8 GiB free",
            ),
            (
                empty,
                PlacementGoal::Consolidate,
                0.5,
                "network: no traffic figures",
            ),
            (
                half_full,
                PlacementGoal::Consolidate,
                2.0,
                "disk: 59 GiB free",
            ),
        ];
        for (host, goal, stars, reason) in cases {
            let rating = rate(&host, &policy(), &VM, goal);
            assert_eq!(rating.rating, stars, "{}: {:?}", host.name, rating.reasons);
            assert!(
                rating.reasons.iter().any(|line| line.contains(reason)),
                "{}: {:?} lacks {reason:?}",
                host.name,
                rating.reasons
            );
        }
    }

    #[test]
    fn weights_and_goals_order_hosts() {
        let roomy = host("roomy");
        let mut fuller = host("fuller");
        fuller.claimed = Claimed {
            vms: 4,
            cpus: 8,
            memory_mib: 10 * GIB_MIB,
            disk_bytes: 0,
        };
        let rate_all = |goal, policy: &Policy| {
            let mut ratings: Vec<HostRating> = [&fuller, &roomy]
                .iter()
                .map(|host| rate(host, policy, &VM, goal))
                .collect();
            ratings.sort_by(compare);
            ratings.into_iter().map(|r| r.host_name).collect::<Vec<_>>()
        };
        assert_eq!(
            rate_all(PlacementGoal::LoadBalance, &policy()),
            ["roomy", "fuller"]
        );
        assert_eq!(
            rate_all(PlacementGoal::Consolidate, &policy()),
            ["fuller", "roomy"]
        );
        // With only the network weighed, both hosts are equal and the name decides.
        let network_only = Policy {
            weight_cpu: 0,
            weight_memory: 0,
            weight_disk: 0,
            ..policy()
        };
        assert_eq!(
            rate_all(PlacementGoal::LoadBalance, &network_only),
            ["fuller", "roomy"]
        );
        // A fitting host never shows 0 stars, even when consolidating onto an empty one.
        let all_room = rate(&roomy, &network_only, &VM, PlacementGoal::Consolidate);
        assert_eq!(all_room.rating, 0.5);
    }
}
