//! Intelligent placement: how well each host fits a VM, 0 to 5 stars in half stars, with the
//! reasons in words (`POST /api/v1/placement/rate`).

use crate::id::HostId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What the rating favours.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PlacementGoal {
    /// Spread VMs: the host with the most room left rates best.
    #[default]
    LoadBalance,
    /// Pack VMs: the fullest host that still fits rates best.
    Consolidate,
}

impl fmt::Display for PlacementGoal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PlacementGoal::LoadBalance => "load_balance",
            PlacementGoal::Consolidate => "consolidate",
        })
    }
}

/// Body of `POST /api/v1/placement/rate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlacementRequest {
    /// vCPUs; from the template's hardware profile when absent and `template` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Memory; from the template's hardware profile when absent and `template` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Disk space the VM may come to use; for a template, its disk's virtual size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    /// Template (id or name) whose hardware profile and disk give the figures not set above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Networks (names) the VM's NICs use: a host that cannot carry one of them rates 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Group id or name whose subtree holds the candidates; "All Hosts" when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default)]
    pub goal: PlacementGoal,
}

/// One host's rating.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostRating {
    pub host_id: HostId,
    pub host_name: String,
    /// 0 to 5 in steps of 0.5; 0 means the VM cannot go there.
    pub rating: f64,
    /// The score behind the rating, 0 to 1, which orders hosts of equal stars.
    pub score: f64,
    /// Why, one line per resource (or the one reason the host is out).
    pub reasons: Vec<String>,
}

/// Answer of `POST /api/v1/placement/rate`: every candidate, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlacementRating {
    /// The group whose subtree was rated.
    pub group: String,
    pub goal: PlacementGoal,
    pub ratings: Vec<HostRating>,
}
