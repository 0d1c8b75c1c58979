//! The one error type of configuration loading.

use std::fmt;

/// Why a configuration file was refused. A bad file is refused whole.
///
/// It displays as one line: `FILE: PATH: MESSAGE`, where `PATH` is the field path in
/// the form `rules[3].ports[1]` (left out when the whole file is at fault, e.g. it is
/// empty or not YAML).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as given by the user (or the name passed to
    /// [`super::Config::from_yaml_str`]).
    pub file: String,
    /// The field path, e.g. `rules[3].ports[1]`; empty when it concerns the whole file.
    pub path: String,
    /// What is wrong, one line, no trailing period.
    pub message: String,
}

impl ConfigError {
    /// An error at `path` in `file`.
    pub fn new(file: &str, path: impl Into<String>, message: impl Into<String>) -> Self {
        let message: String = message.into();
        // Keep the promise of one line, whatever a dependency put into its message.
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        Self {
            file: file.to_string(),
            path: path.into(),
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// An error without a file name yet: validation code builds these and the loader adds
/// the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn in_file(self, file: &str) -> ConfigError {
        ConfigError::new(file, self.path, self.message)
    }
}

/// Shorthand for validation results.
pub(crate) type FieldResult<T> = Result<T, FieldError>;
