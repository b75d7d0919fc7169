-- Issue 3 (branch library): agents' roles and transfer ports, library shares and items.

-- What the agent last reported: `host`, `library` (comma-separated) and its transfer port.
ALTER TABLE hosts ADD COLUMN roles TEXT NOT NULL DEFAULT 'host';
ALTER TABLE hosts ADD COLUMN transfer_port INTEGER;

-- A share belongs to its library server: removing the server forgets its shares and items (the
-- files stay on the machine).
CREATE TABLE library_shares (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    host_id    TEXT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    path       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (host_id, path)
);

CREATE TABLE library_items (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    share_id      TEXT NOT NULL REFERENCES library_shares(id) ON DELETE CASCADE,
    path          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    format        TEXT NOT NULL,
    virtual_size  INTEGER NOT NULL,
    actual_size   INTEGER NOT NULL,
    backing_chain TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    UNIQUE (share_id, path)
);

-- Hosts cache base images by fingerprint; finding an item by it must be quick.
CREATE INDEX library_items_by_sha256 ON library_items(sha256);
