//! Live migration between two real QEMU processes on this machine (TCG, the tiny guest), with
//! the disk mirrored over NBD and both streams over TLS from a test CA: the guest goes on
//! ticking on the destination with an identical disk; a canceled migration leaves the source
//! running.

use drover_api::Accelerator;
use drover_api::agent::AgentVmSpec;
use drover_api::id::VmId;
use drover_api::migration::{MigrationPhase, MigrationProgress, MirrorSync};
use drover_api::vm::VmDisk;
use drover_hv::qemu::migration::{
    Credentials, Incoming, MigrationError, Outgoing, mirrored_disks, write_credentials,
};
use drover_hv::qemu::{QemuConfig, QemuDriver, VmFiles, process};
use drover_hv::{RunStatus, RunningVm, VmDriver};
use nix::sys::signal::{Signal, kill};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::sync::watch;

const BOOT: Duration = Duration::from_secs(90);

fn driver() -> QemuDriver {
    QemuDriver::new(QemuConfig {
        accelerator: Some(Accelerator::Tcg),
        ..QemuConfig::default()
    })
}

fn ticking_spec() -> AgentVmSpec {
    let guest = drover_testkit::guest();
    AgentVmSpec {
        id: VmId::new(),
        name: "mover".into(),
        cpus: 1,
        memory_mib: 128,
        disk: VmDisk::Blank {
            size_bytes: 64 << 20,
        },
        kernel: Some(guest.kernel.display().to_string()),
        initrd: Some(guest.initrd.display().to_string()),
        nics: vec![],
        port_forwards: vec![],
        cmdline: Some("console=ttyS0 quiet tiny.tick=1".into()),
        seed: None,
        devices: Default::default(),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Two hosts' worth of directories; kills any QEMU left behind and keeps logs after a failure.
struct Hosts {
    test: &'static str,
    root: tempfile::TempDir,
}

impl Hosts {
    fn new(test: &'static str) -> Hosts {
        let root = tempfile::tempdir().expect("tempdir");
        let ca = drover_tls::CertificateAuthority::generate("test CA").expect("CA");
        for host in ["source", "destination"] {
            let identity = ca.issue(host, &["127.0.0.1".to_owned()]).expect("identity");
            write_credentials(
                &root.path().join(host).join("tls"),
                Credentials {
                    ca_pem: ca.cert_pem(),
                    cert_pem: &identity.cert_pem,
                    key_pem: &identity.key_pem,
                },
            )
            .expect("credentials");
        }
        Hosts { test, root }
    }

    fn dir(&self, host: &str) -> PathBuf {
        self.root.path().join(host)
    }

    fn vm_dir(&self, host: &str) -> PathBuf {
        self.dir(host).join("vm")
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for host in ["source", "destination"] {
            let files = VmFiles::resolve(&self.vm_dir(host)).expect("resolve");
            if let Some(pid) = process::read_pidfile(&files.pidfile())
                && process::is_qemu_for(pid, &files.pidfile())
            {
                let _ = kill(pid, Signal::SIGKILL);
            }
            if std::thread::panicking() {
                let artifacts = drover_testkit::artifacts_dir(self.test);
                for name in ["serial.log", "qmp.log", "qemu.stderr"] {
                    let _ = std::fs::copy(
                        files.dir().join(name),
                        artifacts.join(format!("{host}-{name}")),
                    );
                }
            }
        }
    }
}

/// A source disk holding `data_mib` MiB of a known pattern, so the mirror has work to do.
fn disk_with_data(vm_dir: &Path, data_mib: u64) {
    std::fs::create_dir_all(vm_dir).expect("vm dir");
    let disk = vm_dir.join("disk.qcow2");
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("64M")
        .status()
        .expect("qemu-img");
    assert!(status.success());
    let status = Command::new("qemu-io")
        .arg("-c")
        .arg(format!("write -P 0xab 0 {data_mib}M"))
        .arg(&disk)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("qemu-io");
    assert!(status.success());
}

async fn ticks(vm_dir: &Path) -> usize {
    let log = std::fs::read_to_string(vm_dir.join("serial.log")).unwrap_or_default();
    log.matches("TINYVM-TICK").count()
}

async fn wait_ticks_beyond(vm_dir: &Path, count: usize) {
    drover_testkit::wait_until("the guest ticks on", BOOT, async || {
        (ticks(vm_dir).await > count).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
}

/// Starts the source, defines the destination and starts it waiting; returns both processes.
async fn source_and_destination(
    hosts: &Hosts,
    spec: &AgentVmSpec,
    data_mib: u64,
) -> (Box<dyn RunningVm>, Box<dyn RunningVm>, Outgoing) {
    let driver = driver();
    disk_with_data(&hosts.vm_dir("source"), data_mib);
    driver
        .create(spec, &hosts.vm_dir("source"))
        .await
        .expect("create source");
    let source = driver
        .start(spec, &hosts.vm_dir("source"))
        .await
        .expect("start source");
    wait_ticks_beyond(&hosts.vm_dir("source"), 0).await;

    driver
        .create(spec, &hosts.vm_dir("destination"))
        .await
        .expect("create destination");
    let (nbd_port, migration_port) = (free_port(), free_port());
    let destination = driver
        .start_incoming(
            spec,
            &hosts.vm_dir("destination"),
            &Incoming {
                bind_host: "127.0.0.1".into(),
                nbd_port: Some(nbd_port),
                migration_port,
                tls_dir: hosts.dir("destination").join("tls"),
            },
        )
        .await
        .expect("start the destination waiting");
    let outgoing = Outgoing {
        host: "127.0.0.1".into(),
        nbd_port: Some(nbd_port),
        migration_port,
        tls_dir: hosts.dir("source").join("tls"),
        disks: mirrored_disks(spec, MirrorSync::Full),
        mirror_bytes_per_second: None,
        downtime_limit_ms: 100,
    };
    (source, destination, outgoing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticking_guest_moves_with_its_disk_over_tls() {
    let hosts = Hosts::new("a_ticking_guest_moves_with_its_disk_over_tls");
    let spec = ticking_spec();
    let (mut source, mut destination, outgoing) = source_and_destination(&hosts, &spec, 8).await;

    let (progress, watcher) = watch::channel(MigrationProgress::new(MigrationPhase::Mirroring));
    let monitor = source.migration().expect("QEMU can migrate");
    monitor
        .migrate_out(&outgoing, &progress, std::future::pending())
        .await
        .expect("migrate");
    let figures = watcher.borrow().clone();
    assert_eq!(figures.disk_bytes_total, 64 << 20, "{figures:?}");
    assert!(figures.ram_bytes_transferred > 0, "{figures:?}");
    assert!(figures.downtime_ms.is_some(), "{figures:?}");
    assert_eq!(
        destination.status().await.expect("status"),
        RunStatus::Paused,
        "the destination waits for its resume"
    );
    let before = ticks(&hosts.vm_dir("destination")).await;
    destination
        .migration()
        .expect("QEMU")
        .resume_incoming()
        .await
        .expect("resume");
    assert_eq!(
        destination.status().await.expect("status"),
        RunStatus::Running
    );
    wait_ticks_beyond(&hosts.vm_dir("destination"), before + 1).await;

    let compare = Command::new("qemu-img")
        .args(["compare", "-U"])
        .arg(hosts.vm_dir("source").join("disk.qcow2"))
        .arg(hosts.vm_dir("destination").join("disk.qcow2"))
        .output()
        .expect("qemu-img compare");
    assert!(
        compare.status.success(),
        "{}",
        String::from_utf8_lossy(&compare.stdout)
    );
    source.kill().await.expect("end the source");
    destination.kill().await.expect("end the destination");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_migration_leaves_the_source_running() {
    let hosts = Hosts::new("a_canceled_migration_leaves_the_source_running");
    let spec = ticking_spec();
    let (mut source, mut destination, mut outgoing) =
        source_and_destination(&hosts, &spec, 32).await;
    // 32 MiB at 1 MiB/s: the cancel lands mid-mirror.
    outgoing.mirror_bytes_per_second = Some(1 << 20);

    let (progress, watcher) = watch::channel(MigrationProgress::new(MigrationPhase::Mirroring));
    let monitor = source.migration().expect("QEMU can migrate");
    let outcome = monitor
        .migrate_out(
            &outgoing,
            &progress,
            tokio::time::sleep(Duration::from_secs(3)),
        )
        .await;
    assert!(
        matches!(outcome, Err(MigrationError::Canceled)),
        "{outcome:?}"
    );
    let figures = watcher.borrow().clone();
    assert!(
        figures.disk_bytes_mirrored < figures.disk_bytes_total,
        "canceled mid-mirror: {figures:?}"
    );
    assert_eq!(source.status().await.expect("status"), RunStatus::Running);
    let before = ticks(&hosts.vm_dir("source")).await;
    wait_ticks_beyond(&hosts.vm_dir("source"), before + 1).await;
    destination.kill().await.expect("end the destination");
    source.kill().await.expect("end the source");
}
