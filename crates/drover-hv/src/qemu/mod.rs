//! The QEMU driver: runs each VM as a daemonized `qemu-system-x86_64` driven over QMP, with all its
//! files in the VM's directory (see [`VmFiles`]). Not a general QEMU wrapper: it builds the one
//! kind of machine Drover runs.

pub mod accel;
pub mod command_line;
pub mod disk;
mod files;
pub mod migration;
pub mod process;
mod running;
mod saved_state;
pub mod snapshot;

pub use files::VmFiles;
pub use running::QemuVm;

use async_trait::async_trait;
use drover_api::Accelerator;
use drover_api::agent::AgentVmSpec;
use drover_api::vm::VmDisk;
use drover_qmp::{ConnectOptions, Qmp};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::revert::Revert;
use crate::{CheckpointOp, DiskCheckpoint, DriverError, RunningVm, StartFrom, VmDriver};

/// The smallest memory a VM may have; below it nothing useful boots.
pub const MIN_MEMORY_MIB: u64 = 64;

/// Longest path a Unix socket can have (`sun_path` holds 108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// `qemu-system-x86_64`, looked up in `PATH` unless absolute.
    pub qemu: PathBuf,
    pub qemu_img: PathBuf,
    /// Overrides the probe (see [`accel`]).
    pub accelerator: Option<Accelerator>,
    /// Bound on `start`, from launching QEMU to a running guest.
    pub start_timeout: Duration,
}

