//! Virtualization hosts as the API shows them.

use crate::id::{HostGroupId, HostId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    Responding,
    NeedsAttention,
    NotResponding,
    Maintenance,
}

impl HostState {
    pub const ALL: [HostState; 4] = [
        HostState::Responding,
        HostState::NeedsAttention,
        HostState::NotResponding,
        HostState::Maintenance,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Responding => "responding",
            HostState::NeedsAttention => "needs_attention",
            HostState::NotResponding => "not_responding",
            HostState::Maintenance => "maintenance",
        }
    }

    pub fn parse(text: &str) -> Option<HostState> {
        HostState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostState::Responding => "Responding",
            HostState::NeedsAttention => "Needs Attention",
            HostState::NotResponding => "Not Responding",
            HostState::Maintenance => "Maintenance",
        })
    }
}

/// How a host runs guests: hardware virtualization, or QEMU's software emulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Accelerator {
    Kvm,
    Tcg,
}

impl Accelerator {
    pub fn as_str(self) -> &'static str {
        match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accelerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A managed host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Host {
    pub id: HostId,
    pub name: String,
    /// `host:port` of the agent's control endpoint.
    pub address: String,
    pub state: HostState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    pub cpus: u32,
    pub memory_mib: u64,
    pub memory_free_mib: u64,
    pub disk_free_bytes: u64,
    /// CPU load over the last minute, as a share of all the host's CPUs (0 to 100).
    pub cpu_load_percent: u32,
    pub accelerator: Accelerator,
    pub agent_version: String,
    pub vm_count: u32,
    pub group_id: HostGroupId,
    pub group_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Body of `POST /api/v1/hosts`: enroll the agent at `address` with its one-time code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostAdd {
    /// `host:port` of the agent's control endpoint (port 8101 unless configured otherwise).
    pub address: String,
    /// The one-time enrollment code the agent printed at its first start.
    pub enrollment_code: String,
    /// Name in Drover; defaults to the host name the agent reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
