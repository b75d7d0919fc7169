//! The host_groups table, the tree it forms, inheritance of settings down the tree, and the
//! conversion to [`drover_api::HostGroup`]. The tree is small (groups, not hosts), so it is read
//! whole and walked in memory.

use super::{Db, DbError, duplicate_as, parse_id, signed, unsigned};
use chrono::{DateTime, Utc};
use drover_api::hostgroup::{EffectiveSetting, GroupSetting, GroupSettings};
use drover_api::{HostGroup, HostGroupId};
use std::collections::HashMap;

/// The id the first placement migration gives "All Hosts".
pub const ROOT_GROUP_ID: &str = "00000000-0000-4000-8000-000000000001";

pub fn root_id() -> HostGroupId {
    ROOT_GROUP_ID
        .parse()
        .expect("the root group id is a valid UUID")
}

#[derive(sqlx::FromRow)]
struct GroupRow {
    id: String,
    name: String,
    parent_id: Option<String>,
    reserve_cpu_percent: Option<i64>,
    reserve_memory_mib: Option<i64>,
    reserve_disk_bytes: Option<i64>,
    weight_cpu: Option<i64>,
    weight_memory: Option<i64>,
    weight_disk: Option<i64>,
    weight_network: Option<i64>,
    created_at: DateTime<Utc>,
    host_count: i64,
    child_count: i64,
}

/// One group as stored, with its direct counts.
#[derive(Debug, Clone)]
pub struct GroupRecord {
    pub id: HostGroupId,
    pub name: String,
    pub parent_id: Option<HostGroupId>,
    pub settings: GroupSettings,
    pub created_at: DateTime<Utc>,
    pub host_count: u32,
    pub child_count: u32,
}

fn optional<T: TryFrom<i64>>(what: &'static str, value: Option<i64>) -> Result<Option<T>, DbError> {
    value.map(|value| unsigned(what, value)).transpose()
}

impl TryFrom<GroupRow> for GroupRecord {
    type Error = DbError;

    fn try_from(row: GroupRow) -> Result<GroupRecord, DbError> {
        Ok(GroupRecord {
            id: parse_id("host group id", &row.id)?,
            parent_id: row
                .parent_id
                .as_deref()
                .map(|id| parse_id("host group id", id))
                .transpose()?,
            settings: GroupSettings {
                reserve_cpu_percent: optional("reserve_cpu_percent", row.reserve_cpu_percent)?,
                reserve_memory_mib: optional("reserve_memory_mib", row.reserve_memory_mib)?,
                reserve_disk_bytes: optional("reserve_disk_bytes", row.reserve_disk_bytes)?,
                weight_cpu: optional("weight_cpu", row.weight_cpu)?,
                weight_memory: optional("weight_memory", row.weight_memory)?,
                weight_disk: optional("weight_disk", row.weight_disk)?,
                weight_network: optional("weight_network", row.weight_network)?,
            },
            name: row.name,
            created_at: row.created_at,
            host_count: unsigned("host_count", row.host_count)?,
            child_count: unsigned("child_count", row.child_count)?,
        })
    }
}

/// Every group, indexed; built by [`tree`].
#[derive(Debug, Clone)]
pub struct GroupTree {
    groups: HashMap<HostGroupId, GroupRecord>,
}

/// Settings in force: every field set, with the group each value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub settings: GroupSettings,
    pub from: Vec<EffectiveSetting>,
}

impl GroupTree {
    /// A group by id or name.
    pub fn find(&self, id_or_name: &str) -> Option<&GroupRecord> {
        if let Ok(id) = id_or_name.parse::<HostGroupId>() {
            return self.groups.get(&id);
        }
        self.groups.values().find(|group| group.name == id_or_name)
    }

    pub fn get(&self, id: HostGroupId) -> Option<&GroupRecord> {
        self.groups.get(&id)
    }

    /// The group and its ancestors, nearest first. Stops at a repeat, so a corrupt tree cannot
    /// loop.
    fn ancestry(&self, id: HostGroupId) -> Vec<&GroupRecord> {
        let mut chain: Vec<&GroupRecord> = Vec::new();
        let mut next = self.groups.get(&id);
        while let Some(group) = next {
            if chain.iter().any(|seen| seen.id == group.id) {
                break;
            }
            chain.push(group);
            next = group.parent_id.and_then(|parent| self.groups.get(&parent));
        }
        chain
    }

    /// Whether `candidate` is `group` or lies below it.
    pub fn contains(&self, group: HostGroupId, candidate: HostGroupId) -> bool {
        self.ancestry(candidate).iter().any(|g| g.id == group)
    }

    /// `group` and every group below it.
    pub fn subtree(&self, group: HostGroupId) -> Vec<HostGroupId> {
        self.groups
            .keys()
            .copied()
            .filter(|candidate| self.contains(group, *candidate))
            .collect()
    }

