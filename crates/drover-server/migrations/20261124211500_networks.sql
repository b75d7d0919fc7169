-- Virtual networks, VM NICs with their MAC and IP addresses, and user-mode port forwards.
-- Never edit an applied migration: add a new file.

CREATE TABLE networks (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    mode       TEXT NOT NULL,
    subnet     TEXT,
    gateway    TEXT,
    dhcp_start TEXT,
    dhcp_end   TEXT,
    vlan       INTEGER,
    uplink     TEXT,
    overlay    INTEGER NOT NULL,
    bridge     TEXT NOT NULL UNIQUE,
    vni        INTEGER UNIQUE,
    created_at TEXT NOT NULL
);

-- How each host that realized a network stands with it (ready, or needs attention and why).
CREATE TABLE network_hosts (
    network_id TEXT NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    host_id    TEXT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    state      TEXT NOT NULL,
    reason     TEXT,
    PRIMARY KEY (network_id, host_id)
);

-- One row per NIC. The unique MAC is the global pool: no two NICs anywhere share one. The IP is
-- unique within its network (NULLs, as on user-mode NICs, never clash). A deleted VM's rows go
-- with it, which returns its MACs and IPs to the pools; a network in use cannot be deleted.
CREATE TABLE vm_nics (
    vm_id      TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    slot       INTEGER NOT NULL,
    network_id TEXT REFERENCES networks(id),
    mac        TEXT NOT NULL UNIQUE,
    ip         TEXT,
    PRIMARY KEY (vm_id, slot),
    UNIQUE (network_id, ip)
);

CREATE INDEX vm_nics_by_network ON vm_nics(network_id);

-- JSON array of {host_port, guest_port}.
ALTER TABLE vms ADD COLUMN port_forwards TEXT NOT NULL DEFAULT '[]';

-- VMs made before networks existed had one user-mode NIC with QEMU's default MAC: give each a
-- pool MAC, unique by rowid.
INSERT INTO vm_nics (vm_id, slot, network_id, mac, ip)
    SELECT id, 0, NULL, printf('52:54:00:d0:%02x:%02x', (rowid >> 8) & 255, rowid & 255), NULL
    FROM vms;
