//! The CLI's one error type. Whatever failed (the server refused, a job failed, a local file or
//! setting is wrong), it becomes an [`ErrorDetail`] that `drover` prints as message, code and
//! recommended action before exiting with status 1.

use drover_api::{ErrorDetail, Job};
use drover_client::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A job ran and did not complete.
    #[error("job {} {}", .0.id, .0.status)]
    Job(Box<Job>),
    #[error(transparent)]
    Config(#[from] drover_api::config::ConfigError),
    /// A local problem, already phrased for the user.
    #[error("{}", .0.message)]
    Local(ErrorDetail),
}

impl CliError {
    pub fn local(code: &str, message: impl Into<String>, action: impl Into<String>) -> Self {
        CliError::Local(ErrorDetail::new(code, message, action))
    }

    pub fn io(what: &str, path: &std::path::Path, error: &std::io::Error) -> Self {
        CliError::local(
            "io_error",
            format!("cannot {what} {}: {error}", path.display()),
            "check the path and its permissions",
        )
    }

    pub fn detail(&self) -> ErrorDetail {
        match self {
            CliError::Client(error) => error.detail(),
            CliError::Job(job) => job.error.clone().unwrap_or_else(|| {
                ErrorDetail::new(
                    "job_canceled",
                    format!("job {} ({}) was {}", job.id, job.description, job.status),
                    format!("run it again with `drover job restart {}`", job.id),
                )
            }),
            CliError::Config(error) => ErrorDetail::new(
                "invalid_config",
                error_chain(error),
                "fix the setting in drover.toml, the DROVER_* variable or the flag named",
            ),
            CliError::Local(detail) => detail.clone(),
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Prints an error the one way the CLI does: message, code, recommended action, on stderr.
pub fn print_error(detail: &ErrorDetail) {
    eprintln!("error: {}", detail.message);
    eprintln!("  code: {}", detail.code);
    eprintln!("  action: {}", detail.action);
}
