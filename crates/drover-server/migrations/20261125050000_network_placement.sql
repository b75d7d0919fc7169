-- Issue 6: a network may be scoped to a host group's subtree; only hosts there realize it and
-- placement rates every other host 0 for VMs on it. NULL: every host.
ALTER TABLE networks ADD COLUMN group_id TEXT REFERENCES host_groups(id);
CREATE INDEX networks_by_group ON networks(group_id);
