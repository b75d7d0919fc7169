//! Intelligent placement: rates the hosts of a group's subtree for a VM (`POST
//! /api/v1/placement/rate`) and picks the host of a `vm create` that names none. Reads the
//! group tree and every host's figures and claims in two queries, then rates in memory with
//! the pure [`rating::rate`]. Taking capacity is the database's job ([`db::placement::claim`]),
//! so two creates rated at the same moment cannot both take the last room on a host. A host
//! that cannot carry one of the VM's networks ([`network::blockers`]) rates 0 with the reason.

pub mod network;
pub mod rating;

use crate::db;
use crate::db::hostgroups::GroupTree;
use crate::db::placement::Reserves;
use crate::http::ApiError;
use crate::state::AppState;
use drover_api::{HostGroupId, HostId, HostRating, Network, PlacementGoal, VmDisk};
use network::NetworkBlocker;
use rating::{Demand, HostFacts, Policy};
use std::collections::HashMap;

/// A rated host and the reserves its claim must respect.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub rating: HostRating,
    pub reserves: Reserves,
}

/// The candidates of one rating, best first, and the group they were drawn from.
#[derive(Debug, Clone)]
pub struct Rated {
    pub group: String,
    pub candidates: Vec<Candidate>,
}

/// What a VM asks of a host: capacity, and the networks its NICs use.
#[derive(Debug, Clone, Copy)]
pub struct Needs<'a> {
    pub demand: Demand,
    pub networks: &'a [Network],
}

fn rate_where(
    tree: &GroupTree,
    facts: Vec<(HostFacts, HostGroupId)>,
    keep: impl Fn(&HostFacts, HostGroupId) -> bool,
    needs: Needs<'_>,
    goal: PlacementGoal,
) -> Vec<Candidate> {
    let mut policies: HashMap<HostGroupId, Policy> = HashMap::new();
    let mut candidates: Vec<Candidate> = facts
        .into_iter()
        .filter(|(host, group)| keep(host, *group))
        .map(|(host, group)| {
            let policy = *policies
                .entry(group)
                .or_insert_with(|| Policy::from(&tree.effective(group).settings));
            let network_blockers = network::blockers(needs.networks, tree, &host.name, group);
            let mut rated = rating::rate(&host, &policy, &needs.demand, goal);
            if !network_blockers.is_empty() {
                let mut reasons: Vec<String> = network_blockers
                    .iter()
                    .map(NetworkBlocker::reason)
                    .collect();
                if rated.rating == 0.0 {
                    reasons.append(&mut rated.reasons);
                }
                rated = rating::ruled_out(&host, reasons);
            }
            Candidate {
                rating: rated,
                reserves: Reserves {
                    memory_mib: policy.reserve_memory_mib,
                    disk_bytes: policy.reserve_disk_bytes,
                },
            }
        })
        .collect();
    candidates.sort_by(|a, b| rating::compare(&a.rating, &b.rating));
    candidates
}

/// Rates every host in the subtree of `group` (id or name; "All Hosts" when `None`).
pub async fn rate_group(
    state: &AppState,
    group: Option<&str>,
    needs: Needs<'_>,
    goal: PlacementGoal,
) -> Result<Rated, ApiError> {
    let tree = db::hostgroups::tree(&state.db).await?;
    let root = match group {
        Some(name) => tree
            .find(name)
            .ok_or_else(|| ApiError::HostGroupNotFound(name.to_owned()))?,
        None => tree
            .get(db::hostgroups::root_id())
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the root host group is missing")))?,
    };
    let root_id = root.id;
    let group_name = root.name.clone();
    let facts = db::placement::facts(&state.db).await?;
    let candidates = rate_where(
        &tree,
        facts,
        |_, host_group| tree.contains(root_id, host_group),
        needs,
        goal,
    );
    Ok(Rated {
        group: group_name,
        candidates,
    })
}

/// Rates one host, under its own group's settings.
pub async fn rate_host(
    state: &AppState,
    host_id: HostId,
    needs: Needs<'_>,
) -> Result<Candidate, ApiError> {
    let tree = db::hostgroups::tree(&state.db).await?;
    let facts = db::placement::facts(&state.db).await?;
    rate_where(
        &tree,
        facts,
        |host, _| host.id == host_id,
        needs,
        PlacementGoal::LoadBalance,
    )
    .pop()
    .ok_or_else(|| ApiError::HostNotFound(host_id.to_string()))
}

/// Host disk space a VM's disk may come to use, as placement claims it: a blank disk's size; a
/// linked clone of a library disk, its base's virtual size, the most the overlay can grow to
/// (SCVMM counted a dynamic VHD at its maximum size too); an overlay on an image path of the
/// host, 0, since the server cannot see the host's files.
pub async fn disk_claim(state: &AppState, disk: &VmDisk) -> Result<u64, ApiError> {
    match disk {
        VmDisk::Library { item, .. } => Ok(db::library::item(&state.db, item)
            .await?
            .ok_or_else(|| ApiError::LibraryItemNotFound(item.clone()))?
            .file
            .virtual_size),
        other => Ok(other.committed_bytes()),
    }
}

/// The ratings as a job step's detail: one line per host, the chosen one marked, at most
/// `limit` hosts (a group of 1,000 would drown the job).
pub fn describe(candidates: &[Candidate], chosen: Option<HostId>, limit: usize) -> String {
    let mut lines: Vec<String> = candidates
        .iter()
        .take(limit)
        .map(|candidate| {
            let rating = &candidate.rating;
            let mark = if Some(rating.host_id) == chosen {
                " (chosen)"
            } else {
                ""
            };
            format!(
                "{} {} stars{mark}: {}",
                rating.host_name,
                rating.rating,
                rating.reasons.join("; ")
            )
        })
        .collect();
    if candidates.len() > limit {
        lines.push(format!("... and {} more hosts", candidates.len() - limit));
    }
    lines.join("\n")
}
