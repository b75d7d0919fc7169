-- Issue 4: host groups (a tree rooted at "All Hosts"), maintenance mode, live CPU load and what
-- placement needs to count the capacity VMs have claimed.

-- A NULL setting is inherited from the parent; the root sets every one.
CREATE TABLE host_groups (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    parent_id           TEXT REFERENCES host_groups(id),
    reserve_cpu_percent INTEGER,
    reserve_memory_mib  INTEGER,
    reserve_disk_bytes  INTEGER,
    weight_cpu          INTEGER,
    weight_memory       INTEGER,
    weight_disk         INTEGER,
    weight_network      INTEGER,
    created_at          TEXT NOT NULL
);

CREATE INDEX host_groups_by_parent ON host_groups(parent_id);

-- The root's defaults: 10 % of CPU, 256 MiB of memory and 1 GiB of disk kept for the host,
-- every resource weighing the same.
INSERT INTO host_groups (id, name, parent_id, reserve_cpu_percent, reserve_memory_mib,
    reserve_disk_bytes, weight_cpu, weight_memory, weight_disk, weight_network, created_at)
VALUES ('00000000-0000-4000-8000-000000000001', 'All Hosts', NULL, 10, 256, 1073741824,
    1, 1, 1, 1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

-- SQLite cannot add a column with both a REFERENCES clause and a non-NULL default, so the
-- group of a host is checked by the statements that set it (see db/hostgroups.rs).
ALTER TABLE hosts ADD COLUMN group_id TEXT NOT NULL DEFAULT '00000000-0000-4000-8000-000000000001';
ALTER TABLE hosts ADD COLUMN maintenance INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN cpu_load_percent INTEGER NOT NULL DEFAULT 0;
CREATE INDEX hosts_by_group ON hosts(group_id);

-- Disk space a VM may come to use on its host (a blank disk's size), summed by placement.
ALTER TABLE vms ADD COLUMN disk_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE vms SET disk_bytes = COALESCE(json_extract(disk, '$.size_bytes'), 0);

-- Covers the sums of what the VMs of a host have claimed, so rating 1,000 hosts reads no VM row.
CREATE INDEX vms_claims ON vms(host_id, cpus, memory_mib, disk_bytes);
