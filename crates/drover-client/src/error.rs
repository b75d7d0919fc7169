//! What can go wrong talking to a Drover server. Every variant can say what it means for the
//! user as an [`ErrorDetail`] (code, message, recommended action), so that front ends print one
//! shape whether the server refused a request or the server could not be reached at all.

use drover_api::ErrorDetail;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("'{url}' is not a valid server URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid TLS configuration")]
    Tls(#[from] drover_tls::TlsError),
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
    #[error("cannot reach the server at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error body.
    #[error("{detail}")]
    Api { status: u16, detail: ErrorDetail },
    /// The server answered something that is not what the API documents.
    #[error("unexpected answer from {url} (HTTP {status})")]
    Unexpected {
        url: String,
        status: u16,
        body: String,
    },
    #[error("cannot read the answer from {url}")]
    Decode {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the server at {url} presented no certificate")]
    NoCertificate { url: String },
    #[error("WebSocket connection to {url} failed")]
    WebSocket {
        url: String,
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    #[error("invalid event from the server")]
    Event(#[source] serde_json::Error),
}

impl ClientError {
    /// The error as the user should see it. API errors are passed through as the server wrote
    /// them; local failures get a code and an action of their own.
    pub fn detail(&self) -> ErrorDetail {
        let message = error_chain(self);
        match self {
            ClientError::Api { detail, .. } => detail.clone(),
            ClientError::InvalidUrl { .. } => ErrorDetail::new(
                "invalid_url",
                message,
                "give the server as https://HOST:PORT (the API port is 8100 by default)",
            ),
            ClientError::Tls(_) | ClientError::NoCertificate { .. } => ErrorDetail::new(
                "tls_error",
                message,
                "check the CA certificate (--ca or DROVER_CA) or log in again with `drover login`",
            ),
            ClientError::Build(_) => ErrorDetail::new(
                "client_error",
                message,
                "report this as a bug with the command you ran",
            ),
            ClientError::Unreachable { .. } | ClientError::WebSocket { .. } => ErrorDetail::new(
                "server_unreachable",
                message,
                "check that the server runs and that the URL (DROVER_URL or `drover login URL`) is right",
            ),
            ClientError::Unexpected { .. } | ClientError::Decode { .. } | ClientError::Event(_) => {
                ErrorDetail::new(
                    "unexpected_response",
                    message,
                    "check that the CLI and the server are the same Drover version",
                )
            }
        }
    }

    /// The stable code of the error (the server's for API errors).
    pub fn code(&self) -> String {
        self.detail().code
    }
}

/// The error and its sources on one line, for the message of local failures.
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
