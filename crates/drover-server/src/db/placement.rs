//! What placement reads and writes: every host's figures with the sums of what its VMs have
//! claimed, and the claim itself, a VM row inserted only while it fits (one statement).

use super::{Db, DbError, duplicate_as, from_json, parse_id, signed, to_json, unsigned};
use crate::placement::rating::{Claimed, HostFacts};
use drover_api::{HostGroupId, HostState, Vm};

/// One host's figures, as an array of the aggregate in [`facts`] (fields in column order).
#[derive(serde::Deserialize)]
struct FactsRow {
    id: String,
    name: String,
    state: String,
    state_reason: Option<String>,
    cpus: i64,
    memory_mib: i64,
    memory_free_mib: i64,
    disk_free_bytes: i64,
    cpu_load_percent: i64,
    group_id: String,
    claimed_vms: i64,
    claimed_cpus: i64,
    claimed_memory_mib: i64,
    claimed_disk_bytes: i64,
}

/// Every host with its group and claims (kept on the host row by the triggers of the
/// placement migration). SQLite packs the rows into one JSON array: one row through the driver
/// instead of 1,000 cuts the read to a fraction (the driver's cost is per row, not per byte).
pub async fn facts(db: &Db) -> Result<Vec<(HostFacts, HostGroupId)>, DbError> {
    let packed: String = sqlx::query_scalar(
        "SELECT json_group_array(json_array(id, name, state, state_reason, cpus, memory_mib, \
         memory_free_mib, disk_free_bytes, cpu_load_percent, group_id, claimed_vms, claimed_cpus, \
         claimed_memory_mib, claimed_disk_bytes)) FROM hosts",
    )
    .fetch_one(db.pool())
    .await?;
    let rows: Vec<FactsRow> = from_json("host facts", &packed)?;
    rows.into_iter()
        .map(|row| {
            let facts = HostFacts {
                id: parse_id("host id", &row.id)?,
                state: HostState::parse(&row.state).ok_or_else(|| DbError::Corrupt {
                    what: "host state",
                    value: row.state.clone(),
                })?,
                name: row.name,
                state_reason: row.state_reason,
                cpus: unsigned("cpus", row.cpus)?,
                memory_mib: unsigned("memory_mib", row.memory_mib)?,
                memory_free_mib: unsigned("memory_free_mib", row.memory_free_mib)?,
                disk_free_bytes: unsigned("disk_free_bytes", row.disk_free_bytes)?,
                cpu_load_percent: unsigned("cpu_load_percent", row.cpu_load_percent)?,
                claimed: Claimed {
                    vms: unsigned("claimed vms", row.claimed_vms)?,
                    cpus: unsigned("claimed cpus", row.claimed_cpus)?,
                    memory_mib: unsigned("claimed memory", row.claimed_memory_mib)?,
                    disk_bytes: unsigned("claimed disk", row.claimed_disk_bytes)?,
                },
            };
            Ok((facts, parse_id("host group id", &row.group_id)?))
        })
        .collect()
}

/// The reserves a claim must leave free on its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserves {
    pub memory_mib: u64,
    pub disk_bytes: u64,
}

/// Inserts `vm` (in state Creating), claiming `disk_bytes` of its host's disk, only if its host
/// still responds, is not in maintenance and has the memory and disk for it after `reserves`
/// and every VM already on it. One INSERT ...
/// SELECT: SQLite takes the write lock before reading, and the insert's trigger adds the VM to
/// the host's claimed sums within the same statement, so two claims never both see the same free
/// memory (CloudStack's lesson: check and take capacity in one step). `false` when it no longer
/// fits; [`DbError::Duplicate`] when the name is taken.
pub async fn claim(db: &Db, vm: &Vm, disk_bytes: u64, reserves: Reserves) -> Result<bool, DbError> {
    let inserted = sqlx::query(
        "INSERT INTO vms (id, name, host_id, state, state_reason, cpus, memory_mib, disk, kernel, \
         initrd, cmdline, created_at, updated_at, disk_bytes) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14 FROM hosts h \
         WHERE h.id = ?3 AND h.state = ?15 AND h.cpus >= ?6 \
         AND h.memory_mib - ?16 - h.claimed_memory_mib >= ?7 \
         AND h.disk_free_bytes - ?17 - h.claimed_disk_bytes >= ?14",
    )
    .bind(vm.id.to_string())
    .bind(vm.name.clone())
    .bind(vm.host_id.to_string())
    .bind(vm.state.as_str())
    .bind(vm.state_reason.clone())
    .bind(i64::from(vm.cpus))
    .bind(signed(vm.memory_mib))
    .bind(to_json("vm disk", &vm.disk)?)
    .bind(vm.kernel.clone())
    .bind(vm.initrd.clone())
    .bind(vm.cmdline.clone())
    .bind(vm.created_at)
    .bind(vm.updated_at)
    .bind(signed(disk_bytes))
    .bind(HostState::Responding.as_str())
    .bind(signed(reserves.memory_mib))
    .bind(signed(reserves.disk_bytes))
    .execute(db.pool())
    .await
    .map_err(duplicate_as("vm name"))?
    .rows_affected();
    Ok(inserted > 0)
}
