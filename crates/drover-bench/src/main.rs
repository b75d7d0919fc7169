//! `drover-bench`: the benchmarks named by the issues, as commands that print their figures.
//! Run in release mode (`cargo run --release -p drover-bench -- core`); results go to
//! `docs/benchmarks.md` with the machine and the date. Not a test: nothing here asserts targets.

mod checkpoint;
mod cluster;
mod core;
mod library;
mod migrate;
mod network;
mod scale;
mod stats;
mod throughput;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Drover benchmarks; each prints its figures")]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Core (issue 2): create + start latency, power-off visibility, VM list paging at 20,000 rows.
    Core(core::CoreArgs),
    /// Library (issue 3): VM from a cached template, first-deployment transfer vs cp, VMDK import
    /// vs qemu-img convert.
    Library(library::LibraryArgs),
    /// Control-plane scale (issue 4): simulated hosts and VMs against one server on SQLite.
    Scale(scale::ScaleArgs),
    /// Network realization (issue 6): bridge, rules, dnsmasq, uplink, VXLAN, in a namespace.
    Network(network::NetworkArgs),
    /// Saved states and checkpoints (issue 5): save and restore, checkpoint create and restore
    /// of a running 256 MiB guest, each from the API call to the job's end.
    Checkpoint(checkpoint::CheckpointArgs),
    /// Live migration (issue 5): an idle and a busy 256 MiB guest between two agents.
    Migrate(migrate::MigrateArgs),
    /// Network throughput (issue 6): guest to guest across two hosts, bridged and overlay, next
    /// to the bare host namespaces (iperf3).
    Throughput(throughput::ThroughputArgs),
    /// The server process `scale` starts and measures (internal).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        data_dir: std::path::PathBuf,
    },
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    match Args::parse().bench {
        Bench::Core(args) => core::run(args).await,
        Bench::Library(args) => library::run(args).await,
        Bench::Scale(args) => scale::run(args).await,
        Bench::Network(args) => network::run(args).await,
        Bench::Checkpoint(args) => checkpoint::run(args).await,
        Bench::Migrate(args) => migrate::run(args).await,
        Bench::Throughput(args) => throughput::run(args).await,
        Bench::Serve { data_dir } => scale::serve(data_dir).await,
    }
}
