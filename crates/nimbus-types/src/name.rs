//! Repository names: what a user may call a repository, checked in one place.

use std::fmt;

/// The longest repository name we accept, in bytes.
pub const MAX_REPO_NAME_LEN: usize = 100;

/// Names that would collide with the server's own top-level paths.
const RESERVED: &[&str] = &[
    "api", "assets", "static", "login", "logout", "settings", "admin", "user", "users", "healthz",
    "metrics", "invite", "account", "-",
];

/// A validated repository name: ASCII letters, digits, `.`, `_` and `-`,
/// at most [`MAX_REPO_NAME_LEN`] bytes, no leading dot, no `..`, and not
/// ending in `.git` (that suffix belongs to the clone URL).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct RepoName(String);

/// Why a repository name was refused. The messages are shown to users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoNameError {
    #[error("repository name must not be empty")]
    Empty,
    #[error("repository name is {length} bytes long; the limit is {MAX_REPO_NAME_LEN}")]
    TooLong { length: usize },
    #[error(
        "repository name contains {character:?}; only letters, digits, '.', '_' and '-' are allowed"
    )]
    InvalidCharacter { character: char },
    #[error("repository name must not start with a dot")]
    LeadingDot,
    #[error("repository name must not contain '..'")]
    DoubleDot,
    #[error("repository name must not end in '.git'; the clone URL adds that suffix")]
    GitSuffix,
    #[error("repository name {name:?} is reserved")]
    Reserved { name: String },
}

impl RepoName {
    /// Validate `name` as a repository name.
    pub fn new(name: &str) -> Result<Self, RepoNameError> {
        if name.is_empty() {
            return Err(RepoNameError::Empty);
        }
        if name.len() > MAX_REPO_NAME_LEN {
            return Err(RepoNameError::TooLong { length: name.len() });
        }
        if let Some(character) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(RepoNameError::InvalidCharacter { character });
        }
        if name.starts_with('.') {
            return Err(RepoNameError::LeadingDot);
        }
        if name.contains("..") {
            return Err(RepoNameError::DoubleDot);
        }
        if name.to_ascii_lowercase().ends_with(".git") {
            return Err(RepoNameError::GitSuffix);
        }
        if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            return Err(RepoNameError::Reserved {
                name: name.to_owned(),
            });
        }
        Ok(RepoName(name.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::str::FromStr for RepoName {
    type Err = RepoNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RepoName::new(s)
    }
}

impl<'de> serde::Deserialize<'de> for RepoName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        RepoName::new(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["nimbus", "my-repo", "a_b.c", "X1", "v2.0-rc"] {
            assert_eq!(RepoName::new(ok).map(|n| n.to_string()), Ok(ok.to_owned()));
        }
    }

    #[test]
    fn refuses_bad_names_with_the_reason() {
        let long = "a".repeat(MAX_REPO_NAME_LEN + 1);
        let cases: &[(&str, RepoNameError)] = &[
            ("", RepoNameError::Empty),
            (&long, RepoNameError::TooLong { length: 101 }),
            ("a/b", RepoNameError::InvalidCharacter { character: '/' }),
            ("a b", RepoNameError::InvalidCharacter { character: ' ' }),
            ("ü", RepoNameError::InvalidCharacter { character: 'ü' }),
            (".hidden", RepoNameError::LeadingDot),
            ("a..b", RepoNameError::DoubleDot),
            ("repo.git", RepoNameError::GitSuffix),
            ("API", RepoNameError::Reserved { name: "API".into() }),
        ];
        for (name, expected) in cases {
            assert_eq!(RepoName::new(name).as_ref(), Err(expected), "{name:?}");
        }
    }

    #[test]
    fn a_name_at_the_length_limit_is_accepted() {
        assert!(RepoName::new(&"a".repeat(MAX_REPO_NAME_LEN)).is_ok());
    }
}
