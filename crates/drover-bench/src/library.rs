//! Issue 3's figures: a VM from a template whose disk is cached on the host (API call to the
//! job's end, QEMU running) for a 64 MiB and a 4 GiB template; the first deployment's transfer
//! (library -> host cache over the transfer port) against a plain copy of the same file; and a
//! library import of a VMDK against `qemu-img convert` of it alone.

use crate::cluster::{Cluster, HOST_NAME};
use crate::core::JobEnds;
use crate::stats::{Samples, ms};
use drover_api::library::{LibraryImport, LibraryShareAdd};
use drover_api::template::{HardwareProfileCreate, HardwareSpec, TemplateCreate, VmFromTemplate};
use drover_api::{Job, VmAction};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct LibraryArgs {
    /// VMs created and started from each template once its disk is cached. Each linked clone
    /// of the 4 GiB template claims 4 GiB of the host's disk, so more than 5 may not fit.
    #[arg(long, default_value_t = 5)]
    vms: usize,
    /// Size of the incompressible image of the transfer benchmark, in MiB.
    #[arg(long, default_value_t = 512)]
    transfer_mib: usize,
    /// Size of the VMDK of the import benchmark, in MiB (all of it data).
    #[arg(long, default_value_t = 1024)]
    vmdk_mib: usize,
}

fn qemu_img(arguments: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("qemu-img").args(arguments).status()?;
    anyhow::ensure!(status.success(), "qemu-img {arguments:?} failed");
    Ok(())
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", path.display()))
}

/// A raw file of random bytes (incompressible: every byte is transferred and hashed).
fn random_raw(path: &Path, mib: usize) -> anyhow::Result<()> {
    let mut source = std::fs::File::open("/dev/urandom")?;
    let mut target = std::fs::File::create(path)?;
    let mut buffer = vec![0_u8; 1 << 20];
    for _ in 0..mib {
        source.read_exact(&mut buffer)?;
        target.write_all(&buffer)?;
    }
    target.sync_all()?;
    Ok(())
}

async fn finished(cluster: &Cluster, ends: &JobEnds, job: Job) -> anyhow::Result<Job> {
    ends.wait(job.id).await?;
    Ok(cluster.client.job(job.id).await?)
}

async fn import(
    cluster: &Cluster,
    ends: &JobEnds,
    source: &Path,
    name: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let job = cluster
        .client
        .import_library_item(&LibraryImport {
            source: path_str(source)?.to_owned(),
            share: None,
            name: Some(name.to_owned()),
        })
        .await?;
    let ended = ends.wait(job.id).await?;
    Ok(ended - started)
}

async fn template(cluster: &Cluster, ends: &JobEnds, name: &str, disk: &str) -> anyhow::Result<()> {
    let job = cluster
        .client
        .create_template(&TemplateCreate {
            name: name.to_owned(),
            disk: disk.to_owned(),
            hardware: "bench".to_owned(),
            guest_os: None,
        })
        .await?;
    finished(cluster, ends, job).await.map(drop)
}

/// Creates and starts a VM from `template`; the time from the API call to the job's end, and
/// the job (its define step holds the fetch of an uncached base).
async fn deploy(
    cluster: &Cluster,
    ends: &JobEnds,
    template: &str,
    name: &str,
) -> anyhow::Result<(Duration, Job)> {
    let request = VmFromTemplate {
        name: name.to_owned(),
        host: Some(HOST_NAME.to_owned()),
        group: None,
        start: true,
        full_clone: false,
        iso: None,
    };
    let started = Instant::now();
    let job = cluster
        .client
        .create_vm_from_template(template, &request)
        .await?;
    let ended = ends.wait(job.id).await?;
    let job = cluster.client.job(job.id).await?;
    let stop = cluster.client.vm_action(name, VmAction::Stop).await?;
    finished(cluster, ends, stop).await?;
    Ok((ended - started, job))
}

async fn delete(cluster: &Cluster, ends: &JobEnds, name: &str) -> anyhow::Result<()> {
    let job = cluster.client.delete_vm(name).await?;
    finished(cluster, ends, job).await.map(drop)
}

/// The step of a VM create that fetches an uncached base, verifies it and makes the overlay.
const DEFINE_STEP: &str = "Create disk and configuration on host";

/// How long a job's define step took.
fn define_step(job: &Job) -> anyhow::Result<Duration> {
    let step = job
        .steps
        .iter()
        .find(|step| step.name == DEFINE_STEP)
        .ok_or_else(|| anyhow::anyhow!("job {} has no step '{DEFINE_STEP}'", job.id))?;
    match (step.started_at, step.ended_at) {
        (Some(started), Some(ended)) => Ok((ended - started).to_std()?),
        _ => anyhow::bail!("job {} step '{DEFINE_STEP}' has no times", job.id),
    }
}