    /// The settings in force for a group: its own, else the nearest ancestor's.
    pub fn effective(&self, id: HostGroupId) -> Effective {
        let chain = self.ancestry(id);
        let mut settings = GroupSettings::default();
        let mut from = Vec::new();
        for setting in GroupSetting::ALL {
            if let Some(group) = chain.iter().find(|g| g.settings.get(setting).is_some()) {
                let value = group.settings.get(setting).unwrap_or_default();
                from.push(EffectiveSetting {
                    setting,
                    value,
                    from: group.name.clone(),
                });
            }
        }
        for group in chain.iter().rev() {
            settings = settings.overlaid(&group.settings);
        }
        Effective { settings, from }
    }

    /// The API's view of a group.
    pub fn to_api(&self, group: &GroupRecord) -> HostGroup {
        let mut names: Vec<&str> = self
            .ancestry(group.id)
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        names.reverse();
        HostGroup {
            id: group.id,
            name: group.name.clone(),
            parent_id: group.parent_id,
            path: names.join(" / "),
            settings: group.settings.clone(),
            effective: self.effective(group.id).from,
            host_count: group.host_count,
            child_count: group.child_count,
            created_at: group.created_at,
        }
    }

    /// Every group in tree order (parents before children, siblings by name).
    pub fn to_api_all(&self) -> Vec<HostGroup> {
        let mut ordered = Vec::with_capacity(self.groups.len());
        let mut children: HashMap<Option<HostGroupId>, Vec<&GroupRecord>> = HashMap::new();
        for group in self.groups.values() {
            children.entry(group.parent_id).or_default().push(group);
        }
        for siblings in children.values_mut() {
            siblings.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let mut stack: Vec<&GroupRecord> = children.get(&None).cloned().unwrap_or_default();
        stack.reverse();
        while let Some(group) = stack.pop() {
            ordered.push(self.to_api(group));
            if let Some(below) = children.get(&Some(group.id)) {
                stack.extend(below.iter().rev());
            }
        }
        ordered
    }
}

/// Reads the whole tree.
pub async fn tree(db: &Db) -> Result<GroupTree, DbError> {
    let rows: Vec<GroupRow> = sqlx::query_as(
        "SELECT g.*, \
         (SELECT COUNT(*) FROM hosts WHERE hosts.group_id = g.id) AS host_count, \
         (SELECT COUNT(*) FROM host_groups c WHERE c.parent_id = g.id) AS child_count \
         FROM host_groups g",
    )
    .fetch_all(db.pool())
    .await?;
    let groups = rows
        .into_iter()
        .map(|row| GroupRecord::try_from(row).map(|group| (group.id, group)))
        .collect::<Result<HashMap<_, _>, _>>()?;
    Ok(GroupTree { groups })
}

fn bind_settings<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    settings: &GroupSettings,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    query
        .bind(settings.reserve_cpu_percent.map(i64::from))
        .bind(settings.reserve_memory_mib.map(signed))
        .bind(settings.reserve_disk_bytes.map(signed))
        .bind(settings.weight_cpu.map(i64::from))
        .bind(settings.weight_memory.map(i64::from))
        .bind(settings.weight_disk.map(i64::from))
        .bind(settings.weight_network.map(i64::from))
}

/// Stores a new group under `parent`; [`DbError::Duplicate`] when the name is taken. Nothing is
/// stored when the parent is gone by now.
pub async fn insert(
    db: &Db,
    id: HostGroupId,
    name: &str,
    parent: HostGroupId,
    settings: &GroupSettings,
) -> Result<bool, DbError> {
    let query = sqlx::query(
        "INSERT INTO host_groups (id, name, parent_id, created_at, reserve_cpu_percent, \
         reserve_memory_mib, reserve_disk_bytes, weight_cpu, weight_memory, weight_disk, \
         weight_network) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11 \
         WHERE EXISTS (SELECT 1 FROM host_groups WHERE id = ?3)",
    )
    .bind(id.to_string())
    .bind(name.to_owned())
    .bind(parent.to_string())
    .bind(Utc::now());
    let inserted = bind_settings(query, settings)
        .execute(db.pool())
        .await
        .map_err(duplicate_as("host group name"))?
        .rows_affected();
    Ok(inserted > 0)
}

/// Replaces a group's own settings.
pub async fn set_settings(
    db: &Db,
    id: HostGroupId,
    settings: &GroupSettings,
) -> Result<bool, DbError> {
    let query = sqlx::query(
        "UPDATE host_groups SET reserve_cpu_percent = ?, reserve_memory_mib = ?, \
         reserve_disk_bytes = ?, weight_cpu = ?, weight_memory = ?, weight_disk = ?, \
         weight_network = ? WHERE id = ?",
    );
    let updated = bind_settings(query, settings)
        .bind(id.to_string())
        .execute(db.pool())
        .await?
        .rows_affected();
    Ok(updated > 0)
}

