//! The context tar `skiff build` sends: the context directory's entries (symlinks as
//! links) minus what its `.dockerignore` excludes, as docker's CLI leaves them out, with
//! the matcher skiffd applies again ([`crate::dockerignore`]). `.dockerignore` and
//! `Dockerfile` at the top are always sent (skiffd reads them; COPY still leaves them
//! out when they are excluded). An excluded directory is not walked unless a `!`
//! pattern may re-include something below it.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::dockerignore::Ignore;

/// The files skiffd reads from the context itself, sent even when excluded.
const ALWAYS_SENT: &[&str] = &[".dockerignore", "Dockerfile"];

/// Writes a tar of the directory `dir` (its contents at the top) to `out`, leaving out
/// what `dir/.dockerignore` excludes.
pub(crate) fn write_context(dir: &Path, out: File) -> io::Result<()> {
    let ignore = match fs::read_to_string(dir.join(".dockerignore")) {
        Ok(text) => Ignore::parse(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ignore::default(),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("reading {}: {e}", dir.join(".dockerignore").display()),
            ))
        }
    };
    let mut b = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, out));
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    b.append_path_with_name(dir, ".")?;
    // Depth first; `rel` is the entry's path in the context.
    let mut todo: Vec<PathBuf> = children(dir, Path::new(""))?;
    while let Some(rel) = todo.pop() {
        let path = dir.join(&rel);
        let meta = fs::symlink_metadata(&path)?;
        let always = rel.parent() == Some(Path::new(""))
            && ALWAYS_SENT.iter().any(|n| rel.as_os_str() == *n);
        let excluded = !always && ignore.excluded(&rel);
        if meta.is_dir() {
            if excluded && !ignore.may_include_below(&rel) {
                continue;
            }
            // An excluded directory walked for its re-included entries is sent too
            // (skiffd ignores it): its entries keep their parent's metadata.
            b.append_path_with_name(&path, Path::new(".").join(&rel))?;
            todo.extend(children(dir, &rel)?);
        } else if !excluded {
            b.append_path_with_name(&path, Path::new(".").join(&rel))?;
        }
    }
    b.into_inner()?.flush()
}

/// The entries of the context directory `rel`, as context paths.
fn children(dir: &Path, rel: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir.join(rel))? {
        out.push(rel.join(e?.file_name()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry names of the tar in `path`, sorted.
    fn names(path: &Path) -> Vec<String> {
        let mut ar = tar::Archive::new(File::open(path).unwrap());
        let mut v: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn excluded_entries_are_not_sent() {
        let d = tempfile::tempdir().unwrap();
        let ctx = d.path().join("ctx");
        for (p, data) in [
            (
                ".dockerignore",
                "big\n*.log\n!keep.log\nbuild/\n!build/keep\nDockerfile\n",
            ),
            ("Dockerfile", "FROM x\n"),
            ("big/a/b", "data"),
            ("a.log", "l"),
            ("keep.log", "k"),
            ("build/x", "x"),
            ("build/keep/f", "f"),
            ("src/main.rs", "m"),
        ] {
            let path = ctx.join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, data).unwrap();
        }
        std::os::unix::fs::symlink("big", ctx.join("link")).unwrap();
        let tar = d.path().join("ctx.tar");
        write_context(&ctx, File::create(&tar).unwrap()).unwrap();
        assert_eq!(
            names(&tar),
            [
                ".",
                ".dockerignore",
                "Dockerfile",
                "build",
                "build/keep",
                "build/keep/f",
                "keep.log",
                "link",
                "src",
                "src/main.rs",
            ]
        );
    }
}
