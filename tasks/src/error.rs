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
    /// The serial bridge failed (connect, handshake, the loop).
    #[error(transparent)]
    Bridge(#[from] diffbc_bridge::BridgeError),
    /// Training or a training data set failed.
    #[cfg(feature = "train")]
    #[error(transparent)]
    Train(#[from] diffbc_train::TrainError),
    /// Exporting a checkpoint failed.
    #[cfg(feature = "train")]
    #[error(transparent)]
    Export(#[from] diffbc_export::ExportError),
    /// A flag or setting out of range (the message names it).
    #[error(transparent)]
    Value(#[from] diffbc_bridge::ValueError),
    /// Records that could not be written as JSON.
    #[error("writing JSON: {0}")]
    Encode(#[from] serde_json::Error),
    /// An operating-system error without a file to name (a scratch folder).
    #[error(transparent)]
    Os(#[from] std::io::Error),
    /// Inputs that do not fit together, a setting out of range: the message
    /// names them.
    #[error("{0}")]
    Invalid(String),
    /// A job of the pool that never ran.
    #[error(transparent)]
    Unrun(#[from] crate::pool::Unrun),
    /// What was being done when `inner` happened (one line: "context: inner").
    #[error("{context}: {inner}")]
    In {
        /// What was being done.
        context: String,
        /// What went wrong.
        inner: Box<TaskError>,
    },
}

/// `Result` with [`TaskError`].
pub type Result<T, E = TaskError> = std::result::Result<T, E>;

/// What was being done, added to an error as [`TaskError::In`].
pub trait Context<T> {
    /// Wrap the error with `context()`.
    fn context_with(self, context: impl FnOnce() -> String) -> Result<T>;
    /// Wrap the error with `context`.
    fn context(self, context: &str) -> Result<T>;
}

impl<T, E: Into<TaskError>> Context<T> for std::result::Result<T, E> {
    fn context_with(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| TaskError::In {
            context: context(),
            inner: Box::new(e.into()),
        })
    }

    fn context(self, context: &str) -> Result<T> {
        self.context_with(|| context.to_string())
    }
}

impl TaskError {
    /// A [`TaskError::Invalid`] with `message`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

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

/// Return a [`TaskError::Invalid`] with a formatted message.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err($crate::TaskError::Invalid(format!($($arg)*)))
    };
}

/// [`invalid!`] unless `cond` holds.
#[macro_export]
macro_rules! require {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::invalid!($($arg)*);
        }
    };
}
