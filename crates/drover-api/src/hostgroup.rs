//! Host groups: a tree rooted at "All Hosts". Each group holds host reserves (what is kept back
//! for the host itself) and the weights of the placement rating; a setting a group does not set
//! is inherited from its parent.

use crate::id::HostGroupId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The name of the root group, which the first migration creates and nothing can delete.
pub const ROOT_GROUP_NAME: &str = "All Hosts";

/// The settings a group may set; `None` inherits the parent's value. The root sets them all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupSettings {
    /// Share of the host's CPU kept back for the host, 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_cpu_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_disk_bytes: Option<u64>,
    /// Weights of the placement rating, 0 to 100 each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_cpu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_memory: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_disk: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_network: Option<u32>,
}

/// One setting by name, to return it to inheritance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupSetting {
    ReserveCpuPercent,
    ReserveMemoryMib,
    ReserveDiskBytes,
    WeightCpu,
    WeightMemory,
    WeightDisk,
    WeightNetwork,
}

impl GroupSetting {
    pub const ALL: [GroupSetting; 7] = [
        GroupSetting::ReserveCpuPercent,
        GroupSetting::ReserveMemoryMib,
        GroupSetting::ReserveDiskBytes,
        GroupSetting::WeightCpu,
        GroupSetting::WeightMemory,
        GroupSetting::WeightDisk,
        GroupSetting::WeightNetwork,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GroupSetting::ReserveCpuPercent => "reserve_cpu_percent",
            GroupSetting::ReserveMemoryMib => "reserve_memory_mib",
            GroupSetting::ReserveDiskBytes => "reserve_disk_bytes",
            GroupSetting::WeightCpu => "weight_cpu",
            GroupSetting::WeightMemory => "weight_memory",
            GroupSetting::WeightDisk => "weight_disk",
            GroupSetting::WeightNetwork => "weight_network",
        }
    }
}

impl fmt::Display for GroupSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl GroupSettings {
    /// The value of one setting, as a number.
    pub fn get(&self, setting: GroupSetting) -> Option<u64> {
        match setting {
            GroupSetting::ReserveCpuPercent => self.reserve_cpu_percent.map(u64::from),
            GroupSetting::ReserveMemoryMib => self.reserve_memory_mib,
            GroupSetting::ReserveDiskBytes => self.reserve_disk_bytes,
            GroupSetting::WeightCpu => self.weight_cpu.map(u64::from),
            GroupSetting::WeightMemory => self.weight_memory.map(u64::from),
            GroupSetting::WeightDisk => self.weight_disk.map(u64::from),
            GroupSetting::WeightNetwork => self.weight_network.map(u64::from),
        }
    }

    /// Clears one setting, so that it is inherited again.
    pub fn clear(&mut self, setting: GroupSetting) {
        match setting {
            GroupSetting::ReserveCpuPercent => self.reserve_cpu_percent = None,
            GroupSetting::ReserveMemoryMib => self.reserve_memory_mib = None,
            GroupSetting::ReserveDiskBytes => self.reserve_disk_bytes = None,
            GroupSetting::WeightCpu => self.weight_cpu = None,
            GroupSetting::WeightMemory => self.weight_memory = None,
            GroupSetting::WeightDisk => self.weight_disk = None,
            GroupSetting::WeightNetwork => self.weight_network = None,
        }
    }

    /// `other`'s values where it has them, ours elsewhere.
    pub fn overlaid(&self, other: &GroupSettings) -> GroupSettings {
        GroupSettings {
            reserve_cpu_percent: other.reserve_cpu_percent.or(self.reserve_cpu_percent),
            reserve_memory_mib: other.reserve_memory_mib.or(self.reserve_memory_mib),
            reserve_disk_bytes: other.reserve_disk_bytes.or(self.reserve_disk_bytes),
            weight_cpu: other.weight_cpu.or(self.weight_cpu),
            weight_memory: other.weight_memory.or(self.weight_memory),
            weight_disk: other.weight_disk.or(self.weight_disk),
            weight_network: other.weight_network.or(self.weight_network),
        }
    }

    /// Bad values, in words: reserves above 100 %, weights above 100.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(percent) = self.reserve_cpu_percent
            && percent > 100
        {
            return Err(format!(
                "a CPU reserve of {percent} % is above 100 %; give 0 to 100"
            ));
        }
        for setting in [
            GroupSetting::WeightCpu,
            GroupSetting::WeightMemory,
            GroupSetting::WeightDisk,
            GroupSetting::WeightNetwork,
        ] {
            if let Some(weight) = self.get(setting)
                && weight > 100
            {
                return Err(format!("{setting} {weight} is above 100; give 0 to 100"));
            }
        }
        Ok(())
    }
}

/// A setting's value in force for a group and the group that sets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EffectiveSetting {
    pub setting: GroupSetting,
    pub value: u64,
    /// Name of the group that sets the value (the group itself or an ancestor).
    pub from: String,
}

/// A host group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostGroup {
    pub id: HostGroupId,
    pub name: String,
    /// `None` for the root, "All Hosts".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<HostGroupId>,
    /// The names from the root down to this group, joined by " / ".
    pub path: String,
    /// What this group sets itself.
    pub settings: GroupSettings,
    /// Every setting in force, with where it comes from.
    pub effective: Vec<EffectiveSetting>,
    /// Hosts directly in this group.
    pub host_count: u32,
    /// Groups directly under this group.
    pub child_count: u32,
    pub created_at: DateTime<Utc>,
}

/// Body of `POST /api/v1/hostgroups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostGroupCreate {
    pub name: String,
    /// Parent group id or name; "All Hosts" when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default)]
    pub settings: GroupSettings,
}

/// Body of `PATCH /api/v1/hostgroups/{group}`: a new parent, settings to set, settings to return
/// to inheritance. Nothing changes unless all of it is valid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostGroupUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default)]
    pub settings: GroupSettings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherit: Vec<GroupSetting>,
}

/// Body of `POST /api/v1/hosts/{host}/move`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostMove {
    /// Group id or name.
    pub group: String,
}

/// Body of `POST /api/v1/hosts/{host}/maintenance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostMaintenance {
    /// `true` stops new placements on the host; `false` returns it to service.
    pub enabled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_and_validation() {
        let root = GroupSettings {
            reserve_cpu_percent: Some(10),
            reserve_memory_mib: Some(256),
            ..GroupSettings::default()
        };
        let child = GroupSettings {
            reserve_memory_mib: Some(1024),
            ..GroupSettings::default()
        };
        let merged = root.overlaid(&child);
        assert_eq!(merged.reserve_cpu_percent, Some(10));
        assert_eq!(merged.reserve_memory_mib, Some(1024));
        assert!(merged.validate().is_ok());
        let too_much = GroupSettings {
            reserve_cpu_percent: Some(101),
            ..GroupSettings::default()
        };
        assert!(too_much.validate().is_err());
        let heavy = GroupSettings {
            weight_disk: Some(1000),
            ..GroupSettings::default()
        };
        assert!(heavy.validate().is_err());
        let mut cleared = merged;
        cleared.clear(GroupSetting::ReserveCpuPercent);
        assert_eq!(cleared.get(GroupSetting::ReserveCpuPercent), None);
    }
}
