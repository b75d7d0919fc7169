//! Where a VM's files live inside its directory. Everything the driver makes is listed here, so
//! cleanup and recovery know what to look for.

use std::path::{Path, PathBuf};

/// The files of one VM, all inside `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFiles {
    dir: PathBuf,
}

impl VmFiles {
    /// `dir` should be absolute: QEMU runs daemonized in `/`. [`VmFiles::resolve`] makes it so.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Makes `vm_dir` absolute (canonical when it exists), so the same VM always gets the same
    /// paths, which recovery compares against QEMU's command line.
    pub fn resolve(vm_dir: &Path) -> std::io::Result<Self> {
        let dir = match std::fs::canonicalize(vm_dir) {
            Ok(dir) => dir,
            Err(_) => std::path::absolute(vm_dir)?,
        };
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The VM's disk (qcow2), when it has one.
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }
    /// Data disk `index` (1 for the second disk, ...), qcow2.
    pub fn data_disk(&self, index: usize) -> PathBuf {
        self.dir.join(format!("disk{index}.qcow2"))
    }
    /// The cloud-init NoCloud seed's files (`meta-data`, `user-data`), which QEMU presents as a
    /// read-only FAT disk labelled `cidata`.
    pub fn seed_dir(&self) -> PathBuf {
        self.dir.join("seed")
    }
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    /// The serial console; one client at a time.
    pub fn serial_socket(&self) -> PathBuf {
        self.dir.join("serial.sock")
    }
    /// Everything the guest wrote to its serial port, kept across starts.
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    /// The QMP transcript.
    pub fn qmp_log(&self) -> PathBuf {
        self.dir.join("qmp.log")
    }
    /// QEMU's stdout and stderr until it daemonized (the last start only).
    pub fn stderr(&self) -> PathBuf {
        self.dir.join("qemu.stderr")
    }

    /// The guest's memory and device state after a save; the VM starts from it next time.
    pub fn saved_state(&self) -> PathBuf {
        self.dir.join("saved.state")
    }
    /// Where a save writes until it completed, so a cut-short save never counts as one.
    pub(crate) fn saved_state_partial(&self) -> PathBuf {
        self.dir.join(".saved.state.partial")
    }

    /// The files that only mean something while QEMU runs.
    pub(crate) fn runtime_files(&self) -> [PathBuf; 3] {
        [self.qmp_socket(), self.serial_socket(), self.pidfile()]
    }
}
