//! docker's `cp` placement rules, as pure functions: where a copied tree lands given the
//! source (file or directory, `SRC/.`) and the destination (missing, file, directory,
//! ending in `/`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The source's facts that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// It is a directory.
    pub is_dir: bool,
    /// Its contents are copied, not itself (the path ends in `/.`).
    pub contents: bool,
}

/// What is at the destination path (symlinks followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestState {
    /// Nothing; the parent is an existing directory.
    Missing,
    /// Nothing, and the parent is not an existing directory either.
    NoParent,
    /// A directory.
    Dir,
    /// Something else (a file).
    File,
}

/// How the tree's top entry is renamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rename {
    /// Kept (the source's base name).
    Keep,
    /// Renamed to this name.
    To(OsString),
    /// Dropped: its children land in the directory directly.
    Contents,
}

/// Where and how to extract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The directory to extract into.
    pub dir: PathBuf,
    /// What becomes of the top entry's name.
    pub rename: Rename,
}

/// The path without trailing `/` and `/.`, and whether it had one (so it must be a
/// directory). `/` stays `/`.
pub fn split_dir_suffix(path: &str) -> (&str, bool) {
    let mut p = path;
    let mut dir = false;
    loop {
        if p.len() > 1 && p.ends_with('/') {
            p = &p[..p.len() - 1];
            dir = true;
        } else if p.ends_with("/.") {
            p = &p[..p.len() - 2];
            dir = true;
            if p.is_empty() {
                p = "/";
            }
        } else if p == "." {
            return (p, true);
        } else {
            return (p, dir || p == "/");
        }
    }
}

/// Whether a source path asks for its directory's contents: `SRC/.` (docker's rule).
pub fn wants_contents(path: &str) -> bool {
    path.ends_with("/.") || path == "." || path.trim_end_matches('/').is_empty()
}

/// Where a tree lands at `dest` (as the user wrote it) by docker's rules, or why not.
pub fn place(src: &Source, dest: &str, state: DestState) -> Result<Placement, String> {
    let (trimmed, must_be_dir) = split_dir_suffix(dest);
    let path = Path::new(trimmed);
    let in_parent = || {
        let name = path.file_name().map(OsString::from).ok_or_else(|| {
            format!("destination {dest:?} names no file (give a directory or a file name)")
        })?;
        let parent = match path.parent() {
            Some(p) if p.as_os_str().is_empty() => PathBuf::from("."),
            Some(p) => p.to_path_buf(),
            None => PathBuf::from("/"),
        };
        Ok::<_, String>(Placement {
            dir: parent,
            rename: Rename::To(name),
        })
    };
    match state {
        DestState::Dir => Ok(Placement {
            dir: path.to_path_buf(),
            rename: if src.is_dir && src.contents {
                Rename::Contents
            } else {
                Rename::Keep
            },
        }),
        DestState::File if must_be_dir => Err(format!(
            "destination {dest:?} is not a directory (it is a file)"
        )),
        DestState::File if src.is_dir => Err(format!(
            "cannot copy a directory to a file: destination {dest:?} is a file"
        )),
        DestState::File => in_parent(),
        DestState::Missing if must_be_dir && !src.is_dir => Err(format!(
            "destination directory {dest:?} does not exist (a destination ending in / must \
             be an existing directory)"
        )),
        DestState::Missing => in_parent(),
        DestState::NoParent => Err(format!(
            "no such directory: the parent of destination {dest:?} does not exist"
        )),
    }
}

/// The state of `path` on the filesystem this process sees (symlinks followed).
pub fn dest_state(path: &str) -> DestState {
    let (trimmed, _) = split_dir_suffix(path);
    match std::fs::metadata(trimmed) {
        Ok(m) if m.is_dir() => DestState::Dir,
        Ok(_) => DestState::File,
        Err(_) => {
            let parent = match Path::new(trimmed).parent() {
                Some(p) if p.as_os_str().is_empty() => Path::new("."),
                Some(p) => p,
                None => Path::new("/"),
            };
            match std::fs::metadata(parent) {
                Ok(m) if m.is_dir() => DestState::Missing,
                _ => DestState::NoParent,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: Source = Source {
        is_dir: false,
        contents: false,
    };
    const DIR: Source = Source {
        is_dir: true,
        contents: false,
    };
    const DIR_CONTENTS: Source = Source {
        is_dir: true,
        contents: true,
    };

    fn to(dir: &str, name: &str) -> Placement {
        Placement {
            dir: dir.into(),
            rename: Rename::To(name.into()),
        }
    }

    #[test]
    fn suffixes() {
        assert_eq!(split_dir_suffix("/a/b/"), ("/a/b", true));
        assert_eq!(split_dir_suffix("/a/b/."), ("/a/b", true));
        assert_eq!(split_dir_suffix("/a/b"), ("/a/b", false));
        assert_eq!(split_dir_suffix("/"), ("/", true));
        assert_eq!(split_dir_suffix("/."), ("/", true));
        assert_eq!(split_dir_suffix("a//"), ("a", true));
        assert!(wants_contents("d/.") && wants_contents("/") && !wants_contents("d/"));
    }

    #[test]
    fn a_file() {
        // Into an existing directory: under its own name.
        let p = place(&FILE, "/tmp", DestState::Dir).unwrap();
        assert_eq!((p.dir, p.rename), ("/tmp".into(), Rename::Keep));
        // To a new name, or over an existing file.
        assert_eq!(
            place(&FILE, "/tmp/x", DestState::Missing),
            Ok(to("/tmp", "x"))
        );
        assert_eq!(place(&FILE, "/tmp/x", DestState::File), Ok(to("/tmp", "x")));
        assert_eq!(place(&FILE, "x", DestState::File), Ok(to(".", "x")));
        // A trailing slash wants an existing directory.
        let e = place(&FILE, "/tmp/new/", DestState::Missing).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        let e = place(&FILE, "/etc/passwd/", DestState::File).unwrap_err();
        assert!(e.contains("is not a directory"), "{e}");
        let e = place(&FILE, "/no/such/x", DestState::NoParent).unwrap_err();
        assert!(e.contains("no such directory"), "{e}");
    }

    #[test]
    fn a_directory() {
        let p = place(&DIR, "/srv", DestState::Dir).unwrap();
        assert_eq!(p.rename, Rename::Keep);
        let p = place(&DIR_CONTENTS, "/srv", DestState::Dir).unwrap();
        assert_eq!((p.dir, p.rename), ("/srv".into(), Rename::Contents));
        // A missing destination becomes the directory, with or without a slash.
        assert_eq!(
            place(&DIR, "/srv/new", DestState::Missing),
            Ok(to("/srv", "new"))
        );
        assert_eq!(
            place(&DIR, "/srv/new/", DestState::Missing),
            Ok(to("/srv", "new"))
        );
        assert_eq!(
            place(&DIR_CONTENTS, "/srv/new", DestState::Missing),
            Ok(to("/srv", "new"))
        );
        let e = place(&DIR, "/etc/passwd", DestState::File).unwrap_err();
        assert!(e.contains("cannot copy a directory to a file"), "{e}");
    }
}
