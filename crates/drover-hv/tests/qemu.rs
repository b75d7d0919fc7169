//! The QEMU driver against real QEMU (TCG) and the tiny guest: boot, power-down, pause, kill,
//! crash, recovery after an agent restart, start failures, disks.

use drover_api::Accelerator;
use drover_api::agent::AgentVmSpec;
use drover_api::id::VmId;
use drover_api::vm::VmDisk;
use drover_hv::qemu::{QemuConfig, QemuDriver, VmFiles, disk, process};
use drover_hv::{CheckpointOp, DriverError, RunStatus, StartFrom, VmDriver, VmEvent};
use nix::sys::signal::{Signal, kill};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

const BOOT: Duration = Duration::from_secs(60);
const EVENT: Duration = Duration::from_secs(20);

fn driver() -> QemuDriver {
    QemuDriver::new(QemuConfig {
        accelerator: Some(Accelerator::Tcg),
        ..QemuConfig::default()
    })
}

fn tiny_spec(name: &str) -> AgentVmSpec {
    let guest = drover_testkit::guest();
    AgentVmSpec {
        id: VmId::new(),
        name: name.into(),
        cpus: 1,
        memory_mib: 128,
        disk: VmDisk::None,
        kernel: Some(guest.kernel.display().to_string()),
        initrd: Some(guest.initrd.display().to_string()),
        nics: vec![],
        port_forwards: vec![],
        cmdline: Some("console=ttyS0 quiet".into()),
        seed: None,
        devices: Default::default(),
    }
}

/// A test's VM directory. On drop it kills a QEMU left running, and after a failure it keeps the
/// logs under `target/test-artifacts/<test>/`.
struct TestDir {
    test: &'static str,
    dir: tempfile::TempDir,
}

