//! Who is asking and what they may do: principals and permission levels.

use serde::{Deserialize, Serialize};

/// A user's database id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(pub i64);

/// A permission level on a repository. Levels are ordered: each includes the
/// ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Clone and fetch.
    Read,
    /// Read, plus push.
    Write,
    /// Write, plus settings, renaming and deletion.
    Admin,
}

/// The authenticated party behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials were presented.
    Anonymous,
    /// A user authenticated by a token.
    User {
        id: UserId,
        name: String,
        /// The instance owner is admin on every repository.
        is_owner: bool,
        /// The highest level the presented credential grants, whatever the user's own rights.
        token_limit: Access,
    },
}

impl Principal {
    /// A short label for logs: never a secret.
    pub fn label(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::User { name, .. } => name,
        }
    }
}
