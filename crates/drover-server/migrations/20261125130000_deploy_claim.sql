-- Issue 3 (d), branch libfeat: a deploy claims its host's capacity before the copy starts.
--
-- `deploy_host` is the host a stored VM is being deployed to. While it is set, that host holds
-- the VM's claim (the stored VM itself claims nothing, see 20261125030000), so that creates and
-- other deploys see the room as taken during the copy. The final move (state Stopped, host_id
-- the host) clears it in the same UPDATE, which hands the claim over to the VM's row.
ALTER TABLE vms ADD COLUMN deploy_host TEXT;

CREATE TRIGGER vms_deploy_claim_changed AFTER UPDATE OF deploy_host ON vms
WHEN OLD.deploy_host IS NOT NEW.deploy_host BEGIN
    UPDATE hosts SET claimed_vms = claimed_vms - 1, claimed_cpus = claimed_cpus - OLD.cpus,
        claimed_memory_mib = claimed_memory_mib - OLD.memory_mib,
        claimed_disk_bytes = claimed_disk_bytes - OLD.disk_bytes
    WHERE id = OLD.deploy_host;
    UPDATE hosts SET claimed_vms = claimed_vms + 1, claimed_cpus = claimed_cpus + NEW.cpus,
        claimed_memory_mib = claimed_memory_mib + NEW.memory_mib,
        claimed_disk_bytes = claimed_disk_bytes + NEW.disk_bytes
    WHERE id = NEW.deploy_host;
END;

CREATE TRIGGER vms_deploy_claim_deleted AFTER DELETE ON vms
WHEN OLD.deploy_host IS NOT NULL BEGIN
    UPDATE hosts SET claimed_vms = claimed_vms - 1, claimed_cpus = claimed_cpus - OLD.cpus,
        claimed_memory_mib = claimed_memory_mib - OLD.memory_mib,
        claimed_disk_bytes = claimed_disk_bytes - OLD.disk_bytes
    WHERE id = OLD.deploy_host;
END;
