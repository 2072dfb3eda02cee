//! PID names (RFC 7285 §10.4.1) and resource ids (§10.2): PROTOCOL.md §2.1.

use std::{borrow::Borrow, fmt, sync::Arc};

/// Longest PID name or resource id RFC 7285 allows.
pub const MAX_NAME_LEN: usize = 64;

/// Why a PID name or resource id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is the empty string.
    #[error("empty name")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`] characters.
    #[error("{0:?} is longer than 64 characters")]
    TooLong(String),
    /// Contains a character RFC 7285 §10.1 does not allow.
    #[error("{name:?} contains {ch:?}; allowed are A-Z a-z 0-9 - : @ _ (\".\" is reserved)")]
    BadChar {
        /// The offending name (truncated to 80 bytes).
        name: String,
        /// The first character not allowed.
        ch: char,
    },
}

fn check_name(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(ch) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '@' | '_'))) {
        return Err(NameError::BadChar { name: s.chars().take(80).collect(), ch });
    }
    if s.len() > MAX_NAME_LEN {
        // Quote at most 80 characters: errors reach peers.
        let shown = if s.len() > 80 { format!("{}…", &s[..80]) } else { s.to_owned() };
        return Err(NameError::TooLong(shown));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s` (RFC 7285 §10.1 identifier syntax).
            pub fn new(s: &str) -> Result<Self, NameError> {
                check_name(s)?;
                Ok(Self(Arc::from(s)))
            }
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// A validated PID name: 1–64 characters of `A-Z a-z 0-9 - : @ _`.
    /// Cheap to clone (shared string).
    Pid
);
name_type!(
    /// A validated resource id (same syntax as a PID name).
    ResourceId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_rfc_examples_and_rejects_bad_names() {
        assert!(Pid::new("PID1").is_ok());
        assert!(Pid::new("pid0001-Rolla_x:y@z").is_ok());
        assert_eq!(Pid::new(""), Err(NameError::Empty));
        assert!(matches!(Pid::new("a.b"), Err(NameError::BadChar { ch: '.', .. })));
        assert!(matches!(Pid::new("a b"), Err(NameError::BadChar { ch: ' ', .. })));
        assert!(matches!(Pid::new("é"), Err(NameError::BadChar { .. })));
        assert!(Pid::new(&"a".repeat(64)).is_ok());
        assert!(matches!(Pid::new(&"a".repeat(65)), Err(NameError::TooLong(_))));
    }
}
