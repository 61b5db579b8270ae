//! The one place diffbc opens a file a user named for reading, and the one
//! place it replaces an output a user named.
//!
//! Every file that comes from a user — a model folder's manifest and graphs,
//! golden tensors, demonstrations, configs, images — is read through
//! [`read`] (or [`read_to_string`]), which
//!
//! - refuses anything that is not a regular file after symlinks are followed
//!   (a directory, a device such as `/dev/zero`, a FIFO, a socket), checking
//!   the type before opening, so a FIFO cannot block the loader, and again on
//!   the opened handle;
//! - refuses a file larger than a cap the caller chooses for the format
//!   ([`limits`]), and never reads more than the cap even if the file grows
//!   while it is read;
//!
//! and a file named *inside* a folder (a manifest's graph `file`, a golden
//! index's tensor names) is resolved with [`within`], which refuses absolute
//! paths and `..`, resolves symlinks and checks that the result is still
//! inside the folder.
//!
//! Outputs (checkpoint folders, exported models, demonstration files) are
//! claimed with [`claim_output`] before anything is written: an absent path
//! or an empty folder is free; something diffbc recognises as its own kind
//! of output is replaced only when the caller says `force`; anything else —
//! a user's folder, a file where a folder belongs, a folder holding one
//! foreign file — is refused, `force` or not, and nothing is deleted.
//! [`replace_dir`] then moves a finished folder into place.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Size caps per format, in bytes: what the format can legitimately hold.
pub mod limits {
    /// A JSON document (manifest, config, metadata, golden index): 64 MiB.
    pub const JSON: u64 = 64 << 20;
    /// An ONNX graph: protobuf's own 2 GiB message limit.
    pub const GRAPH: u64 = 2 << 30;
    /// A golden `.npy` tensor: 1 GiB.
    pub const NPY: u64 = 1 << 30;
    /// An image (a claw scene): 256 MiB.
    pub const IMAGE: u64 = 256 << 20;
    /// A `.demos` file: 16 GiB (it is read into memory whole).
    pub const DEMOS: u64 = 16 << 30;
}

/// Why a user-named file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The operating system refused (missing file, permissions, …).
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A directory, device, FIFO or socket where a regular file belongs.
    #[error("{path}: is a {kind}, not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Larger than the format allows.
    #[error("{path}: {size} bytes, more than the {limit} bytes this kind of file may hold")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (at least; it may have grown while being read).
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// A name that leaves the folder it must stay in.
    #[error("{name:?} (in {root}): {why}; files must stay inside the folder")]
    Outside {
        /// The folder.
        root: PathBuf,
        /// The name as given.
        name: String,
        /// Absolute, `..`, or a symlink that points out.
        why: &'static str,
    },
    /// An output path holds something that is not diffbc's own output.
    #[error("{path}: not {what} ({found}); refusing to replace it, with or without --force")]
    NotOurs {
        /// The output path.
        path: PathBuf,
        /// What kind of output was expected, e.g. "a diffbc checkpoint".
        what: &'static str,
        /// What is there instead.
        found: String,
    },
    /// An output path holds diffbc's own output and `force` was not given.
    #[error("{path}: holds {what} already; pass --force to replace it")]
    Exists {
        /// The output path.
        path: PathBuf,
        /// What is there.
        what: &'static str,
    },
    /// The bytes are not UTF-8 text.
    #[error("{path}: not UTF-8 text: {cause}")]
    NotText {
        /// The file.
        path: PathBuf,
        /// The decoder's message (names the byte offset).
        cause: std::str::Utf8Error,
    },
}

impl FileError {
    /// The path the error is about.
    pub fn path(&self) -> PathBuf {
        match self {
            Self::Io { path, .. }
            | Self::NotAFile { path, .. }
            | Self::TooLarge { path, .. }
            | Self::NotText { path, .. }
            | Self::NotOurs { path, .. }
            | Self::Exists { path, .. } => path.clone(),
            Self::Outside { root, name, .. } => root.join(name),
        }
    }
}

fn kind_of(t: std::fs::FileType) -> Option<&'static str> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return Some("character device");
        }
        if t.is_block_device() {
            return Some("block device");
        }
        if t.is_fifo() {
            return Some("FIFO");
        }
        if t.is_socket() {
            return Some("socket");
        }
    }
    if t.is_dir() {
        Some("directory")
    } else if t.is_file() {
        None
    } else {
        Some("special file")
    }
}

