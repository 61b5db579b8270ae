//! Golden tensors: inputs of each graph and the outputs the trainer (burn)
//! computed for them, stored as `.npy` files with a JSON index, so every
//! runtime (and any ONNX tool) can check an exported model against training.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Name of the index file inside `golden/`.
pub const INDEX_FILE: &str = "index.json";

/// One named tensor file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenTensor {
    /// Graph input or output name.
    pub name: String,
    /// `.npy` file inside `golden/`.
    pub file: String,
}

/// One golden case: a graph, a batch size, inputs and expected outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenCase {
    /// `encoder` or `head`.
    pub graph: String,
    /// Rows in the batch.
    pub batch: usize,
    /// Inputs, in graph order.
    pub inputs: Vec<GoldenTensor>,
    /// Expected outputs, in graph order.
    pub outputs: Vec<GoldenTensor>,
}

/// Errors reading or writing golden files.
#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    /// File system error.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// Refused before reading (not a regular file, too large).
    #[error(transparent)]
    File(#[from] crate::fs::FileError),
    /// Malformed file.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Write a little-endian f32 array as `.npy` (format 1.0).
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), GoldenError> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // Pad so that magic (6) + version (2) + length (2) + header is a multiple of 64, ending in '\n'.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + 4 * data.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).map_err(|cause| GoldenError::Io {
        path: path.to_path_buf(),
        cause,
    })
}

/// Read a little-endian f32 `.npy` file written by [`write_npy`] (or numpy).
pub fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>), GoldenError> {
    let bad = |message: String| GoldenError::Format {
        path: path.to_path_buf(),
        message,
    };
    let bytes = crate::fs::read(path, crate::fs::limits::NPY)?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" || bytes[6] != 1 {
        return Err(bad("not an .npy file (version 1)".into()));
    }
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(
        bytes
            .get(10..10 + hlen)
            .ok_or_else(|| bad("truncated header".into()))?,
    )
    .map_err(|_| bad("header is not UTF-8".into()))?;
    if !header.contains("'descr': '<f4'") || header.contains("'fortran_order': True") {
        return Err(bad(format!(
            "only little-endian f32 in C order is supported, header is {header}"
        )));
    }
    let start = header
        .find("'shape': (")
        .ok_or_else(|| bad("no shape in header".into()))?
        + 10;
    let end = header[start..]
        .find(')')
        .ok_or_else(|| bad("unterminated shape".into()))?
        + start;
    let shape = header[start..end]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(format!("bad dimension {s:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let body = &bytes[10 + hlen..];
    let n: usize = shape.iter().product();
    if body.len() != 4 * n {
        return Err(bad(format!(
            "shape {shape:?} needs {} bytes of data, found {}",
            4 * n,
            body.len()
        )));
    }
    Ok((
        shape,
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("diffbc-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join("a.npy");
        write_npy(&p, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, -6.5]).expect("write");
        let bytes = std::fs::read(&p).expect("read");
        assert_eq!((bytes.len() - 24) % 64, 0, "header padded to 64 bytes");
        assert_eq!(
            read_npy(&p).expect("read"),
            (vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5])
        );
        std::fs::write(&p, &bytes[..bytes.len() - 4]).expect("truncate");
        let e = read_npy(&p).unwrap_err().to_string();
        assert!(e.contains("a.npy") && e.contains("needs 24 bytes"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
