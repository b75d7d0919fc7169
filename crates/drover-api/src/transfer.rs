//! Agent-to-agent file transfers of a VM's files (agent protocol): which files make up a stopped
//! VM, and the request that makes one agent fetch them from another's transfer endpoint. One
//! interface serves every direction: host to host (quick migration), host to library (store)
//! and library to host (deploy). The bytes never pass the server.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /v1/vms/{id}/files[?share=S]` (control port) | | `Vec<`[`AgentVmFile`]`>`: the VM's files, fingerprinted |
//! | `POST /v1/vms/{id}/files/fetch` (control port) | [`AgentVmFilesFetch`] | [`AgentVmFilesFetched`] once every file is verified in place |
//! | `GET /v1/transfers/{id}` (control port) | | [`TransferProgress`] of a running fetch |
//! | `DELETE /v1/vms/{id}/files?share=S` (control port) | | 204: the stored copy is gone (idempotent) |
//! | `GET /v1/vms/{id}/files/{name}[?share=S]` (transfer port) | | the file, with ranges and its SHA-256 as a strong ETag |
//!
//! Without `share` the place is the VM's directory on a host (refused while the VM has a
//! process); with `share=S` it is the VM's stored copy in share `S` of a library server.

use crate::size::format_bytes;
use serde::{Deserialize, Serialize};

/// One file of a VM, as the agent that holds it fingerprints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentVmFile {
    /// A plain file name (`disk.qcow2`), never a path.
    pub name: String,
    pub size: u64,
    /// Hex SHA-256: the receiver's check and the transfer's strong ETag.
    pub sha256: String,
}

/// Where a VM's files are on one agent: `?share=S` names a library share's stored copy, no
/// share the VM's directory on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmFilesPlace {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
}

/// `POST /v1/vms/{id}/files/fetch`: copy the VM's files from another agent into a place here.
/// Resumable: a retry after either end died asks only for the bytes still missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentVmFilesFetch {
    /// The sending agent's transfer endpoint, `HOST:PORT`.
    pub source: String,
    /// Where the files are on the sender.
    #[serde(default)]
    pub from: VmFilesPlace,
    /// Where they go on this agent.
    #[serde(default)]
    pub to: VmFilesPlace,
    pub files: Vec<AgentVmFile>,
    /// A name the caller picks (its job id) to follow the fetch with `GET /v1/transfers/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_id: Option<String>,
}

/// The answer to [`AgentVmFilesFetch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentVmFilesFetched {
    /// Bytes of all the files.
    pub bytes_total: u64,
    /// Bytes that crossed the network in this call (less than the total after a resume).
    pub bytes_received: u64,
    pub milliseconds: u64,
}

/// How far a transfer has come, as its receiver counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferProgress {
    /// Bytes in place, those kept from an earlier attempt included.
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Bytes that crossed the network in this attempt.
    pub bytes_received: u64,
    /// Over this attempt so far.
    pub bytes_per_second: u64,
}

impl TransferProgress {
    /// "120 MiB of 512 MiB at 85.5 MiB/s", for job step details and progress lines.
    pub fn describe(&self) -> String {
        format!(
            "{} of {} at {}/s",
            format_bytes(self.bytes_done),
            format_bytes(self.bytes_total),
            format_bytes(self.bytes_per_second)
        )
    }

    /// 0 to 100.
    pub fn percent(&self) -> u8 {
        if self.bytes_total == 0 {
            return 100;
        }
        let percent = u128::from(self.bytes_done) * 100 / u128::from(self.bytes_total);
        u8::try_from(percent.min(100)).unwrap_or(100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_for_people() {
        let progress = TransferProgress {
            bytes_done: 120 << 20,
            bytes_total: 512 << 20,
            bytes_received: 100 << 20,
            bytes_per_second: 85 << 20,
        };
        assert_eq!(progress.describe(), "120 MiB of 512 MiB at 85 MiB/s");
        assert_eq!(progress.percent(), 23);
        assert_eq!(TransferProgress::default().percent(), 100);
    }
}
