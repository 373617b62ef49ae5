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

impl Access {
    /// `read`, `write` or `admin`, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }

    /// Parse `read`, `write` or `admin`.
    pub fn parse(text: &str) -> Option<Access> {
        match text {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "admin" => Some(Access::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing a personal access token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Clone and fetch.
    RepoRead,
    /// Push (and delete refs); implies `repo:read`.
    RepoWrite,
    /// Repository administration, and instance administration for the
    /// owner; implies `repo:write`.
    Admin,
    /// Use of the JSON API at all.
    Api,
}

impl Scope {
    /// Every scope, in canonical order.
    pub const ALL: [Scope; 4] = [Scope::RepoRead, Scope::RepoWrite, Scope::Admin, Scope::Api];

    /// The scope's name: `repo:read`, `repo:write`, `admin` or `api`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::RepoRead => "repo:read",
            Scope::RepoWrite => "repo:write",
            Scope::Admin => "admin",
            Scope::Api => "api",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown scope name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?}; scopes are repo:read, repo:write, admin and api")]
pub struct ScopeError(pub String);

/// The set of scopes of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes {
    /// `repo:read`
    pub repo_read: bool,
    /// `repo:write`
    pub repo_write: bool,
    /// `admin`
    pub admin: bool,
    /// `api`
    pub api: bool,
}

impl Scopes {
    /// Every scope: the owner's bootstrap token.
    pub const ALL: Scopes = Scopes {
        repo_read: true,
        repo_write: true,
        admin: true,
        api: true,
    };

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        match scope {
            Scope::RepoRead => self.repo_read,
            Scope::RepoWrite => self.repo_write,
            Scope::Admin => self.admin,
            Scope::Api => self.api,
        }
    }

    /// The set with `scope` added.
    pub fn with(mut self, scope: Scope) -> Scopes {
        match scope {
            Scope::RepoRead => self.repo_read = true,
            Scope::RepoWrite => self.repo_write = true,
            Scope::Admin => self.admin = true,
            Scope::Api => self.api = true,
        }
        self
    }

    /// The highest repository level these scopes allow: `admin` implies
    /// `repo:write`, which implies `repo:read`.
    pub fn repo_limit(self) -> Option<Access> {
        if self.admin {
            Some(Access::Admin)
        } else if self.repo_write {
            Some(Access::Write)
        } else if self.repo_read {
            Some(Access::Read)
        } else {
            None
        }
    }

    /// Parse a comma-separated list such as `repo:read,api` (empty entries
    /// and surrounding spaces are ignored).
    pub fn parse(list: &str) -> Result<Scopes, ScopeError> {
        let mut scopes = Scopes::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let scope = Scope::ALL
                .into_iter()
                .find(|scope| scope.as_str() == item)
                .ok_or_else(|| ScopeError(item.to_owned()))?;
            scopes = scopes.with(scope);
        }
        Ok(scopes)
    }

    /// The scopes in canonical order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |scope| self.contains(*scope))
    }
}

impl std::fmt::Display for Scopes {
    /// The comma-separated list, as stored and as [`Scopes::parse`] reads it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(","))
    }
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
        /// What the presented token may be used for, whatever the user's own rights.
        scopes: Scopes,
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