pub async fn run(args: LibraryArgs) -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let ends = JobEnds::follow(&cluster.client).await?;
    let scratch = tempfile::tempdir()?;
    let share = scratch.path().join("library");
    let job = cluster
        .client
        .add_library_share(&LibraryShareAdd {
            name: "bench".to_owned(),
            server: HOST_NAME.to_owned(),
            path: path_str(&share)?.to_owned(),
        })
        .await?;
    finished(&cluster, &ends, job).await?;
    let guest = drover_testkit::guest();
    let job = cluster
        .client
        .create_hardware_profile(&HardwareProfileCreate {
            name: "bench".to_owned(),
            spec: HardwareSpec {
                cpus: 1,
                memory_mib: 128,
                data_disks: Vec::new(),
                nics: Vec::new(),
                boot_order: Vec::new(),
                machine: None,
                kernel: Some(path_str(&guest.kernel)?.to_owned()),
                initrd: Some(path_str(&guest.initrd)?.to_owned()),
                cmdline: Some("console=ttyS0 quiet".to_owned()),
            },
        })
        .await?;
    finished(&cluster, &ends, job).await?;

    // VM from a cached template, for two template sizes side by side.
    for (label, size) in [("64m", "64M"), ("4g", "4G")] {
        let image = scratch.path().join(format!("template-{label}.qcow2"));
        qemu_img(&["create", "-q", "-f", "qcow2", path_str(&image)?, size])?;
        let item = format!("disk-{label}");
        import(&cluster, &ends, &image, &item).await?;
        let name = format!("t-{label}");
        template(&cluster, &ends, &name, &item).await?;
        let (first, _) = deploy(&cluster, &ends, &name, &format!("{name}-0")).await?;
        let mut samples = Vec::new();
        for index in 1..=args.vms {
            samples.push(
                deploy(&cluster, &ends, &name, &format!("{name}-{index}"))
                    .await?
                    .0,
            );
        }
        for index in 0..=args.vms {
            delete(&cluster, &ends, &format!("{name}-{index}")).await?;
        }
        println!(
            "vm from template ({size} virtual), cached base, API call to QEMU running ({} VMs): {}; first (with fetch): {:.1} ms",
            args.vms,
            Samples::new(samples).summary(),
            ms(first)
        );
    }

    // First deployment's transfer against a plain copy of the same file.
    let raw = scratch.path().join("transfer.raw");
    random_raw(&raw, args.transfer_mib)?;
    import(&cluster, &ends, &raw, "transfer").await?;
    std::fs::remove_file(&raw)?;
    template(&cluster, &ends, "t-transfer", "transfer").await?;
    let stored = share.join("transfer.qcow2");
    let bytes = std::fs::metadata(&stored)?.len();
    let copy_target = scratch.path().join("copy.qcow2");
    let copying = Instant::now();
    std::fs::copy(&stored, &copy_target)?;
    std::fs::File::open(&copy_target)?.sync_all()?;
    let copy_time = copying.elapsed();
    std::fs::remove_file(&copy_target)?;
    let (_, job) = deploy(&cluster, &ends, "t-transfer", "transfer-0").await?;
    let fetch_time = define_step(&job)?;
    delete(&cluster, &ends, "transfer-0").await?;
    // What bounds the transfer on one machine: the receiver hashes every byte on the same
    // cores as the TLS of both ends.
    let hashing = Instant::now();
    drover_image::digest::sha256_file(&stored)?;
    let hash_time = hashing.elapsed();
    let mib = bytes as f64 / f64::from(1 << 20);
    println!(
        "first deployment transfer of {mib:.0} MiB (fetch, SHA-256 check, overlay): {:.0} MiB/s; plain cp: {:.0} MiB/s; ratio {:.0} %; one SHA-256 pass over the file alone (the receiver's check): {:.0} MiB/s",
        mib / fetch_time.as_secs_f64(),
        mib / copy_time.as_secs_f64(),
        100.0 * copy_time.as_secs_f64() / fetch_time.as_secs_f64(),
        mib / hash_time.as_secs_f64()
    );

    // Import of a VMDK against qemu-img convert alone.
    let raw = scratch.path().join("vmdk-source.raw");
    random_raw(&raw, args.vmdk_mib)?;
    let vmdk = scratch.path().join("source.vmdk");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        path_str(&raw)?,
        path_str(&vmdk)?,
    ])?;
    std::fs::remove_file(&raw)?;
    let converted = scratch.path().join("converted.qcow2");
    let converting = Instant::now();
    qemu_img(&[
        "convert",
        "-f",
        "vmdk",
        "-O",
        "qcow2",
        path_str(&vmdk)?,
        path_str(&converted)?,
    ])?;
    let convert_time = converting.elapsed();
    std::fs::remove_file(&converted)?;
    let import_time = import(&cluster, &ends, &vmdk, "vmdk").await?;
    println!(
        "import of a {} MiB VMDK (check, convert, check, SHA-256, index): {:.2} s; qemu-img convert alone: {:.2} s; overhead {:.0} %",
        args.vmdk_mib,
        import_time.as_secs_f64(),
        convert_time.as_secs_f64(),
        100.0 * (import_time.as_secs_f64() / convert_time.as_secs_f64() - 1.0)
    );
    cluster.shutdown().await;
    Ok(())
}