/// The size of the regular file at `path` (symlinks followed), or why it is
/// not one. Opens nothing.
pub fn regular_file_size(path: &Path) -> Result<u64, FileError> {
    let meta = std::fs::metadata(path).map_err(|cause| FileError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    if let Some(kind) = kind_of(meta.file_type()) {
        return Err(FileError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    Ok(meta.len())
}

/// Read the regular file at `path` whole, refusing anything else and any
/// file over `limit` bytes.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let io = |cause| FileError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let too_large = |size| FileError::TooLarge {
        path: path.to_path_buf(),
        size,
        limit,
    };
    // The type first, so that opening a FIFO cannot block.
    let size = regular_file_size(path)?;
    if size > limit {
        return Err(too_large(size));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    // Again on the handle: the path may have been swapped in between.
    let meta = file.metadata().map_err(io)?;
    if let Some(kind) = kind_of(meta.file_type()) {
        return Err(FileError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len().min(limit) as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(path: &Path, limit: u64) -> Result<String, FileError> {
    let bytes = read(path, limit)?;
    String::from_utf8(bytes).map_err(|e| FileError::NotText {
        path: path.to_path_buf(),
        cause: e.utf8_error(),
    })
}

/// The path of `name` inside `root`, checked to stay there: `name` must be
/// relative and free of `..`, and after symlinks are resolved the file must
/// still lie inside `root` (itself resolved). The file must exist.
pub fn within(root: &Path, name: &str) -> Result<PathBuf, FileError> {
    let outside = |why| FileError::Outside {
        root: root.to_path_buf(),
        name: name.to_string(),
        why,
    };
    let rel = Path::new(name);
    if name.is_empty() {
        return Err(outside("the name is empty"));
    }
    for c in rel.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(outside("it contains `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(outside("it is an absolute path"));
            }
        }
    }
    let joined = root.join(rel);
    let real_root = root.canonicalize().map_err(|cause| FileError::Io {
        path: root.to_path_buf(),
        cause,
    })?;
    let real = joined.canonicalize().map_err(|cause| FileError::Io {
        path: joined.clone(),
        cause,
    })?;
    if !real.starts_with(&real_root) {
        return Err(outside("it is a symlink that points out of the folder"));
    }
    Ok(joined)
}

/// A kind of output diffbc writes, and how to recognise one already there.
#[derive(Debug, Clone, Copy)]
pub struct OutputKind {
    /// Named in messages, e.g. "a diffbc checkpoint".
    pub what: &'static str,
    /// A folder (checkpoint, model) or a single file (demonstrations).
    pub is_dir: bool,
    /// For a folder: the only entry names it may hold.
    pub entries: &'static [&'static str],
    /// Whether the folder or file at the path is one of ours (reads the
    /// marker: a manifest, a checkpoint's metadata, a file's magic).
    pub recognise: fn(&Path) -> bool,
}

/// Whether the output at `path` may be written: absent, an empty folder (for
/// a folder kind), or one of ours with `force`. Never deletes anything.
pub fn claim_output(path: &Path, kind: &OutputKind, force: bool) -> Result<(), FileError> {
    let not_ours = |found: String| FileError::NotOurs {
        path: path.to_path_buf(),
        what: kind.what,
        found,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(cause) => {
            return Err(FileError::Io {
                path: path.to_path_buf(),
                cause,
            });
        }
    };
    if meta.file_type().is_symlink() {
        return Err(not_ours("it is a symlink".into()));
    }
    if kind.is_dir {
        if !meta.is_dir() {
            return Err(not_ours(format!(
                "it is a {}, not a folder",
                kind_of(meta.file_type()).unwrap_or("file")
            )));
        }
        let mut names = Vec::new();
        for e in std::fs::read_dir(path).map_err(|cause| FileError::Io {
            path: path.to_path_buf(),
            cause,
        })? {
            let e = e.map_err(|cause| FileError::Io {
                path: path.to_path_buf(),
                cause,
            })?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        if names.is_empty() {
            return Ok(());
        }
        names.sort();
        if let Some(foreign) = names.iter().find(|n| !kind.entries.contains(&n.as_str())) {
            return Err(not_ours(format!("it holds {foreign:?}")));
        }
    } else if !meta.is_file() {
        return Err(not_ours(format!(
            "it is a {}",
            kind_of(meta.file_type()).unwrap_or("special file")
        )));
    }
    if !(kind.recognise)(path) {
        return Err(not_ours("its contents are not recognised".into()));
    }
    if force {
        Ok(())
    } else {
        Err(FileError::Exists {
            path: path.to_path_buf(),
            what: kind.what,
        })
    }
}

/// A fresh, uniquely named temporary folder beside `out` (same file system,
/// so the final rename is atomic); removed on drop unless moved into place.
pub fn staging_dir(out: &Path) -> Result<tempfile::TempDir, FileError> {
    let parent = parent_of(out);
    std::fs::create_dir_all(parent).map_err(|cause| FileError::Io {
        path: parent.to_path_buf(),
        cause,
    })?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempdir_in(parent)
        .map_err(|cause| FileError::Io {
            path: parent.to_path_buf(),
            cause,
        })
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Move the finished folder `staged` to `out`. An existing `out` must be of
/// `kind` (see [`claim_output`]; the caller claimed it with `force` before
/// writing): it is moved aside under a unique name, `staged` is renamed into
/// place, and only then is the old folder removed.
pub fn replace_dir(
    staged: tempfile::TempDir,
    out: &Path,
    kind: &OutputKind,
) -> Result<(), FileError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| FileError::Io { path, cause }
    };
    if std::fs::symlink_metadata(out).is_ok() {
        claim_output(out, kind, true)?;
        let aside = staging_dir(out)?;
        let old = aside.path().join("previous");
        std::fs::rename(out, &old).map_err(io(out))?;
        std::fs::rename(staged.path(), out).map_err(io(out))?;
        let _ = staged.keep();
        drop(aside);
    } else {
        std::fs::rename(staged.path(), out).map_err(io(out))?;
        let _ = staged.keep();
    }
    Ok(())
}

/// Write `bytes` to the file `out` atomically (a unique temporary file beside
/// it, then rename). An existing `out` must be of `kind` (claimed with
/// `force` by the caller).
pub fn replace_file(out: &Path, bytes: &[u8], kind: &OutputKind) -> Result<(), FileError> {
    use std::io::Write;
    if std::fs::symlink_metadata(out).is_ok() {
        claim_output(out, kind, true)?;
    }
    let parent = parent_of(out);
    std::fs::create_dir_all(parent).map_err(|cause| FileError::Io {
        path: parent.to_path_buf(),
        cause,
    })?;
    let io = |cause| FileError::Io {
        path: out.to_path_buf(),
        cause,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".diffbc.")
        .suffix(".partial")
        .tempfile_in(parent)
        .map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(out).map_err(|e| io(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_regular_file_and_refuses_everything_else() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("a.json");
        std::fs::write(&f, b"{}").expect("write");
        assert_eq!(read(&f, 10).expect("read"), b"{}");
        assert_eq!(read_to_string(&f, 10).expect("text"), "{}");
        // Over the cap: refused, size and cap named.
        let e = read(&f, 1).unwrap_err().to_string();
        assert!(e.contains("a.json") && e.contains("2 bytes"), "{e}");
        // A directory.
        let e = read(dir.path(), 10).unwrap_err();
        assert!(
            matches!(
                e,
                FileError::NotAFile {
                    kind: "directory",
                    ..
                }
            ),
            "{e}"
        );
        // Missing.
        assert!(matches!(
            read(&dir.path().join("nope"), 10),
            Err(FileError::Io { .. })
        ));
        // Not text.
        std::fs::write(&f, [0xff, 0xfe]).expect("write");
        assert!(
            read_to_string(&f, 10)
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_fifos_are_refused_without_reading_or_blocking() {
        let e = read(Path::new("/dev/zero"), limits::GRAPH).unwrap_err();
        assert!(
            matches!(
                e,
                FileError::NotAFile {
                    kind: "character device",
                    ..
                }
            ),
            "{e}"
        );
        // A symlink to a device is the device.
        let dir = tempfile::tempdir().expect("tmp");
        let link = dir.path().join("model.onnx");
        std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
        assert!(matches!(
            read(&link, 1 << 20),
            Err(FileError::NotAFile { .. })
        ));
        // A FIFO with no writer would block `open`; the type check comes first.
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(status.success());
        let e = read(&fifo, 10).unwrap_err();
        assert!(matches!(e, FileError::NotAFile { kind: "FIFO", .. }), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn names_stay_inside_their_folder() {
        let outer = tempfile::tempdir().expect("tmp");
        let root = outer.path().join("model");
        std::fs::create_dir_all(root.join("golden")).expect("mkdir");
        std::fs::write(root.join("encoder.onnx"), b"x").expect("write");
        std::fs::write(root.join("golden/a.npy"), b"x").expect("write");
        std::fs::write(outer.path().join("secret"), b"s").expect("write");
        assert_eq!(
            within(&root, "encoder.onnx").expect("inside"),
            root.join("encoder.onnx")
        );
        assert!(within(&root, "./golden/a.npy").is_ok());
        for bad in ["../secret", "golden/../../secret", "", "/etc/passwd"] {
            let e = within(&root, bad).unwrap_err();
            assert!(matches!(e, FileError::Outside { .. }), "{bad}: {e}");
        }
        // A symlink inside the folder that points out of it.
        std::os::unix::fs::symlink(outer.path().join("secret"), root.join("head.onnx"))
            .expect("symlink");
        let e = within(&root, "head.onnx").unwrap_err().to_string();
        assert!(e.contains("symlink") && e.contains("head.onnx"), "{e}");
        // A symlink that stays inside is fine.
        std::os::unix::fs::symlink(root.join("encoder.onnx"), root.join("alias.onnx"))
            .expect("symlink");
        assert!(within(&root, "alias.onnx").is_ok());
    }

    fn is_marked(p: &Path) -> bool {
        p.join("marker").is_file() || p.extension().is_some_and(|e| e == "ours")
    }

    const DIR_KIND: OutputKind = OutputKind {
        what: "a test output",
        is_dir: true,
        entries: &["marker", "data"],
        recognise: is_marked,
    };

    #[test]
    fn outputs_are_claimed_only_when_absent_empty_or_ours_with_force() {
        let tmp = tempfile::tempdir().expect("tmp");
        let out = tmp.path().join("out");
        claim_output(&out, &DIR_KIND, false).expect("absent");
        std::fs::create_dir(&out).expect("mkdir");
        claim_output(&out, &DIR_KIND, false).expect("empty");
        std::fs::write(out.join("marker"), b"").expect("write");
        assert!(matches!(
            claim_output(&out, &DIR_KIND, false),
            Err(FileError::Exists { .. })
        ));
        claim_output(&out, &DIR_KIND, true).expect("ours, forced");
        // One foreign entry makes it not ours, force or not.
        std::fs::write(out.join("thesis.tex"), b"").expect("write");
        for force in [false, true] {
            let e = claim_output(&out, &DIR_KIND, force)
                .unwrap_err()
                .to_string();
            assert!(e.contains("thesis.tex") && e.contains("refusing"), "{e}");
        }
        // Known names without the marker are not ours either.
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).expect("mkdir");
        std::fs::write(other.join("data"), b"").expect("write");
        assert!(matches!(
            claim_output(&other, &DIR_KIND, true),
            Err(FileError::NotOurs { .. })
        ));
        // A file where a folder belongs.
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        assert!(matches!(
            claim_output(&file, &DIR_KIND, true),
            Err(FileError::NotOurs { .. })
        ));
    }

    #[test]
    fn replacing_keeps_nothing_stray_and_never_touches_a_foreign_folder() {
        let tmp = tempfile::tempdir().expect("tmp");
        let out = tmp.path().join("out");
        for round in 0..2 {
            let staged = staging_dir(&out).expect("staging");
            std::fs::write(staged.path().join("marker"), b"").expect("write");
            std::fs::write(staged.path().join("data"), [round]).expect("write");
            replace_dir(staged, &out, &DIR_KIND).expect("replace");
            assert_eq!(std::fs::read(out.join("data")).expect("data"), [round]);
        }
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .expect("ls")
            .flatten()
            .collect();
        assert_eq!(names.len(), 1, "only the output is left");
        // A foreign folder is not replaced even if a caller skipped the claim.
        let users = tmp.path().join("users");
        std::fs::create_dir(&users).expect("mkdir");
        std::fs::write(users.join("notes"), b"mine").expect("write");
        let staged = staging_dir(&users).expect("staging");
        assert!(replace_dir(staged, &users, &DIR_KIND).is_err());
        assert_eq!(std::fs::read(users.join("notes")).expect("kept"), b"mine");
        // Files: a foreign file is never overwritten.
        let file_kind = OutputKind {
            what: "a test file",
            is_dir: false,
            entries: &[],
            recognise: is_marked,
        };
        let f = tmp.path().join("paper.pdf");
        std::fs::write(&f, b"pdf").expect("write");
        assert!(replace_file(&f, b"new", &file_kind).is_err());
        assert_eq!(std::fs::read(&f).expect("kept"), b"pdf");
        let g = tmp.path().join("a.ours");
        replace_file(&g, b"one", &file_kind).expect("new file");
        replace_file(&g, b"two", &file_kind).expect("ours");
        assert_eq!(std::fs::read(&g).expect("read"), b"two");
    }
}
