-- Drover's first schema. Never edit an applied migration: add a new file.
-- Ids are UUIDs as text; times are RFC 3339 text in UTC.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

-- Only the SHA-256 of a token is stored: a copy of the database gives no one a session.
CREATE TABLE tokens (
    token_sha256 TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    expires_at   TEXT NOT NULL,
    created_at   TEXT NOT NULL
);

CREATE TABLE hosts (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    address         TEXT NOT NULL UNIQUE,
    state           TEXT NOT NULL,
    state_reason    TEXT,
    cpus            INTEGER NOT NULL,
    memory_mib      INTEGER NOT NULL,
    memory_free_mib INTEGER NOT NULL,
    disk_free_bytes INTEGER NOT NULL,
    accelerator     TEXT NOT NULL,
    agent_version   TEXT NOT NULL,
    last_seen       TEXT,
    created_at      TEXT NOT NULL
);

CREATE TABLE vms (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    host_id      TEXT NOT NULL REFERENCES hosts(id),
    state        TEXT NOT NULL,
    state_reason TEXT,
    cpus         INTEGER NOT NULL,
    memory_mib   INTEGER NOT NULL,
    disk         TEXT NOT NULL,
    kernel       TEXT,
    initrd       TEXT,
    cmdline      TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);

-- Keyset pagination walks (name, id): the unfiltered list uses the unique index on name, the
-- filtered lists walk the same order within a host or a state.
CREATE INDEX vms_by_host ON vms(host_id, name, id);
CREATE INDEX vms_by_state ON vms(state, name, id);

-- `seq` orders jobs newest first and is the keyset of their pagination.
CREATE TABLE jobs (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    kind           TEXT NOT NULL,
    description    TEXT NOT NULL,
    target_kind    TEXT NOT NULL,
    target_id      TEXT NOT NULL,
    target_name    TEXT NOT NULL,
    status         TEXT NOT NULL,
    progress       INTEGER NOT NULL,
    steps          TEXT NOT NULL,
    error          TEXT,
    owner          TEXT NOT NULL,
    spec           TEXT NOT NULL,
    restarted_from TEXT,
    created_at     TEXT NOT NULL,
    started_at     TEXT,
    ended_at       TEXT
);

CREATE INDEX jobs_by_status ON jobs(status, seq);
