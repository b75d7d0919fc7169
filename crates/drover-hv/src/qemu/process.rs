//! The QEMU process seen from outside: pid file, liveness, identity, signals. QEMU runs
//! daemonized (not our child), so we cannot wait(2) for it; we poll.

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The pid in a QEMU pid file, if the file holds one.
pub fn read_pidfile(path: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(path).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    (pid > 0).then(|| Pid::from_raw(pid))
}

/// Whether `pid` names a process that has not exited. A zombie counts as gone: a daemonized
/// QEMU is reaped by init, which may take a moment.
pub fn is_alive(pid: Pid) -> bool {
    match kill(pid, None) {
        Ok(()) | Err(Errno::EPERM) => !is_zombie(pid),
        Err(_) => false,
    }
}

fn is_zombie(pid: Pid) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        // Gone between the signal check and now.
        return true;
    };
    // The command name is in parentheses and may contain anything; the state follows the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "Z")
}

/// Whether `pid` is a QEMU started with `-pidfile <pidfile>`, so that a recycled pid is never
/// taken for our VM.
pub fn is_qemu_for(pid: Pid, pidfile: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    is_qemu_cmdline(&cmdline, pidfile)
}

fn is_qemu_cmdline(cmdline: &[u8], pidfile: &Path) -> bool {
    let mut args = cmdline.split(|byte| *byte == 0);
    let is_qemu = args
        .next()
        .map(|program| {
            program
                .rsplit(|byte| *byte == b'/')
                .next()
                .unwrap_or(program)
        })
        .is_some_and(|name| name.windows(4).any(|window| window == b"qemu"));
    let mut previous: &[u8] = b"";
    let names_pidfile = args.any(|arg| {
        let found = previous == b"-pidfile" && arg == pidfile.as_os_str().as_bytes();
        previous = arg;
        found
    });
    is_qemu && names_pidfile
}

/// Polls until `pid` is gone; false when it still lives after `timeout`.
pub async fn wait_gone(pid: Pid, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `signal` and waits up to `timeout` for the process to go; then SIGKILL and wait again.
/// Returns whether it is gone.
pub async fn end(pid: Pid, signal: Signal, timeout: Duration) -> bool {
    if !is_alive(pid) {
        return true;
    }
    let _ = kill(pid, signal);
    if wait_gone(pid, timeout).await {
        return true;
    }
    tracing::warn!(%pid, ?signal, "qemu did not exit; sending SIGKILL");
    let _ = kill(pid, Signal::SIGKILL);
    wait_gone(pid, Duration::from_secs(5)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_our_qemu_only() {
        let pidfile = Path::new("/vms/a/qemu.pid");
        let cases: [(&[u8], bool); 5] = [
            (
                b"/usr/bin/qemu-system-x86_64\0-name\0a\0-pidfile\0/vms/a/qemu.pid\0",
                true,
            ),
            (b"qemu-system-x86_64\0-pidfile\0/vms/a/qemu.pid\0", true),
            (
                b"/usr/bin/qemu-system-x86_64\0-pidfile\0/vms/b/qemu.pid\0",
                false,
            ),
            (b"/bin/sleep\0-pidfile\0/vms/a/qemu.pid\0", false),
            (b"/usr/bin/qemu-system-x86_64\0/vms/a/qemu.pid\0", false),
        ];
        for (cmdline, expected) in cases {
            assert_eq!(
                is_qemu_cmdline(cmdline, pidfile),
                expected,
                "{}",
                String::from_utf8_lossy(cmdline)
            );
        }
    }

    #[test]
    fn pidfile_parsing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qemu.pid");
        assert_eq!(read_pidfile(&path), None);
        for (text, expected) in [
            ("1234\n", Some(1234)),
            ("", None),
            ("-3", None),
            ("x", None),
        ] {
            std::fs::write(&path, text).expect("write");
            assert_eq!(read_pidfile(&path), expected.map(Pid::from_raw), "{text:?}");
        }
    }

    #[test]
    fn liveness() {
        assert!(is_alive(Pid::this()));
        // Pid numbers are capped far below this.
        assert!(!is_alive(Pid::from_raw(i32::MAX - 1)));
    }
}
