-- Issue 3 (branch cold-move): VMs stored in the library.
--
-- A stored VM's row keeps its configuration; `stored` (JSON `StoredCopy`: the share and the
-- fingerprinted files) says where its disks are, and `host_id` is the share's library server.
-- A stored VM runs nowhere, so it claims no capacity: the triggers below take its claim back
-- from the host it moves to when it becomes Stored, and give it to the host it is deployed on
-- (with the claim triggers of 20261124211000, which move claims whenever host_id is set).
ALTER TABLE vms ADD COLUMN stored TEXT;

CREATE TRIGGER vms_claim_stored AFTER UPDATE OF state ON vms
WHEN NEW.state = 'stored' AND OLD.state != 'stored' BEGIN
    UPDATE hosts SET claimed_vms = claimed_vms - 1, claimed_cpus = claimed_cpus - NEW.cpus,
        claimed_memory_mib = claimed_memory_mib - NEW.memory_mib,
        claimed_disk_bytes = claimed_disk_bytes - NEW.disk_bytes
    WHERE id = NEW.host_id;
END;

CREATE TRIGGER vms_claim_unstored AFTER UPDATE OF state ON vms
WHEN OLD.state = 'stored' AND NEW.state != 'stored' BEGIN
    UPDATE hosts SET claimed_vms = claimed_vms + 1, claimed_cpus = claimed_cpus + OLD.cpus,
        claimed_memory_mib = claimed_memory_mib + OLD.memory_mib,
        claimed_disk_bytes = claimed_disk_bytes + OLD.disk_bytes
    WHERE id = OLD.host_id;
END;

-- The delete trigger took a claim a stored VM did not hold: give it back.
CREATE TRIGGER vms_claim_stored_deleted AFTER DELETE ON vms
WHEN OLD.state = 'stored' BEGIN
    UPDATE hosts SET claimed_vms = claimed_vms + 1, claimed_cpus = claimed_cpus + OLD.cpus,
        claimed_memory_mib = claimed_memory_mib + OLD.memory_mib,
        claimed_disk_bytes = claimed_disk_bytes + OLD.disk_bytes
    WHERE id = OLD.host_id;
END;
