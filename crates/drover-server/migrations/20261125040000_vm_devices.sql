-- Issue 3 (branch v2v): a VM's devices beyond its first disk and NICs (JSON `VmDevices`: data
-- disks, boot order, machine type), kept so that a restarted create job defines the same VM.
ALTER TABLE vms ADD COLUMN devices TEXT;
