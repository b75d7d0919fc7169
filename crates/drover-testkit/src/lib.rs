//! Helpers shared by Drover's tests: the tiny test guest (built once from Debian packages by
//! `scripts/guest.sh` and shared by every test), bounded waits and artifact directories.
//! Test-only: no production crate depends on it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The tiny guest's files: a PVH-bootable kernel, a busybox initramfs that prints serial markers
/// (`TINYVM-INIT`, `TINYVM-READY`, `TINYVM-POWEROFF`) and an ext4 root disk.
#[derive(Debug, Clone)]
pub struct Guest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub rootfs_qcow2: PathBuf,
}

/// The workspace root (where `scripts/` lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the testkit crate lives at crates/drover-testkit")
        .to_path_buf()
}

/// Builds the tiny guest on first use (about 15 s) and returns its files. Every later call, in
/// this process or another, reuses the build in `target/guest`.
pub fn guest() -> &'static Guest {
    static GUEST: OnceLock<Guest> = OnceLock::new();
    GUEST.get_or_init(|| {
        let script = workspace_root().join("scripts/guest.sh");
        // flock serializes test binaries that build the guest at the same moment.
        let output = std::process::Command::new("flock")
            .arg(workspace_root().join("target/.guest.lock"))
            .arg(&script)
            .output()
            .expect("run scripts/guest.sh under flock");
        assert!(
            output.status.success(),
            "scripts/guest.sh failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        Guest {
            kernel: dir.join("vmlinux"),
            initrd: dir.join("initramfs.cpio.gz"),
            rootfs_qcow2: dir.join("rootfs.qcow2"),
        }
    })
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout` with `what`.
pub async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `file` contains `marker` (a serial log, a process's output).
pub async fn wait_for_text(file: &Path, marker: &str, timeout: Duration) -> anyhow::Result<String> {
    wait_until(
        &format!("'{marker}' in {}", file.display()),
        timeout,
        async || {
            let text = tokio::fs::read_to_string(file).await.ok()?;
            text.contains(marker).then_some(text)
        },
    )
    .await
}

/// `target/test-artifacts/<test>/`: logs of a test kept for after a failure.
pub fn artifacts_dir(test: &str) -> PathBuf {
    let dir = workspace_root().join("target/test-artifacts").join(test);
    std::fs::create_dir_all(&dir).expect("create test artifacts dir");
    dir
}

/// The names in a directory, sorted: what a test expects a share or cache to hold.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
        .map(|entry| {
            entry
                .expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}
