-- Issue 3 (branch library): hardware and guest OS profiles, and templates.

-- A profile's settings are its create request's JSON (`HardwareSpec` or `GuestOsSpec`): they are
-- read and written whole, never queried by field.
CREATE TABLE profiles (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    spec       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (kind, name)
);

-- No cascades: a library item or profile that a template uses cannot be removed.
CREATE TABLE templates (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    item_id     TEXT NOT NULL REFERENCES library_items(id),
    hardware_id TEXT NOT NULL REFERENCES profiles(id),
    guest_os_id TEXT REFERENCES profiles(id),
    created_at  TEXT NOT NULL
);

CREATE INDEX templates_by_item ON templates(item_id);

-- A VM's cloud-init seed (JSON `CloudInitSeed`), kept for a restarted create job; not shown in
-- the API, since user-data may hold secrets.
ALTER TABLE vms ADD COLUMN seed TEXT;
