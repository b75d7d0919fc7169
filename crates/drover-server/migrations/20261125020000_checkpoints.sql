-- Issue 5 (branch checkpoints): checkpoints of VMs. The VM's disk on its host holds each one as
-- a qcow2 internal snapshot whose tag is the checkpoint's id. `current` marks the checkpoint the
-- VM came from last (created or restored): the parent of the next one.
CREATE TABLE checkpoints (
    id          TEXT PRIMARY KEY,
    vm_id       TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    with_memory INTEGER NOT NULL,
    parent_id   TEXT REFERENCES checkpoints(id) ON DELETE SET NULL,
    current     INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    UNIQUE (vm_id, name)
);
