//! Issue 5's figures for a running 256 MiB tiny guest on an overlay of the ext4 root disk:
//! checkpoint create (memory included) and restore, save and restore from the saved state, each
//! timed from the API call to the job's end as the event stream reports it.

use crate::cluster::Cluster;
use crate::core::{JobEnds, run_job, tiny_vm};
use crate::stats::Samples;
use drover_api::{JobId, VmAction, VmDisk};
use drover_client::Client;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct CheckpointArgs {
    /// Rounds of each operation.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

const VM: &str = "bench-checkpoint";

/// Times the job `start` submits, from the call to its end.
async fn timed(
    ends: &JobEnds,
    start: impl Future<Output = Result<drover_api::Job, drover_client::ClientError>>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let job: JobId = start.await?.id;
    Ok(ends.wait(job).await? - started)
}

async fn wait_for_serial(log: &Path, marker: &str) -> anyhow::Result<()> {
    drover_testkit::wait_for_text(log, marker, Duration::from_secs(120))
        .await
        .map(drop)
}

pub async fn run(args: CheckpointArgs) -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let client: &Client = &cluster.client;
    let ends = JobEnds::follow(client).await?;
    let mut create = tiny_vm(
        VM,
        VmDisk::Image {
            path: drover_testkit::guest().rootfs_qcow2.display().to_string(),
        },
        "console=ttyS0 quiet tiny.root=/dev/vda tiny.tick=1",
    );
    create.memory_mib = 256;
    run_job(client, &ends, client.create_vm(&create).await?.id).await?;
    let vm = client.vm(VM).await?;
    let vm_dir = cluster.agent_dir.join("vms").join(vm.id.to_string());
    wait_for_serial(&vm_dir.join("serial.log"), "TINYVM-READY").await?;

    let (mut creates, mut restores) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        let name = format!("bench-{run}");
        creates.push(timed(&ends, client.create_checkpoint(VM, Some(&name))).await?);
        restores.push(timed(&ends, client.restore_checkpoint(VM, &name)).await?);
    }
    let disk_bytes = std::fs::metadata(vm_dir.join("disk.qcow2"))?.len();
    for run in 0..args.runs {
        let name = format!("bench-{run}");
        run_job(client, &ends, client.delete_checkpoint(VM, &name).await?.id).await?;
    }

    let (mut saves, mut starts) = (Vec::new(), Vec::new());
    let mut state_bytes = 0;
    for _ in 0..args.runs {
        saves.push(timed(&ends, client.vm_action(VM, VmAction::Save)).await?);
        state_bytes = std::fs::metadata(vm_dir.join("saved.state"))?.len();
        starts.push(timed(&ends, client.vm_action(VM, VmAction::Start)).await?);
    }
    run_job(client, &ends, client.delete_vm(VM).await?.id).await?;
    cluster.shutdown().await;

    println!("running 256 MiB tiny guest (TCG), API call to job end:");
    println!(
        "  checkpoint create (with memory): {}",
        Samples::new(creates).summary()
    );
    println!(
        "  checkpoint restore (disk and memory): {}",
        Samples::new(restores).summary()
    );
    println!("  save to file: {}", Samples::new(saves).summary());
    println!(
        "  start from the saved state: {}",
        Samples::new(starts).summary()
    );
    println!(
        "  saved state file {:.1} MiB; disk with {} checkpoints {:.1} MiB",
        state_bytes as f64 / f64::from(1 << 20),
        args.runs,
        disk_bytes as f64 / f64::from(1 << 20)
    );
    Ok(())
}
