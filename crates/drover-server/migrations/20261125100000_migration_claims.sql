-- A migration claims its VM's capacity on the destination when it starts, as a create does, so
-- that two migrations cannot both count on the same free memory. The claim goes when the VM's
-- row moves to the destination (which then claims it as any VM there) or when the move fails.
CREATE TABLE migration_claims (
    vm_id      TEXT PRIMARY KEY NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    host_id    TEXT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    cpus       INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL,
    disk_bytes INTEGER NOT NULL
);

CREATE TRIGGER migration_claim_added AFTER INSERT ON migration_claims BEGIN
    UPDATE hosts SET claimed_cpus = claimed_cpus + NEW.cpus,
        claimed_memory_mib = claimed_memory_mib + NEW.memory_mib,
        claimed_disk_bytes = claimed_disk_bytes + NEW.disk_bytes
    WHERE id = NEW.host_id;
END;

CREATE TRIGGER migration_claim_removed AFTER DELETE ON migration_claims BEGIN
    UPDATE hosts SET claimed_cpus = claimed_cpus - OLD.cpus,
        claimed_memory_mib = claimed_memory_mib - OLD.memory_mib,
        claimed_disk_bytes = claimed_disk_bytes - OLD.disk_bytes
    WHERE id = OLD.host_id;
END;
