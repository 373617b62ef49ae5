//! Git references as Nimbus stores them: validated byte names pointing at
//! object ids, and the compare-and-swap updates that move them.

use bstr::{BStr, BString, ByteSlice};
use gix_hash::ObjectId;
use std::fmt;

/// The longest ref name we accept, in bytes (git itself has no limit, but
/// nothing sane comes close).
pub const MAX_REF_NAME_LEN: usize = 1024;

/// A full reference name such as `refs/heads/main`, checked as
/// `git check-ref-format` does. Ref names are bytes, not strings.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RefName(BString);

/// Why a ref name was refused.
#[derive(Debug, thiserror::Error)]
pub enum RefNameError {
    #[error("ref name is {length} bytes long; the limit is {MAX_REF_NAME_LEN}")]
    TooLong { length: usize },
    #[error("ref name {name:?} must start with 'refs/'")]
    NotUnderRefs { name: BString },
    #[error("invalid ref name {name:?}: {source}")]
    Invalid {
        name: BString,
        source: gix_validate::reference::name::Error,
    },
}

impl RefName {
    /// Validate a full ref name below `refs/`.
    pub fn new(name: &[u8]) -> Result<Self, RefNameError> {
        if name.len() > MAX_REF_NAME_LEN {
            return Err(RefNameError::TooLong { length: name.len() });
        }
        if !name.starts_with(b"refs/") {
            return Err(RefNameError::NotUnderRefs { name: name.into() });
        }
        gix_validate::reference::name(name.as_bstr()).map_err(|source| RefNameError::Invalid {
            name: name.into(),
            source,
        })?;
        Ok(RefName(name.into()))
    }

    /// The name as bytes.
    pub fn as_bstr(&self) -> &BStr {
        self.0.as_bstr()
    }

    /// The name as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_slice()
    }

    /// Whether this is a branch (`refs/heads/…`).
    pub fn is_branch(&self) -> bool {
        self.0.starts_with(b"refs/heads/")
    }

    /// Whether this is a tag (`refs/tags/…`).
    pub fn is_tag(&self) -> bool {
        self.0.starts_with(b"refs/tags/")
    }
}

impl fmt::Display for RefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for RefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A stored reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub name: RefName,
    pub target: ObjectId,
    /// For a ref pointing at an annotated tag: the non-tag object the tag
    /// chain ends at, recorded when the ref was written so advertisements
    /// need no object lookups.
    pub peeled: Option<ObjectId>,
}

/// What a symbolic or direct ref points at, for advertisements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefTarget {
    Direct(ObjectId),
    /// `HEAD` on an unborn branch or pointing at a branch.
    Symbolic(RefName),
}

/// A compare-and-swap update of one ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub name: RefName,
    /// The value the ref must have now; `None` means it must not exist.
    pub old: Option<ObjectId>,
    /// The value to set; `None` deletes the ref.
    pub new: Option<ObjectId>,
    /// The peeled value of `new` when it is an annotated tag.
    pub new_peeled: Option<ObjectId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names_follow_check_ref_format() {
        for ok in [
            &b"refs/heads/main"[..],
            b"refs/tags/v1.0",
            b"refs/heads/feature/x-y",
        ] {
            assert!(RefName::new(ok).is_ok(), "{:?}", ok.as_bstr());
        }
        for bad in [
            &b"HEAD"[..],
            b"main",
            b"refs/heads/a..b",
            b"refs/heads/x.lock",
            b"refs/heads/a b",
            b"refs/heads/@{x",
            b"refs/heads/",
            b"refs/heads//x",
            b"refs/heads/x.",
            b"refs/heads/*",
            b"refs/heads/\x01",
        ] {
            assert!(RefName::new(bad).is_err(), "{:?}", bad.as_bstr());
        }
    }
}