impl TestDir {
    fn new(test: &'static str) -> Self {
        Self {
            test,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn vm_dir(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pid(&self) -> nix::unistd::Pid {
        process::read_pidfile(&self.file("qemu.pid")).expect("qemu.pid names a pid")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let files = VmFiles::resolve(self.dir.path()).expect("resolve");
        if let Some(pid) = process::read_pidfile(&files.pidfile())
            && process::is_qemu_for(pid, &files.pidfile())
        {
            let _ = kill(pid, Signal::SIGKILL);
        }
        if std::thread::panicking() {
            let artifacts = drover_testkit::artifacts_dir(self.test);
            for name in ["serial.log", "qmp.log", "qemu.stderr"] {
                let _ = std::fs::copy(self.file(name), artifacts.join(name));
            }
        }
    }
}

async fn next_event(events: &mut mpsc::Receiver<VmEvent>) -> VmEvent {
    tokio::time::timeout(EVENT, events.recv())
        .await
        .expect("an event in time")
        .expect("the channel is open")
}

/// Every event up to and including Exited; checks that the channel closes after it.
async fn until_exited(events: &mut mpsc::Receiver<VmEvent>) -> Vec<VmEvent> {
    let mut seen = Vec::new();
    loop {
        let event = next_event(events).await;
        let exited = matches!(event, VmEvent::Exited { .. });
        seen.push(event);
        if exited {
            break;
        }
    }
    let after = tokio::time::timeout(EVENT, events.recv())
        .await
        .expect("the channel closes after Exited");
    assert_eq!(after, None, "nothing after Exited: {seen:?}");
    seen
}

fn assert_no_runtime_files(test_dir: &TestDir) {
    for name in ["qemu.pid", "qmp.sock", "serial.sock"] {
        assert!(!test_dir.file(name).exists(), "{name} left behind");
    }
}

/// Any process whose command line mentions `dir` (a QEMU of this test).
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(&needle))
        .collect()
}

#[tokio::test]
async fn power_down_after_ready_exits_cleanly() {
    let test_dir = TestDir::new("power_down_after_ready_exits_cleanly");
    let driver = driver();
    let mut spec = tiny_spec("powerdown");
    spec.cmdline = Some("console=ttyS0 quiet tiny.shell=1".into());
    driver
        .create(&spec, test_dir.vm_dir())
        .await
        .expect("create");
    let mut vm = driver.start(&spec, test_dir.vm_dir()).await.expect("start");
    let mut events = vm.take_events().expect("events");
    assert!(vm.take_events().is_none(), "events are taken once");
    assert_eq!(
        vm.serial_socket(),
        test_dir
            .vm_dir()
            .canonicalize()
            .expect("dir")
            .join("serial.sock")
    );
    let pid = test_dir.pid();

    drover_testkit::wait_for_text(&test_dir.file("serial.log"), "TINYVM-READY", BOOT)
        .await
        .expect("the guest boots");
    // The console takes input: the guest's shell runs what we type (output lands in serial.log).
    let mut console = tokio::net::UnixStream::connect(vm.serial_socket())
        .await
        .expect("connect to the serial console");
    console
        .write_all(b"echo CONSOLE-$((40+2))\n")
        .await
        .expect("type");
    drover_testkit::wait_for_text(&test_dir.file("serial.log"), "CONSOLE-42", EVENT)
        .await
        .expect("the shell answers");
    drop(console);
    vm.power_down().await.expect("power_down");

    let seen = until_exited(&mut events).await;
    assert!(
        seen.contains(&VmEvent::ShutdownRequested { by_guest: true }),
        "{seen:?}"
    );
    assert!(
        matches!(seen.last(), Some(VmEvent::Exited { clean: true, reason }) if reason == "guest-shutdown"),
        "{seen:?}"
    );
    assert!(!process::is_alive(pid), "qemu is gone");
    let serial = std::fs::read_to_string(test_dir.file("serial.log")).expect("serial.log");
    assert!(serial.contains("TINYVM-POWEROFF"), "{serial}");
    assert_no_runtime_files(&test_dir);
    assert!(matches!(vm.status().await, Err(DriverError::NotRunning)));
    let transcript = std::fs::read_to_string(test_dir.file("qmp.log")).expect("qmp.log");
    assert!(transcript.contains("system_powerdown"), "{transcript}");
}

#[tokio::test]
async fn pause_resume_and_kill_from_an_overlay_disk() {
    let test_dir = TestDir::new("pause_resume_and_kill_from_an_overlay_disk");
    let driver = driver();
    let mut spec = tiny_spec("pause");
    spec.disk = VmDisk::Image {
        path: drover_testkit::guest().rootfs_qcow2.display().to_string(),
    };
    driver
        .create(&spec, test_dir.vm_dir())
        .await
        .expect("create");
    let mut vm = driver.start(&spec, test_dir.vm_dir()).await.expect("start");
    let mut events = vm.take_events().expect("events");
    let pid = test_dir.pid();

    assert_eq!(vm.status().await.expect("status"), RunStatus::Running);
    vm.pause().await.expect("pause");
    assert_eq!(vm.status().await.expect("status"), RunStatus::Paused);
    assert_eq!(next_event(&mut events).await, VmEvent::Paused);
    vm.resume().await.expect("resume");
    assert_eq!(vm.status().await.expect("status"), RunStatus::Running);
    assert_eq!(next_event(&mut events).await, VmEvent::Resumed);
    vm.reset().await.expect("reset keeps the process");
    assert_eq!(vm.status().await.expect("status"), RunStatus::Running);

    vm.kill().await.expect("kill");
    assert!(
        !process::is_alive(pid),
        "kill waits until the process is gone"
    );
    let seen = until_exited(&mut events).await;
    assert!(
        matches!(seen.last(), Some(VmEvent::Exited { clean: true, .. })),
        "{seen:?}"
    );
    assert_no_runtime_files(&test_dir);
    vm.kill().await.expect("kill again is fine");
}

#[tokio::test]
async fn qemu_killed_from_outside_exits_unclean() {
    let test_dir = TestDir::new("qemu_killed_from_outside_exits_unclean");
    let driver = driver();
    let spec = tiny_spec("crash");
    let mut vm = driver.start(&spec, test_dir.vm_dir()).await.expect("start");
    let mut events = vm.take_events().expect("events");
    let pid = test_dir.pid();

    kill(pid, Signal::SIGKILL).expect("SIGKILL");
    let seen = until_exited(&mut events).await;
    match seen.last() {
        Some(VmEvent::Exited { clean, reason }) => {
            assert!(!clean, "{seen:?}");
            assert!(reason.contains("without a shutdown"), "{reason}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    assert!(!process::is_alive(pid));
    assert_no_runtime_files(&test_dir);
}

#[tokio::test]
async fn recover_after_agent_restart_controls_the_vm() {
    let test_dir = TestDir::new("recover_after_agent_restart_controls_the_vm");
    let driver = driver();
    let spec = tiny_spec("recover");
    let mut vm = driver.start(&spec, test_dir.vm_dir()).await.expect("start");
    let mut old_events = vm.take_events().expect("events");
    let pid = test_dir.pid();
    // The agent goes away: its handle and channel with it.
    drop(vm);
    assert_eq!(
        tokio::time::timeout(EVENT, old_events.recv())
            .await
            .expect("closes"),
        None,
        "a detached VM reports no exit"
    );
    assert!(process::is_alive(pid), "qemu outlives the handle");

    let driver = self::driver();
    let mut vm = driver
        .recover(&spec, test_dir.vm_dir())
        .await
        .expect("recover")
        .expect("the VM runs");
    let mut events = vm.take_events().expect("events");
    assert_eq!(vm.status().await.expect("status"), RunStatus::Running);
    vm.pause().await.expect("pause");
    assert_eq!(next_event(&mut events).await, VmEvent::Paused);
    assert_eq!(vm.status().await.expect("status"), RunStatus::Paused);

    vm.kill().await.expect("kill");
    assert!(!process::is_alive(pid));
    let seen = until_exited(&mut events).await;
    assert!(
        matches!(seen.last(), Some(VmEvent::Exited { clean: true, .. })),
        "{seen:?}"
    );
    assert!(
        driver
            .recover(&spec, test_dir.vm_dir())
            .await
            .expect("recover")
            .is_none()
    );
    driver.destroy(test_dir.vm_dir()).await.expect("destroy");
    assert!(!test_dir.vm_dir().exists());
}

#[tokio::test]
async fn destroy_ends_a_running_vm() {
    let test_dir = TestDir::new("destroy_ends_a_running_vm");
    let driver = driver();
    let spec = tiny_spec("destroy");
    let mut vm = driver.start(&spec, test_dir.vm_dir()).await.expect("start");
    let mut events = vm.take_events().expect("events");
    let pid = test_dir.pid();
    driver.destroy(test_dir.vm_dir()).await.expect("destroy");
    assert!(!process::is_alive(pid));
    assert!(!test_dir.vm_dir().exists());
    let seen = until_exited(&mut events).await;
    assert!(
        matches!(seen.last(), Some(VmEvent::Exited { clean: true, .. })),
        "SIGTERM is a host shutdown: {seen:?}"
    );
    driver
        .destroy(test_dir.vm_dir())
        .await
        .expect("destroy is idempotent");
}

#[tokio::test]
async fn garbage_kernel_fails_to_start_and_leaves_nothing() {
    let test_dir = TestDir::new("garbage_kernel_fails_to_start_and_leaves_nothing");
    let kernel_dir = tempfile::tempdir().expect("tempdir");
    let kernel = kernel_dir.path().join("vmlinux");
    std::fs::write(&kernel, "this is not a kernel\n".repeat(4096)).expect("write");
    let mut spec = tiny_spec("garbage");
    spec.kernel = Some(kernel.display().to_string());

    let result = driver().start(&spec, test_dir.vm_dir()).await;
    match result {
        Err(DriverError::StartFailed(text)) => assert!(text.contains("kernel"), "{text}"),
        Err(other) => panic!("expected StartFailed, got {other:?}"),
        Ok(_) => panic!("a garbage kernel started"),
    }
    assert_no_runtime_files(&test_dir);
    assert_eq!(
        processes_mentioning(test_dir.vm_dir()),
        Vec::<String>::new()
    );
    let stderr = std::fs::read_to_string(test_dir.file("qemu.stderr")).expect("qemu.stderr");
    assert!(stderr.contains("kernel"), "{stderr}");
}

#[tokio::test]
async fn create_with_an_image_makes_an_overlay() {
    let test_dir = TestDir::new("create_with_an_image_makes_an_overlay");
    let driver = driver();
    let image = drover_testkit::guest().rootfs_qcow2.clone();
    let vm_dir = test_dir.vm_dir().join("vm");
    let mut spec = tiny_spec("overlay");
    spec.disk = VmDisk::Image {
        path: image.display().to_string(),
    };
    driver.validate(&spec).await.expect("validate");
    driver.create(&spec, &vm_dir).await.expect("create");
    let info = disk::info(&driver.config().qemu_img, &vm_dir.join("disk.qcow2"))
        .await
        .expect("qemu-img info");
    assert_eq!(info.format, "qcow2");
    assert_eq!(info.backing_filename, Some(image));
    assert_eq!(info.backing_format.as_deref(), Some("qcow2"));
    driver.destroy(&vm_dir).await.expect("destroy");
    assert!(!vm_dir.exists());
}

#[tokio::test]
async fn validate_reports_a_missing_kernel() {
    let mut spec = tiny_spec("missing");
    spec.kernel = Some("/nonexistent/vmlinux".into());
    match driver().validate(&spec).await {
        Err(DriverError::MissingFile { what, path }) => {
            assert_eq!(what, "kernel");
            assert_eq!(path, Path::new("/nonexistent/vmlinux"));
        }
        other => panic!("expected MissingFile, got {other:?}"),
    }
}

/// A guest on an overlay of the ext4 root disk that ticks on its console every second and runs
/// a shell there, for save and checkpoint tests.
fn ticking_disk_spec(name: &str) -> AgentVmSpec {
    let mut spec = tiny_spec(name);
    spec.disk = VmDisk::Image {
        path: drover_testkit::guest().rootfs_qcow2.display().to_string(),
    };
    spec.cmdline = Some("console=ttyS0 quiet tiny.root=/dev/vda tiny.tick=1 tiny.shell=1".into());
    // The read-only seed disk (vvfat) must stay out of saves and checkpoints.
    spec.seed = Some(drover_api::CloudInitSeed {
        meta_data: "local-hostname: ticker\n".into(),
        user_data: "#cloud-config\n".into(),
    });
    spec
}

/// Creates and starts a [`ticking_disk_spec`] guest and waits until it ticks.
async fn start_ticking(
    test_dir: &TestDir,
    name: &str,
) -> (QemuDriver, AgentVmSpec, Box<dyn drover_hv::RunningVm>) {
    let driver = driver();
    let spec = ticking_disk_spec(name);
    driver
        .create(&spec, test_dir.vm_dir())
        .await
        .expect("create");
    let vm = driver.start(&spec, test_dir.vm_dir()).await.expect("start");
    wait_for_tick(test_dir, 0, 2).await;
    (driver, spec, vm)
}

/// The tick numbers the guest printed in `text`, in order.
fn ticks(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| line.split("TINYVM-TICK ").nth(1))
        .filter_map(|rest| rest.trim().parse().ok())
        .collect()
}

fn serial_log(test_dir: &TestDir) -> String {
    std::fs::read_to_string(test_dir.file("serial.log")).expect("serial.log")
}

/// Waits until the guest printed a tick of at least `at_least` after byte `from` of its log;
/// returns the ticks printed after `from`.
async fn wait_for_tick(test_dir: &TestDir, from: usize, at_least: u64) -> Vec<u64> {
    drover_testkit::wait_until(&format!("tick {at_least}"), BOOT, async || {
        let text = serial_log(test_dir);
        let later = ticks(text.get(from..)?);
        later.iter().any(|tick| *tick >= at_least).then_some(later)
    })
    .await
    .expect("the guest ticks")
}

/// Types `line` into the guest's shell and waits for `answer` after byte `from` of its log.
async fn shell(test_dir: &TestDir, socket: &Path, line: &str, answer: &str) {
    let from = serial_log(test_dir).len();
    let mut console = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect to the serial console");
    console
        .write_all(format!("{line}\n").as_bytes())
        .await
        .expect("type");
    drover_testkit::wait_until(&format!("{answer:?} from {line:?}"), EVENT, async || {
        serial_log(test_dir)
            .get(from..)?
            .contains(answer)
            .then_some(())
    })
    .await
    .expect("the shell answers");
}

#[tokio::test]
async fn save_and_restore_continue_the_guest() {
    let test_dir = TestDir::new("save_and_restore_continue_the_guest");
    let (driver, spec, mut vm) = start_ticking(&test_dir, "save").await;
    let mut events = vm.take_events().expect("events");
    assert!(
        serial_log(&test_dir).contains("TINYVM-HOSTNAME ticker"),
        "the guest has its seed disk"
    );
    // The shell prints 42A only when it ran the line, not when it echoes it.
    shell(
        &test_dir,
        &vm.serial_socket(),
        "echo $((6*7))A > /before-save; sync; echo OK$((1+1))",
        "OK2",
    )
    .await;

    vm.save().await.expect("save");
    let before = ticks(&serial_log(&test_dir));
    let last_before = *before.last().expect("ticks before the save");
    let seen = until_exited(&mut events).await;
    assert!(
        matches!(seen.last(), Some(VmEvent::Exited { clean: true, .. })),
        "{seen:?}"
    );
    assert!(
        !seen.contains(&VmEvent::Paused),
        "the save's own pause is no news: {seen:?}"
    );
    assert_no_runtime_files(&test_dir);
    assert!(driver.has_saved_state(test_dir.vm_dir()));
    assert!(test_dir.file("saved.state").exists());
    assert!(
        driver
            .recover(&spec, test_dir.vm_dir())
            .await
            .expect("recover")
            .is_none(),
        "a saved VM has no process"
    );

    let from = serial_log(&test_dir).len();
    let mut vm = driver
        .start_from(&spec, test_dir.vm_dir(), StartFrom::SavedState)
        .await
        .expect("restore");
    assert!(
        !driver.has_saved_state(test_dir.vm_dir()),
        "the state is used up"
    );
    let after = wait_for_tick(&test_dir, from, last_before + 2).await;
    assert!(
        after.iter().all(|tick| *tick > last_before),
        "the guest continued from tick {last_before}: {after:?}"
    );
    let log = serial_log(&test_dir);
    assert_eq!(
        log.matches("TINYVM-INIT").count(),
        1,
        "the guest did not boot again"
    );
    shell(&test_dir, &vm.serial_socket(), "cat /before-save", "42A").await;
    vm.kill().await.expect("kill");

    let result = driver
        .start_from(&spec, test_dir.vm_dir(), StartFrom::SavedState)
        .await;
    assert!(
        matches!(result, Err(DriverError::MissingFile { .. })),
        "no saved state left"
    );
    driver.destroy(test_dir.vm_dir()).await.expect("destroy");
}

#[tokio::test]
async fn checkpoints_rewind_disk_and_memory() {
    let test_dir = TestDir::new("checkpoints_rewind_disk_and_memory");
    let (driver, spec, mut vm) = start_ticking(&test_dir, "checkpoint").await;
    let mut events = vm.take_events().expect("events");

    vm.checkpoint(CheckpointOp::Create, "c1")
        .await
        .expect("checkpoint of a running VM");
    let at_checkpoint = *ticks(&serial_log(&test_dir)).last().expect("ticks");
    shell(
        &test_dir,
        &vm.serial_socket(),
        "echo $((6*7))B > /after-checkpoint; sync; echo OK$((2+2))",
        "OK4",
    )
    .await;
    wait_for_tick(&test_dir, 0, at_checkpoint + 4).await;
    let err = vm
        .checkpoint(CheckpointOp::Create, "c1")
        .await
        .expect_err("a tag is taken once");
    assert!(matches!(err, DriverError::Snapshot { .. }), "{err:?}");

    let from = serial_log(&test_dir).len();
    vm.checkpoint(CheckpointOp::Restore, "c1")
        .await
        .expect("restore");
    assert_eq!(vm.status().await.expect("status"), RunStatus::Running);
    let after = wait_for_tick(&test_dir, from, 0).await;
    assert!(
        after[0] <= at_checkpoint + 2,
        "the guest is back at tick {at_checkpoint}: {after:?}"
    );
    shell(
        &test_dir,
        &vm.serial_socket(),
        "ls /after-checkpoint; echo OK$((3+3))",
        "OK6",
    )
    .await;
    assert!(
        serial_log(&test_dir)[from..].contains("No such file"),
        "the file written after the checkpoint is gone"
    );
    let err = vm
        .checkpoint(CheckpointOp::Restore, "nope")
        .await
        .expect_err("unknown tag");
    assert!(matches!(err, DriverError::Snapshot { .. }), "{err:?}");
    assert_eq!(vm.status().await.expect("status"), RunStatus::Running);

    vm.kill().await.expect("kill");
    let seen = until_exited(&mut events).await;
    assert!(
        !seen.contains(&VmEvent::Paused) && !seen.contains(&VmEvent::Resumed),
        "checkpoints' own pauses are no news: {seen:?}"
    );
    let on_disk = driver.checkpoints(test_dir.vm_dir()).await.expect("list");
    assert_eq!(on_disk.len(), 1, "{on_disk:?}");
    assert_eq!(on_disk[0].tag, "c1");
    assert!(on_disk[0].vm_state_bytes > 0, "with memory: {on_disk:?}");

    driver
        .checkpoint_offline(test_dir.vm_dir(), CheckpointOp::Create, "c2")
        .await
        .expect("checkpoint of a stopped VM");
    let on_disk = driver.checkpoints(test_dir.vm_dir()).await.expect("list");
    assert_eq!(
        on_disk
            .iter()
            .map(|c| (c.tag.as_str(), c.vm_state_bytes))
            .collect::<Vec<_>>(),
        [("c1", on_disk[0].vm_state_bytes), ("c2", 0)]
    );
    driver
        .checkpoint_offline(test_dir.vm_dir(), CheckpointOp::Restore, "c2")
        .await
        .expect("restore of a stopped checkpoint");
    driver
        .checkpoint_offline(test_dir.vm_dir(), CheckpointOp::Delete, "c2")
        .await
        .expect("delete offline");

    let from = serial_log(&test_dir).len();
    let mut vm = driver
        .start_from(&spec, test_dir.vm_dir(), StartFrom::Checkpoint("c1".into()))
        .await
        .expect("start from a checkpoint with memory");
    let after = wait_for_tick(&test_dir, from, 0).await;
    assert!(after[0] <= at_checkpoint + 2, "{after:?}");
    vm.checkpoint(CheckpointOp::Delete, "c1")
        .await
        .expect("delete online");
    assert_eq!(
        driver.checkpoints(test_dir.vm_dir()).await.expect("list"),
        vec![]
    );
    vm.kill().await.expect("kill");
    driver.destroy(test_dir.vm_dir()).await.expect("destroy");
}
