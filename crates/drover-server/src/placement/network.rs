//! What a VM's networks ask of a host: a network scoped to a host group is carried only by the
//! hosts of that group's subtree, and a host on which a network needs attention (a `bridged`
//! network whose uplink it lacks, say) cannot carry it. Either rules the host out for the VM,
//! with the reason in words.

use crate::db;
use crate::db::hostgroups::GroupTree;
use crate::http::ApiError;
use crate::state::AppState;
use drover_api::network::NetworkHostState;
use drover_api::{Host, HostGroupId, Network};

/// Why a host cannot carry one of a VM's networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkBlocker {
    /// The host realized the network and reported it cannot carry it.
    NeedsAttention { network: String, reason: String },
    /// The network is scoped to a group the host is not in.
    OutOfGroup { network: String, group: String },
}

impl NetworkBlocker {
    /// The blocker as a rating's reason.
    pub fn reason(&self) -> String {
        match self {
            NetworkBlocker::NeedsAttention { network, reason } => {
                format!("network {network}: needs attention on this host: {reason}")
            }
            NetworkBlocker::OutOfGroup { network, group } => {
                format!("network {network}: carried only by the hosts of group {group}")
            }
        }
    }

    /// The blocker as the error of a request that named the host.
    pub fn into_error(self, host: &str) -> ApiError {
        match self {
            NetworkBlocker::NeedsAttention { network, reason } => ApiError::NetworkNeedsAttention {
                network,
                host: host.to_owned(),
                reason,
            },
            NetworkBlocker::OutOfGroup { network, group } => ApiError::NetworkNotInGroup {
                network,
                group,
                host: host.to_owned(),
            },
        }
    }
}

/// Whether the group a network is scoped to holds `host_group` (any group when unscoped). A
/// scope the tree no longer has holds nothing.
pub fn in_scope(network: &Network, tree: &GroupTree, host_group: HostGroupId) -> bool {
    match &network.group {
        None => true,
        Some(name) => tree
            .find(name)
            .is_some_and(|group| tree.contains(group.id, host_group)),
    }
}

/// Everything that keeps the host named `host_name`, in group `host_group`, from carrying
/// `networks`.
pub fn blockers(
    networks: &[Network],
    tree: &GroupTree,
    host_name: &str,
    host_group: HostGroupId,
) -> Vec<NetworkBlocker> {
    let mut found = Vec::new();
    for network in networks {
        if let Some(group) = &network.group
            && !in_scope(network, tree, host_group)
        {
            found.push(NetworkBlocker::OutOfGroup {
                network: network.name.clone(),
                group: group.clone(),
            });
        }
        if let Some(entry) = network.hosts.iter().find(|entry| {
            entry.host_name == host_name && entry.state == NetworkHostState::NeedsAttention
        }) {
            found.push(NetworkBlocker::NeedsAttention {
                network: network.name.clone(),
                reason: entry.reason.clone().unwrap_or_default(),
            });
        }
    }
    found
}

/// Refuses `host` for a VM on `networks` when it cannot carry one of them, with the reason.
pub async fn check_host(
    state: &AppState,
    networks: &[Network],
    host: &Host,
) -> Result<(), ApiError> {
    let tree = db::hostgroups::tree(&state.db).await?;
    match blockers(networks, &tree, &host.name, host.group_id)
        .into_iter()
        .next()
    {
        Some(blocker) => Err(blocker.into_error(&host.name)),
        None => Ok(()),
    }
}

/// Whether a network scoped to group `scope` still holds the hosts of group `moved` once
/// `moved` hangs under `new_parent`: the scope moves along (it is in `moved`'s subtree) or
/// already holds the new parent.
pub fn scope_keeps_moved_group(
    tree: &GroupTree,
    scope: HostGroupId,
    moved: HostGroupId,
    new_parent: HostGroupId,
) -> bool {
    tree.contains(moved, scope) || tree.contains(scope, new_parent)
}

/// The networks the hosts of group `moved` carry that moving it under `new_parent` would take
/// them out of, as "NETWORK on HOST".
pub async fn left_by_group_move(
    state: &AppState,
    tree: &GroupTree,
    moved: HostGroupId,
    new_parent: HostGroupId,
) -> Result<Vec<String>, ApiError> {
    let mut left = Vec::new();
    for host in db::hosts::all(&state.db).await? {
        if !tree.contains(moved, host.group_id) {
            continue;
        }
        for network in db::networks::carried_by(&state.db, host.id).await? {
            let Some(scope) = network.group.as_deref().and_then(|name| tree.find(name)) else {
                continue;
            };
            if !scope_keeps_moved_group(tree, scope.id, moved, new_parent) {
                left.push(format!("{} on {}", network.name, host.name));
            }
        }
    }
    Ok(left)
}
