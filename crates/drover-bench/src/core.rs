//! Issue 2's figures: API create + start to QEMU running (qcow2 overlays on one shared base),
//! guest power-off to visible in `GET /api/v1/vms/ID`, and paging through 20,000 VMs.

use crate::cluster::{Cluster, HOST_NAME};
use crate::stats::{Samples, ms};
use anyhow::Context;
use drover_api::page::PageRequest;
use drover_api::{Event, JobId, JobStatus, Vm, VmAction, VmCreate, VmDisk, VmId, VmState};
use drover_client::{Client, VmFilter};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(clap::Args)]
pub struct CoreArgs {
    /// VMs created and started one after another.
    #[arg(long, default_value_t = 20)]
    vms: usize,
    /// Guest power-offs timed.
    #[arg(long, default_value_t = 5)]
    poweroffs: usize,
    /// VM rows inserted for the list benchmark.
    #[arg(long, default_value_t = 20_000)]
    rows: usize,
    /// Page size of the list benchmark.
    #[arg(long, default_value_t = 500)]
    page: u32,
}

/// When each job finished, learned from the event stream rather than by polling, so that the
/// measurement is not rounded up to a poll interval.
#[derive(Default)]
pub struct JobEnds {
    ended: Mutex<HashMap<JobId, (Instant, JobStatus)>>,
    changed: Notify,
}

impl JobEnds {
    pub async fn follow(client: &Client) -> anyhow::Result<Arc<JobEnds>> {
        let ends = Arc::new(JobEnds::default());
        let mut events = client.events().await?;
        let recorder = ends.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                if let Event::JobChanged(job) = event
                    && job.status.is_finished()
                {
                    let mut ended = recorder.ended.lock().unwrap_or_else(|p| p.into_inner());
                    ended.insert(job.id, (Instant::now(), job.status));
                    recorder.changed.notify_waiters();
                }
            }
        });
        Ok(ends)
    }

    pub async fn wait(&self, job: JobId) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let notified = self.changed.notified();
            if let Some((at, status)) = self
                .ended
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&job)
                .copied()
            {
                anyhow::ensure!(status == JobStatus::Completed, "job {job} ended {status}");
                return Ok(at);
            }
            anyhow::ensure!(Instant::now() < deadline, "job {job} did not end in 60 s");
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }
}

pub fn tiny_vm(name: &str, disk: VmDisk, cmdline: &str) -> VmCreate {
    let guest = drover_testkit::guest();
    VmCreate {
        name: name.to_owned(),
        host: Some(HOST_NAME.to_owned()),
        group: None,
        cpus: 1,
        memory_mib: 128,
        disk,
        kernel: Some(guest.kernel.display().to_string()),
        initrd: Some(guest.initrd.display().to_string()),
        cmdline: Some(cmdline.to_owned()),
        start: true,
        networks: vec![],
        seed: None,
        devices: Default::default(),
    }
}

pub(crate) async fn run_job(client: &Client, ends: &JobEnds, job: JobId) -> anyhow::Result<()> {
    ends.wait(job).await?;
    let job = client.job(job).await?;
    anyhow::ensure!(job.status == JobStatus::Completed, "{job:?}");
    Ok(())
}

