//! Issue 5's figures: live migration of a 256 MiB tiny guest with a 64 MiB disk between two
//! agents on this machine, idle and with the guest rewriting memory (`tiny.dirty`). Each sample
//! is one move (the VM goes back and forth): the job's wall time from the API call to its end,
//! QEMU's downtime (source paused to stream complete, from `query-migrate`) and the time from
//! there until the destination ran the guest (the agent-to-agent resume).

use crate::cluster::{Cluster, HOST_NAME, add_agent};
use crate::core::{JobEnds, tiny_vm};
use crate::stats::{Samples, ms};
use anyhow::Context;
use drover_api::migration::VmMigrate;
use drover_api::{VmCreate, VmDisk};
use std::time::{Duration, Instant};

const OTHER_HOST: &str = "second";
const COPY_STEP: &str = "Copy disk and memory while the VM runs";

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// Moves timed per scenario.
    #[arg(long, default_value_t = 6)]
    moves: usize,
    /// MiB the busy guest rewrites over and over.
    #[arg(long, default_value_t = 64)]
    dirty_mib: u64,
}

/// The number in `text` between `before` and `after` ("downtime 12 ms").
fn figure(text: &str, before: &str, after: &str) -> Option<u64> {
    let start = text.find(before)? + before.len();
    let rest = &text[start..];
    rest[..rest.find(after)?].trim().parse().ok()
}

struct Scenario {
    wall: Vec<Duration>,
    downtime: Vec<Duration>,
    resume: Vec<Duration>,
}

async fn scenario(
    cluster: &Cluster,
    ends: &JobEnds,
    name: &str,
    cmdline: &str,
    moves: usize,
) -> anyhow::Result<Scenario> {
    let create = VmCreate {
        memory_mib: 256,
        ..tiny_vm(
            name,
            VmDisk::Blank {
                size_bytes: 64 << 20,
            },
            cmdline,
        )
    };
    let job = cluster.client.create_vm(&create).await?;
    ends.wait(job.id).await?;
    let vm = cluster.client.vm(name).await?;
    let serial = cluster
        .agent_dir
        .join("vms")
        .join(vm.id.to_string())
        .join("serial.log");
    drover_testkit::wait_for_text(&serial, "TINYVM-READY", Duration::from_secs(120)).await?;
    // Let a busy guest's loop get going.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut result = Scenario {
        wall: Vec::new(),
        downtime: Vec::new(),
        resume: Vec::new(),
    };
    for index in 0..moves {
        let to = if index % 2 == 0 {
            OTHER_HOST
        } else {
            HOST_NAME
        };
        let started = Instant::now();
        let job = cluster
            .client
            .migrate_vm(
                name,
                &VmMigrate {
                    to: Some(to.to_owned()),
                    mirror_bytes_per_second: None,
                },
            )
            .await?;
        let ended = ends.wait(job.id).await?;
        result.wall.push(ended - started);
        let job = cluster.client.job(job.id).await?;
        let detail = job
            .steps
            .iter()
            .find(|step| step.name == COPY_STEP)
            .and_then(|step| step.detail.clone())
            .context("the copy step's figures")?;
        let downtime = figure(&detail, "downtime ", " ms").context("downtime")?;
        let resume = figure(&detail, "resumed on the destination ", " ms").context("resume")?;
        result.downtime.push(Duration::from_millis(downtime));
        result.resume.push(Duration::from_millis(resume));
        println!("  {name} move {}: {detail}", index + 1);
    }
    let job = cluster.client.delete_vm(name).await?;
    ends.wait(job.id).await?;
    Ok(result)
}

fn report(title: &str, scenario: Scenario) {
    println!("{title}");
    println!(
        "  total (API call to job end): {}",
        Samples::new(scenario.wall).summary()
    );
    let sum: Vec<Duration> = scenario
        .downtime
        .iter()
        .zip(&scenario.resume)
        .map(|(downtime, resume)| *downtime + *resume)
        .collect();
    println!(
        "  QEMU downtime: {}",
        Samples::new(scenario.downtime).summary()
    );
    println!(
        "  resume on the destination after the stream: {}",
        Samples::new(scenario.resume).summary()
    );
    let sum = Samples::new(sum);
    println!(
        "  guest pause, upper bound (downtime + resume): {} (p50 {:.0} ms)",
        sum.summary(),
        ms(sum.percentile(50.0))
    );
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let second_dir = cluster.agent_dir.with_file_name("second");
    let second = add_agent(&cluster.client, &second_dir, OTHER_HOST).await?;
    let ends = JobEnds::follow(&cluster.client).await?;
    let idle = scenario(&cluster, &ends, "idle", "console=ttyS0 quiet", args.moves).await?;
    let busy = scenario(
        &cluster,
        &ends,
        "busy",
        &format!("console=ttyS0 quiet tiny.dirty={}", args.dirty_mib),
        args.moves,
    )
    .await?;
    report("live migration, idle 256 MiB guest, 64 MiB disk:", idle);
    report(
        &format!(
            "live migration, 256 MiB guest rewriting {} MiB, 64 MiB disk:",
            args.dirty_mib
        ),
        busy,
    );
    second.shutdown().await;
    cluster.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::figure;

    #[test]
    fn figures_are_read_from_the_step_detail() {
        let detail = "disk 64/64 MiB mirrored, RAM 70 MiB transferred (0 MiB remaining), 0 dirty pages/s, downtime 12 ms, resumed on the destination 30 ms after";
        assert_eq!(figure(detail, "downtime ", " ms"), Some(12));
        assert_eq!(
            figure(detail, "resumed on the destination ", " ms"),
            Some(30)
        );
        assert_eq!(figure(detail, "missing ", " ms"), None);
    }
}