impl Default for QemuConfig {
    fn default() -> Self {
        Self {
            qemu: "qemu-system-x86_64".into(),
            qemu_img: "qemu-img".into(),
            accelerator: None,
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// How a QEMU process begins.
#[derive(Clone, Copy)]
enum Launch<'a> {
    /// The guest boots.
    Boot,
    /// The guest continues from a saved state or a checkpoint.
    From(&'a StartFrom),
    /// QEMU waits for a live migration's stream and disks.
    Incoming(&'a migration::Incoming),
}

#[derive(Debug)]
pub struct QemuDriver {
    config: QemuConfig,
    accelerator: Accelerator,
}

impl QemuDriver {
    /// Makes the qcow2 file of one disk at `path`: blank, or an overlay on an image.
    async fn make_disk(&self, disk: &VmDisk, path: &Path) -> Result<(), DriverError> {
        match disk {
            VmDisk::None => Ok(()),
            VmDisk::Blank { size_bytes } => {
                disk::create_blank(&self.config.qemu_img, path, *size_bytes).await
            }
            VmDisk::Image { path: image } => {
                disk::create_overlay(&self.config.qemu_img, path, Path::new(image)).await
            }
            VmDisk::Library { .. } | VmDisk::LibraryCopy { .. } => Err(library_disk_unresolved()),
        }
    }

    /// Probes the accelerator unless the config names one.
    pub fn new(config: QemuConfig) -> Self {
        let accelerator = config.accelerator.unwrap_or_else(accel::probe);
        Self {
            config,
            accelerator,
        }
    }

    pub fn config(&self) -> &QemuConfig {
        &self.config
    }

    fn qmp_options(files: &VmFiles) -> ConnectOptions {
        ConnectOptions {
            transcript: Some(files.qmp_log()),
            ..ConnectOptions::default()
        }
    }

    /// Starts QEMU, booting the guest, continuing it from a saved state or a checkpoint, or
    /// waiting for an incoming migration; on error no process is left behind.
    async fn start_with(
        &self,
        spec: &AgentVmSpec,
        vm_dir: &Path,
        how: Launch<'_>,
    ) -> Result<Box<dyn RunningVm>, DriverError> {
        self.validate(spec).await?;
        let files = resolve(vm_dir)?;
        let longest = files.serial_socket().as_os_str().len();
        if longest > MAX_SOCKET_PATH {
            return Err(DriverError::Unsupported(format!(
                "the VM directory {} is too long for a Unix socket path",
                files.dir().display()
            )));
        }
        if let Some(pid) = live_qemu(&files) {
            return Err(DriverError::StartFailed(format!(
                "QEMU already runs for this VM (pid {pid})"
            )));
        }
        remove_runtime_files(&files);

        let launched =
            tokio::time::timeout(self.config.start_timeout, self.launch(spec, &files, how)).await;
        let error = match launched {
            Ok(Ok(vm)) => {
                tracing::info!(vm = %spec.name, pid = %vm.pid(), "qemu started");
                return Ok(Box::new(vm));
            }
            Ok(Err(error)) => error,
            Err(_) => DriverError::StartFailed(format!(
                "the guest did not run within {:?}",
                self.config.start_timeout
            )),
        };
        // The failed launch's QemuVm (if any) is dropped by now, which detached its watcher.
        if let Some(pid) = live_qemu(&files) {
            process::end(pid, Signal::SIGKILL, Duration::from_secs(5)).await;
        }
        remove_runtime_files(&files);
        Err(error)
    }

    /// Launches QEMU and waits until the guest runs, or, for an incoming migration, until it
    /// listens for it; on error the caller cleans up.
    async fn launch(
        &self,
        spec: &AgentVmSpec,
        files: &VmFiles,
        how: Launch<'_>,
    ) -> Result<QemuVm, DriverError> {
        let mut spec = spec.clone();
        // QEMU runs daemonized in `/`, so relative paths would point elsewhere.
        for path in [&mut spec.kernel, &mut spec.initrd].into_iter().flatten() {
            *path = absolute(Path::new(path))?.display().to_string();
        }
        let mut args = command_line::command_line(&spec, files, self.accelerator);
        if matches!(
            how,
            Launch::Incoming(_) | Launch::From(StartFrom::SavedState)
        ) {
            // A saved state is fed over QMP once connected (`migrate-incoming`).
            args.extend(["-incoming".into(), "defer".into()]);
        }
        tracing::debug!(command = %command_line::display(&self.config.qemu, &args), "starting qemu");

        let stderr_path = files.stderr();
        let stderr = std::fs::File::create(&stderr_path).map_err(|source| DriverError::Io {
            path: stderr_path.clone(),
            source,
        })?;
        let stdout = stderr.try_clone().map_err(|source| DriverError::Io {
            path: stderr_path.clone(),
            source,
        })?;
        // With -daemonize this process exits once QEMU initialized; QEMU itself lives on alone.
        let status = tokio::process::Command::new(&self.config.qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|error| {
                DriverError::StartFailed(format!(
                    "cannot run {}: {error}",
                    self.config.qemu.display()
                ))
            })?;
        if !status.success() {
            let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            let text = text.trim();
            return Err(DriverError::StartFailed(if text.is_empty() {
                format!("qemu exited with {status}")
            } else {
                text.to_string()
            }));
        }
        let pid = process::read_pidfile(&files.pidfile())
            .ok_or_else(|| DriverError::StartFailed("qemu started but wrote no pid file".into()))?;
        let qmp = Qmp::connect_with(files.qmp_socket(), Self::qmp_options(files))
            .await
            .map_err(|error| start_failed("qmp connect", &error))?;
        if let Launch::Incoming(incoming) = how {
            let vm = QemuVm::attach(qmp, pid, files.clone(), false);
            migration::Monitor::new(vm.qmp().clone())
                .prepare_incoming(incoming, &spec)
                .await
                .map_err(|error| start_failed("prepare the incoming migration", &error))?;
            return Ok(vm);
        }
        let vm = QemuVm::attach(qmp, pid, files.clone(), true);
        match how {
            Launch::Boot | Launch::Incoming(_) => {}
            Launch::From(StartFrom::SavedState) => saved_state::read(vm.qmp(), files).await?,
            Launch::From(StartFrom::Checkpoint(tag)) => {
                snapshot::online(vm.qmp(), CheckpointOp::Restore, tag).await?;
            }
        }
        vm.qmp()
            .cont()
            .await
            .map_err(|error| start_failed("cont", &error))?;
        let status = vm
            .qmp()
            .query_status()
            .await
            .map_err(|error| start_failed("query-status", &error))?;
        if !status.running {
            return Err(DriverError::StartFailed(format!(
                "the guest is {} instead of running",
                status.status
            )));
        }
        Ok(vm)
    }
}

#[async_trait]
impl VmDriver for QemuDriver {
    fn accelerator(&self) -> Accelerator {
        self.accelerator
    }

    async fn validate(&self, spec: &AgentVmSpec) -> Result<(), DriverError> {
        if spec.cpus < 1 {
            return Err(DriverError::Unsupported(
                "a VM needs at least 1 vCPU".into(),
            ));
        }
        let host_cpus = std::thread::available_parallelism().map_or(1, |count| count.get());
        if spec.cpus as usize > host_cpus {
            return Err(DriverError::Unsupported(format!(
                "the VM asks for {} vCPUs but this host has {host_cpus}",
                spec.cpus
            )));
        }
        if spec.memory_mib < MIN_MEMORY_MIB {
            return Err(DriverError::Unsupported(format!(
                "the VM asks for {} MiB of memory; the minimum is {MIN_MEMORY_MIB} MiB",
                spec.memory_mib
            )));
        }
        if spec.kernel.is_none() && (spec.initrd.is_some() || spec.cmdline.is_some()) {
            return Err(DriverError::Unsupported(
                "an initrd or a kernel command line needs a kernel".into(),
            ));
        }
        validate_disk(&spec.disk)?;
        for disk in &spec.devices.data_disks {
            if *disk == VmDisk::None {
                return Err(DriverError::Unsupported(
                    "a data disk needs a size or an image".into(),
                ));
            }
            validate_disk(disk)?;
        }
        if let Some(kernel) = &spec.kernel {
            readable("kernel", kernel)?;
        }
        if let Some(initrd) = &spec.initrd {
            readable("initrd", initrd)?;
        }
        Ok(())
    }

    async fn create(&self, spec: &AgentVmSpec, vm_dir: &Path) -> Result<(), DriverError> {
        let mut revert = Revert::new();
        if !vm_dir.exists() {
            std::fs::create_dir_all(vm_dir).map_err(|source| DriverError::Io {
                path: vm_dir.to_path_buf(),
                source,
            })?;
            let made = vm_dir.to_path_buf();
            revert.push(move || {
                let _ = std::fs::remove_dir_all(made);
            });
        }
        let files = resolve(vm_dir)?;
        let disk_path = files.disk();
        // A disk that exists may already hold the guest's data: create is idempotent, never
        // destructive.
        if spec.disk != VmDisk::None && !disk_path.exists() {
            let partial = disk_path.clone();
            revert.push(move || {
                let _ = std::fs::remove_file(partial);
            });
            self.make_disk(&spec.disk, &disk_path).await?;
        } else if let VmDisk::Image { path } = &spec.disk
            && disk_path.exists()
        {
            // The disk came from another host (deploy, migration): its base is cached here.
            disk::point_overlay_at(&self.config.qemu_img, &disk_path, Path::new(path)).await?;
        }
        for (index, data_disk) in spec.devices.data_disks.iter().enumerate() {
            let path = files.data_disk(index + 1);
            if path.exists() {
                continue;
            }
            let partial = path.clone();
            revert.push(move || {
                let _ = std::fs::remove_file(partial);
            });
            self.make_disk(data_disk, &path).await?;
        }
        if let Some(seed) = &spec.seed {
            write_seed(&files.seed_dir(), seed)?;
        }
        revert.commit();
        Ok(())
    }

    async fn start(
        &self,
        spec: &AgentVmSpec,
        vm_dir: &Path,
    ) -> Result<Box<dyn RunningVm>, DriverError> {
        self.start_with(spec, vm_dir, Launch::Boot).await
    }

    async fn start_incoming(
        &self,
        spec: &AgentVmSpec,
        vm_dir: &Path,
        incoming: &migration::Incoming,
    ) -> Result<Box<dyn RunningVm>, DriverError> {
        self.start_with(spec, vm_dir, Launch::Incoming(incoming))
            .await
    }

    async fn start_from(
        &self,
        spec: &AgentVmSpec,
        vm_dir: &Path,
        from: StartFrom,
    ) -> Result<Box<dyn RunningVm>, DriverError> {
        let files = resolve(vm_dir)?;
        match &from {
            StartFrom::SavedState if !files.saved_state().exists() => {
                return Err(DriverError::MissingFile {
                    what: "saved state",
                    path: files.saved_state(),
                });
            }
            StartFrom::Checkpoint(_) if !files.disk().exists() => return Err(no_disk()),
            _ => {}
        }
        let vm = self.start_with(spec, vm_dir, Launch::From(&from)).await?;
        if from == StartFrom::SavedState {
            // The guest has moved on: starting from the file again would rewind it.
            saved_state::discard(&files)?;
        }
        Ok(vm)
    }

    fn has_saved_state(&self, vm_dir: &Path) -> bool {
        resolve(vm_dir).is_ok_and(|files| files.saved_state().exists())
    }

    async fn discard_saved_state(&self, vm_dir: &Path) -> Result<(), DriverError> {
        saved_state::discard(&resolve(vm_dir)?)
    }

    async fn checkpoints(&self, vm_dir: &Path) -> Result<Vec<DiskCheckpoint>, DriverError> {
        snapshot::list(&self.config.qemu_img, &resolve(vm_dir)?.disk()).await
    }

    async fn checkpoint_offline(
        &self,
        vm_dir: &Path,
        op: CheckpointOp,
        tag: &str,
    ) -> Result<(), DriverError> {
        let files = resolve(vm_dir)?;
        if !files.disk().exists() {
            return Err(no_disk());
        }
        if let Some(pid) = live_qemu(&files) {
            return Err(DriverError::Unsupported(format!(
                "QEMU (pid {pid}) has the disk open; change its checkpoints through the running VM"
            )));
        }
        snapshot::offline(&self.config.qemu_img, &files.disk(), op, tag).await
    }
    async fn recover(
        &self,
        _spec: &AgentVmSpec,
        vm_dir: &Path,
    ) -> Result<Option<Box<dyn RunningVm>>, DriverError> {
        if !vm_dir.exists() {
            return Ok(None);
        }
        let files = resolve(vm_dir)?;
        let Some(pid) = live_qemu(&files) else {
            remove_runtime_files(&files);
            return Ok(None);
        };
        // A live QEMU whose monitor does not answer is reported, not killed: deciding to end a
        // guest is the caller's call (destroy or a hard stop).
        let qmp = Qmp::connect_with(files.qmp_socket(), Self::qmp_options(&files))
            .await
            .map_err(|source| DriverError::Monitor {
                command: "qmp_capabilities".into(),
                source,
            })?;
        qmp.query_status()
            .await
            .map_err(|source| DriverError::Monitor {
                command: "query-status".into(),
                source,
            })?;
        tracing::info!(%pid, dir = %files.dir().display(), "re-attached to qemu");
        Ok(Some(Box::new(QemuVm::attach(qmp, pid, files, false))))
    }

    async fn destroy(&self, vm_dir: &Path) -> Result<(), DriverError> {
        if !vm_dir.exists() {
            return Ok(());
        }
        let files = resolve(vm_dir)?;
        if let Some(pid) = live_qemu(&files) {
            // SIGTERM first: QEMU reports it as a host shutdown, so a watcher sees a clean exit.
            if !process::end(pid, Signal::SIGTERM, Duration::from_secs(5)).await {
                return Err(DriverError::Command {
                    program: "kill".into(),
                    output: format!("QEMU (pid {pid}) survived SIGKILL"),
                });
            }
        }
        match std::fs::remove_dir_all(files.dir()) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(DriverError::Io {
                path: files.dir().to_path_buf(),
                source,
            }),
        }
    }
}

fn start_failed(step: &str, error: &(dyn std::error::Error + 'static)) -> DriverError {
    let mut text = format!("{step}: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    DriverError::StartFailed(text)
}

fn resolve(vm_dir: &Path) -> Result<VmFiles, DriverError> {
    VmFiles::resolve(vm_dir).map_err(|source| DriverError::Io {
        path: vm_dir.to_path_buf(),
        source,
    })
}

fn absolute(path: &Path) -> Result<PathBuf, DriverError> {
    std::path::absolute(path).map_err(|source| DriverError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn readable(what: &'static str, path: &str) -> Result<(), DriverError> {
    let missing = || DriverError::MissingFile {
        what,
        path: PathBuf::from(path),
    };
    let metadata = std::fs::metadata(path).map_err(|_| missing())?;
    if !metadata.is_file() {
        return Err(missing());
    }
    std::fs::File::open(path).map(drop).map_err(|_| missing())
}

/// The pid of a QEMU that runs for this VM, if one does.
fn live_qemu(files: &VmFiles) -> Option<Pid> {
    let pid = process::read_pidfile(&files.pidfile())?;
    (process::is_alive(pid) && process::is_qemu_for(pid, &files.pidfile())).then_some(pid)
}

/// Removes sockets and pid file left by a QEMU that is gone. Missing files are fine.
fn remove_runtime_files(files: &VmFiles) {
    for path in files.runtime_files() {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(path = %path.display(), %error, "cannot remove"),
        }
    }
}

/// Writes the NoCloud files; rewritten at every create so a changed seed is what boots.
fn write_seed(dir: &Path, seed: &drover_api::CloudInitSeed) -> Result<(), DriverError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DriverError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for (name, text) in [
        ("meta-data", &seed.meta_data),
        ("user-data", &seed.user_data),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(())
}

fn no_disk() -> DriverError {
    DriverError::Unsupported("the VM has no disk to hold checkpoints".into())
}

/// What the driver checks of one disk before anything is made.
fn validate_disk(disk: &VmDisk) -> Result<(), DriverError> {
    match disk {
        VmDisk::Blank { size_bytes: 0 } => Err(DriverError::Unsupported(
            "a blank disk needs a size above 0".into(),
        )),
        VmDisk::None | VmDisk::Blank { .. } => Ok(()),
        VmDisk::Image { path } => readable("image", path),
        VmDisk::Library { .. } | VmDisk::LibraryCopy { .. } => Err(library_disk_unresolved()),
    }
}

/// The agent turns a library disk into an image in its cache before the driver sees the spec.
fn library_disk_unresolved() -> DriverError {
    DriverError::Unsupported(
        "a library disk must be fetched into the host's image cache before the VM is defined"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::id::VmId;

    fn spec() -> AgentVmSpec {
        AgentVmSpec {
            id: VmId::new(),
            name: "t".into(),
            cpus: 1,
            memory_mib: 128,
            disk: VmDisk::None,
            kernel: None,
            initrd: None,
            cmdline: None,
            nics: vec![],
            port_forwards: vec![],
            seed: None,
            devices: Default::default(),
        }
    }

    fn driver() -> QemuDriver {
        QemuDriver::new(QemuConfig {
            accelerator: Some(Accelerator::Tcg),
            ..QemuConfig::default()
        })
    }

    #[tokio::test]
    async fn validate_checks_sizes_and_files() {
        let driver = driver();
        driver
            .validate(&spec())
            .await
            .expect("a minimal spec is valid");

        let unsupported = [
            AgentVmSpec { cpus: 0, ..spec() },
            AgentVmSpec {
                cpus: 100_000,
                ..spec()
            },
            AgentVmSpec {
                memory_mib: 63,
                ..spec()
            },
            AgentVmSpec {
                disk: VmDisk::Blank { size_bytes: 0 },
                ..spec()
            },
            AgentVmSpec {
                initrd: Some("/etc/hostname".into()),
                ..spec()
            },
        ];
        for spec in unsupported {
            let result = driver.validate(&spec).await;
            assert!(
                matches!(result, Err(DriverError::Unsupported(_))),
                "{spec:?}: {result:?}"
            );
        }

        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing").display().to_string();
        let cases = [
            (
                "image",
                AgentVmSpec {
                    disk: VmDisk::Image {
                        path: missing.clone(),
                    },
                    ..spec()
                },
            ),
            (
                "kernel",
                AgentVmSpec {
                    kernel: Some(missing.clone()),
                    ..spec()
                },
            ),
            (
                "initrd",
                AgentVmSpec {
                    kernel: Some("/proc/self/exe".into()),
                    initrd: Some(dir.path().display().to_string()),
                    ..spec()
                },
            ),
        ];
        for (expected, spec) in cases {
            match driver.validate(&spec).await {
                Err(DriverError::MissingFile { what, .. }) => assert_eq!(what, expected),
                other => panic!("{expected}: expected MissingFile, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn create_blank_disk_and_undo_on_failure() {
        let driver = driver();
        let dir = tempfile::tempdir().expect("tempdir");
        let vm_dir = dir.path().join("vm");
        let blank = AgentVmSpec {
            disk: VmDisk::Blank {
                size_bytes: 1 << 20,
            },
            ..spec()
        };
        driver.create(&blank, &vm_dir).await.expect("create");
        let info = disk::info(&driver.config.qemu_img, &vm_dir.join("disk.qcow2"))
            .await
            .expect("info");
        assert_eq!(
            (info.format.as_str(), info.virtual_size),
            ("qcow2", 1 << 20)
        );
        driver
            .create(&blank, &vm_dir)
            .await
            .expect("create again is a no-op");

        let failing_dir = dir.path().join("failing");
        let bad = AgentVmSpec {
            disk: VmDisk::Image {
                path: dir.path().join("no-such-image").display().to_string(),
            },
            ..spec()
        };
        let result = driver.create(&bad, &failing_dir).await;
        assert!(
            matches!(result, Err(DriverError::Command { .. })),
            "{result:?}"
        );
        assert!(
            !failing_dir.exists(),
            "the failed create left its directory"
        );
    }

    #[tokio::test]
    async fn recover_and_destroy_without_a_process() {
        let driver = driver();
        let dir = tempfile::tempdir().expect("tempdir");
        let vm_dir = dir.path().join("vm");
        assert!(
            driver
                .recover(&spec(), &vm_dir)
                .await
                .expect("recover")
                .is_none()
        );
        std::fs::create_dir(&vm_dir).expect("mkdir");
        // A stale pid file naming a process that is not QEMU (this test) and a stale socket.
        std::fs::write(vm_dir.join("qemu.pid"), std::process::id().to_string()).expect("pid");
        std::fs::write(vm_dir.join("qmp.sock"), "").expect("sock");
        assert!(
            driver
                .recover(&spec(), &vm_dir)
                .await
                .expect("recover")
                .is_none()
        );
        assert!(!vm_dir.join("qemu.pid").exists());
        assert!(!vm_dir.join("qmp.sock").exists());
        driver.destroy(&vm_dir).await.expect("destroy");
        assert!(!vm_dir.exists());
        driver
            .destroy(&vm_dir)
            .await
            .expect("destroy is idempotent");
    }
}