/// Create + start, timed from the API call to the job's end (the agent ends the start step
/// once QMP `query-status` says running). Each VM is stopped before the next one so that
/// booting guests do not slow the later samples down.
async fn create_and_start(
    cluster: &Cluster,
    ends: &JobEnds,
    args: &CoreArgs,
    base: &Path,
) -> anyhow::Result<Samples> {
    let mut samples = Vec::new();
    for index in 0..args.vms {
        let create = tiny_vm(
            &format!("bench-{index}"),
            VmDisk::Image {
                path: base.display().to_string(),
            },
            "console=ttyS0 quiet",
        );
        let started = Instant::now();
        let job = cluster.client.create_vm(&create).await?;
        let ended = ends.wait(job.id).await?;
        samples.push(ended - started);
        let stop = cluster
            .client
            .vm_action(&create.name, VmAction::Stop)
            .await?;
        run_job(&cluster.client, ends, stop.id).await?;
    }
    for index in 0..args.vms {
        let delete = cluster.client.delete_vm(&format!("bench-{index}")).await?;
        run_job(&cluster.client, ends, delete.id).await?;
    }
    Ok(Samples::new(samples))
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// From the moment the guest's QEMU process is gone (the guest powered itself off) to the
/// moment `GET /api/v1/vms/ID` says Stopped, polled every 2 ms.
async fn poweroff_visibility(
    cluster: &Cluster,
    ends: &JobEnds,
    args: &CoreArgs,
) -> anyhow::Result<Samples> {
    let mut samples = Vec::new();
    for index in 0..args.poweroffs {
        let name = format!("poweroff-{index}");
        // The guest powers itself off right after it is ready.
        let create = tiny_vm(&name, VmDisk::None, "console=ttyS0 quiet tiny.poweroff=1");
        let job = cluster.client.create_vm(&create).await?;
        run_job(&cluster.client, ends, job.id).await?;
        let vm = cluster.client.vm(&name).await?;
        let pid = qemu_pid(&cluster.agent_dir, vm.id)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while process_alive(pid) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "guest {name} did not power off in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let gone = Instant::now();
        loop {
            let vm = cluster.client.vm(&name).await?;
            if vm.state == VmState::Stopped {
                samples.push(gone.elapsed());
                break;
            }
            anyhow::ensure!(
                gone.elapsed() < Duration::from_secs(10),
                "{name} never showed Stopped: {vm:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let delete = cluster.client.delete_vm(&name).await?;
        run_job(&cluster.client, ends, delete.id).await?;
    }
    Ok(Samples::new(samples))
}

fn qemu_pid(agent_dir: &Path, vm: VmId) -> anyhow::Result<u32> {
    let path = agent_dir.join("vms").join(vm.to_string()).join("qemu.pid");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    Ok(text.trim().parse()?)
}

/// Inserts `rows` stopped VMs directly into the database, then times every page of the list.
async fn list_pages(
    cluster: &Cluster,
    args: &CoreArgs,
) -> anyhow::Result<(Duration, Samples, Samples)> {
    let host = cluster.client.host(HOST_NAME).await?;
    let db = &cluster.server.state.db;
    let inserting = Instant::now();
    let now = chrono::Utc::now();
    for index in 0..args.rows {
        let vm = Vm {
            id: VmId::new(),
            name: format!("row-{index:05}"),
            host_id: host.id,
            host_name: host.name.clone(),
            state: VmState::Stopped,
            state_reason: None,
            cpus: 1,
            memory_mib: 128,
            disk: VmDisk::Blank {
                size_bytes: 1 << 30,
            },
            kernel: None,
            initrd: None,
            cmdline: None,
            nics: vec![],
            port_forwards: vec![],
            devices: Default::default(),
            created_at: now,
            updated_at: now,
        };
        drover_server::db::vms::insert(db, &vm).await?;
    }
    let insert_time = inserting.elapsed();

    let mut pages = Vec::new();
    let mut cursor = None;
    let mut seen = 0;
    loop {
        let request = PageRequest {
            limit: Some(args.page),
            cursor: cursor.take(),
        };
        let started = Instant::now();
        let page = cluster
            .client
            .list_vms(&VmFilter::default(), &request)
            .await?;
        pages.push(started.elapsed());
        seen += page.items.len();
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    anyhow::ensure!(seen == args.rows, "listed {seen} of {} rows", args.rows);

    let mut gets = Vec::new();
    for index in (0..args.rows).step_by((args.rows / 200).max(1)) {
        let started = Instant::now();
        cluster.client.vm(&format!("row-{index:05}")).await?;
        gets.push(started.elapsed());
    }
    Ok((insert_time, Samples::new(pages), Samples::new(gets)))
}

fn shared_base(dir: &Path) -> anyhow::Result<PathBuf> {
    let base = dir.join("base.qcow2");
    std::fs::copy(&drover_testkit::guest().rootfs_qcow2, &base)?;
    Ok(base)
}

pub async fn run(args: CoreArgs) -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let ends = JobEnds::follow(&cluster.client).await?;
    let scratch = tempfile::tempdir()?;
    let base = shared_base(scratch.path())?;
    let host = cluster.client.host(HOST_NAME).await?;
    println!(
        "host: {} CPUs, {} MiB, accelerator {}",
        host.cpus, host.memory_mib, host.accelerator
    );

    let create = create_and_start(&cluster, &ends, &args, &base).await?;
    println!(
        "vm create + start to QEMU running ({} VMs, qcow2 overlays on one base): {}",
        args.vms,
        create.summary()
    );
    let poweroff = poweroff_visibility(&cluster, &ends, &args).await?;
    println!(
        "guest power-off to Stopped in GET /api/v1/vms/ID: {}",
        poweroff.summary()
    );
    let (insert_time, pages, gets) = list_pages(&cluster, &args).await?;
    println!(
        "GET /api/v1/vms, {} rows (inserted in {:.1} s), pages of {}: {}",
        args.rows,
        insert_time.as_secs_f64(),
        args.page,
        pages.summary()
    );
    println!(
        "GET /api/v1/vms/NAME at {} rows: {}",
        args.rows,
        gets.summary()
    );
    println!("slowest page: {:.1} ms", ms(pages.max()));
    cluster.shutdown().await;
    Ok(())
}
