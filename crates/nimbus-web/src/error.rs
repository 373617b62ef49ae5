//! The one place where failures become HTTP responses. Clients get a clear
//! message; internals go to the log.

use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::{Reply, Response};

/// How an error body is shaped for the endpoint that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Plain text, for git clients (they show it to the user).
    Text,
    /// `{"error": "..."}`, for the API.
    Json,
}

/// An error response.
#[derive(Debug)]
pub struct WebError {
    pub status: StatusCode,
    pub message: String,
    pub flavor: Flavor,
    /// `Retry-After` seconds, for 429 and 503 answers.
    pub retry_after: Option<u64>,
}

impl WebError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        WebError {
            status,
            message: message.into(),
            flavor: Flavor::Text,
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn json(mut self) -> Self {
        self.flavor = Flavor::Json;
        self
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// A failure that is not the client's fault: logged in full, reported
    /// without details.
    pub fn internal(err: &dyn std::error::Error) -> Self {
        let mut chain = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            chain.push_str(": ");
            chain.push_str(&cause.to_string());
            source = cause.source();
        }
        tracing::error!(error = %chain, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal server error; the details are in the server log",
        )
    }

    pub fn into_response(self) -> Response {
        let mut response = match self.flavor {
            Flavor::Text => {
                let mut text = self.message;
                text.push('\n');
                warp::reply::with_status(text, self.status).into_response()
            }
            Flavor::Json => warp::reply::with_status(
                warp::reply::json(&serde_json::json!({ "error": self.message })),
                self.status,
            )
            .into_response(),
        };
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Nimbus\", charset=\"UTF-8\""),
            );
        }
        response
    }
}