/// Moves a group under `parent` in one statement that refuses a cycle (the parent inside the
/// group's own subtree) and a parent that is gone, so a concurrent move cannot slip one in.
pub async fn set_parent(db: &Db, id: HostGroupId, parent: HostGroupId) -> Result<bool, DbError> {
    let updated = sqlx::query(
        "WITH RECURSIVE below(id) AS (SELECT ?1 UNION SELECT g.id FROM host_groups g \
         JOIN below ON g.parent_id = below.id) \
         UPDATE host_groups SET parent_id = ?2 WHERE id = ?1 \
         AND ?2 NOT IN (SELECT id FROM below) \
         AND EXISTS (SELECT 1 FROM host_groups WHERE id = ?2)",
    )
    .bind(id.to_string())
    .bind(parent.to_string())
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(updated > 0)
}

/// Deletes a group only while it holds no host and no group and scopes no network (checked in
/// the same statement).
pub async fn delete_if_empty(db: &Db, id: HostGroupId) -> Result<bool, DbError> {
    let deleted = sqlx::query(
        "DELETE FROM host_groups WHERE id = ?1 AND parent_id IS NOT NULL \
         AND NOT EXISTS (SELECT 1 FROM hosts WHERE group_id = ?1) \
         AND NOT EXISTS (SELECT 1 FROM host_groups WHERE parent_id = ?1) \
         AND NOT EXISTS (SELECT 1 FROM networks WHERE group_id = ?1)",
    )
    .bind(id.to_string())
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(deleted > 0)
}

/// Puts a host in a group, only while the group exists.
pub async fn move_host(
    db: &Db,
    host_id: drover_api::HostId,
    group: HostGroupId,
) -> Result<bool, DbError> {
    let updated = sqlx::query(
        "UPDATE hosts SET group_id = ?1 WHERE id = ?2 \
         AND EXISTS (SELECT 1 FROM host_groups WHERE id = ?1)",
    )
    .bind(group.to_string())
    .bind(host_id.to_string())
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(updated > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::hostgroup::ROOT_GROUP_NAME;

    fn group(name: &str, parent: Option<HostGroupId>, settings: GroupSettings) -> GroupRecord {
        GroupRecord {
            id: HostGroupId::new(),
            name: name.to_owned(),
            parent_id: parent,
            settings,
            created_at: Utc::now(),
            host_count: 0,
            child_count: 0,
        }
    }

    #[test]
    fn inheritance_names_the_group_a_value_comes_from() {
        let root = group(
            ROOT_GROUP_NAME,
            None,
            GroupSettings {
                reserve_cpu_percent: Some(10),
                reserve_memory_mib: Some(256),
                reserve_disk_bytes: Some(1 << 30),
                weight_cpu: Some(1),
                weight_memory: Some(1),
                weight_disk: Some(1),
                weight_network: Some(1),
            },
        );
        let prod = group(
            "prod",
            Some(root.id),
            GroupSettings {
                reserve_memory_mib: Some(2048),
                ..GroupSettings::default()
            },
        );
        let web = group(
            "web",
            Some(prod.id),
            GroupSettings {
                weight_cpu: Some(5),
                ..GroupSettings::default()
            },
        );
        let ids = (root.id, prod.id, web.id);
        let tree = GroupTree {
            groups: [root, prod, web].into_iter().map(|g| (g.id, g)).collect(),
        };
        let effective = tree.effective(ids.2);
        assert_eq!(effective.settings.reserve_memory_mib, Some(2048));
        assert_eq!(effective.settings.weight_cpu, Some(5));
        assert_eq!(effective.settings.reserve_cpu_percent, Some(10));
        let from = |setting| {
            effective
                .from
                .iter()
                .find(|e| e.setting == setting)
                .map(|e| e.from.clone())
        };
        assert_eq!(
            from(GroupSetting::ReserveMemoryMib).as_deref(),
            Some("prod")
        );
        assert_eq!(from(GroupSetting::WeightCpu).as_deref(), Some("web"));
        assert_eq!(
            from(GroupSetting::ReserveCpuPercent).as_deref(),
            Some(ROOT_GROUP_NAME)
        );
        assert!(tree.contains(ids.0, ids.2));
        assert!(!tree.contains(ids.2, ids.0));
        assert_eq!(tree.subtree(ids.1).len(), 2);
        let all = tree.to_api_all();
        let paths: Vec<&str> = all.iter().map(|g| g.path.as_str()).collect();
        assert_eq!(
            paths,
            ["All Hosts", "All Hosts / prod", "All Hosts / prod / web"]
        );
    }
}
