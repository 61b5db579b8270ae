//! Errors of the task worlds. Every message names the file, field or value
//! that is wrong.

use std::path::PathBuf;

/// Anything that can go wrong while reading a task's files, running a policy
/// in it or writing its figures.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A file or folder could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause (part of the message, so the error prints as one line).
        cause: std::io::Error,
    },
    /// A user-named file was refused before reading (not a regular file,
    /// too large, or outside the folder it belongs to).
    #[error(transparent)]
    Input(#[from] diffbc_runtime::FileError),
    /// A JSON file is malformed or has unknown / missing fields.
    #[error("{path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// serde's message (names the field, line and column).
        message: String,
    },
    /// An image could not be decoded, has the wrong size, or could not be
    /// drawn or written.
    #[error("{path}: {message}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The policy refused an observation or failed to decide.
    #[error(transparent)]
    Policy(#[from] diffbc_runtime::PolicyError),
}

impl TaskError {
    /// Wrap an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |cause| Self::Io { path, cause }
    }
}

/// Read and parse a JSON file, naming the file in any error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, TaskError> {
    let text = diffbc_runtime::fs::read_to_string(path, diffbc_runtime::fs::limits::JSON)?;
    serde_json::from_str(&text).map_err(|e| TaskError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
