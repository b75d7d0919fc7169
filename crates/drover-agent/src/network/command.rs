//! Running the host's network tools (`ip`, `bridge`, `nft`, `dnsmasq`) and reading interface
//! facts from sysfs. Blocking: callers run on a blocking thread.

use super::NetworkError;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `program args...`; its stdout, or the command line and stderr as the error.
pub fn run(program: &str, args: &[&str]) -> Result<String, NetworkError> {
    run_with_input(program, args, None)
}

/// Like [`run`], with `input` on stdin (`nft -f -`).
pub fn run_with_input(
    program: &str,
    args: &[&str],
    input: Option<&str>,
) -> Result<String, NetworkError> {
    let failed = |output: String| NetworkError::Command {
        command: format!("{program} {}", args.join(" ")),
        output,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| failed(format!("cannot run {program}: {error}")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|error| failed(format!("cannot write to {program}: {error}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|error| failed(format!("{program} did not finish: {error}")))?;
    if !output.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a command whose failure does not matter (an undo, a cleanup of something maybe gone).
pub fn run_quietly(program: &str, args: &[&str]) {
    if let Err(error) = run(program, args) {
        tracing::debug!(%error, "cleanup command failed");
    }
}

/// Whether the interface exists in this network namespace.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The bridge an interface is a port of, if any.
pub fn master_of(name: &str) -> Option<String> {
    let link = std::fs::read_link(Path::new("/sys/class/net").join(name).join("master")).ok()?;
    link.file_name()
        .map(|file| file.to_string_lossy().into_owned())
}
