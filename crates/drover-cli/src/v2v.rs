//! `drover v2v import SOURCE`: a VM from another hypervisor's OVA, OVF, VMX or lone disk.

use crate::CliError;
use crate::output::OutputFormat;
use crate::progress::{JobOptions, finish};
use crate::template::DirectBootArgs;
use drover_api::v2v::V2vImport;
use drover_client::Client;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum V2vCommand {
    /// Import VM.ova, VM.ovf, VM.vmx, DISK.vmdk, DISK.vhd or DISK.vhdx as a stopped VM: its
    /// disks go into a library share (converted to qcow2, checked, fingerprinted), then the VM
    /// is made with the CPUs, memory and NICs the package describes, in one job.
    Import(Box<V2vImportArgs>),
}

#[derive(Debug, Clone, clap::Args)]
pub struct V2vImportArgs {
    /// An absolute path on the library server, or an http(s) URL it downloads.
    source: String,
    /// The VM's name (default: the source's file name without extension).
    #[arg(long)]
    name: Option<String>,
    /// The VM's host (default: the best-rated host of --group).
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    group: Option<String>,
    /// The library share for the disks (default: the only one).
    #[arg(long)]
    share: Option<String>,
    /// For a disk without a boot loader QEMU's firmware can start.
    #[command(flatten)]
    boot: DirectBootArgs,
    #[command(flatten)]
    job: JobOptions,
}

pub async fn run(
    client: &Client,
    command: &V2vCommand,
    output: OutputFormat,
) -> Result<(), CliError> {
    match command {
        V2vCommand::Import(args) => {
            let import = V2vImport {
                source: args.source.clone(),
                name: args.name.clone(),
                share: args.share.clone(),
                host: args.host.clone(),
                group: args.group.clone(),
                kernel: args.boot.kernel.clone(),
                initrd: args.boot.initrd.clone(),
                cmdline: args.boot.cmdline.clone(),
            };
            let started = client.v2v_import(&import).await?;
            finish(client, started, args.job, output).await
        }
    }
}
