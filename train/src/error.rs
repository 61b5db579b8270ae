//! Errors of the training library. Every message names the file, field or
//! value that is wrong.

use std::path::PathBuf;

/// Anything that can go wrong while loading data, training, saving or evaluating.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
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
    /// An image could not be decoded or has the wrong size.
    #[error("{path}: {message}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A data file or store is malformed (the message names the field,
    /// array or byte offset).
    #[error("{path}: {message}")]
    File {
        /// The file, folder or array.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A configuration value is invalid.
    #[error("config field {field}: {message}")]
    Config {
        /// Dotted field path, e.g. `diffusion.steps`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Data is inconsistent.
    #[error("data: {0}")]
    Data(String),
    /// A checkpoint could not be loaded.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint folder or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Sampling failed.
    #[error("sampling: {0}")]
    Sampling(String),
}

impl TrainError {
    /// Wrap an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |cause| Self::Io { path, cause }
    }

    /// A config error for `field`.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Read and parse a JSON file, naming the file in any error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, TrainError> {
    let text = diffbc_runtime::fs::read_to_string(path, diffbc_runtime::fs::limits::JSON)?;
    serde_json::from_str(&text).map_err(|e| TrainError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Write a value as pretty JSON.
pub fn write_json<T: serde::Serialize>(
    path: &std::path::Path,
    value: &T,
) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| TrainError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::write(path, text + "\n").map_err(TrainError::io(path))
}
