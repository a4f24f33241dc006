//! `.dockerignore`: which paths of a build context are left out. One matcher for both
//! sides: the CLI leaves excluded files out of the context tar it sends (as docker's
//! CLI does), and skiffd applies the same patterns again to what it receives (a client
//! may send anything).
//!
//! Patterns are relative to the context, one a line (`#` comments, blank lines
//! skipped); `*` and `?` match within one path segment, `**` any number of segments; a
//! matched directory excludes everything below it; the last matching pattern wins, and
//! a `!` pattern re-includes what it matches.

use std::path::Path;

/// Matches one path segment against a pattern segment with `*` and `?`.
pub(crate) fn seg_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => seg_match(&p[1..], s) || (!s.is_empty() && seg_match(p, &s[1..])),
        (Some(b'?'), Some(_)) => seg_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => seg_match(&p[1..], &s[1..]),
        _ => false,
    }
}

/// Matches path segments against pattern segments (`**` = any number of segments).
fn path_match(p: &[&str], s: &[&str]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(&"**") => path_match(&p[1..], s) || (!s.is_empty() && path_match(p, &s[1..])),
        Some(seg) => {
            !s.is_empty()
                && seg_match(seg.as_bytes(), s[0].as_bytes())
                && path_match(&p[1..], &s[1..])
        }
    }
}

/// Whether pattern segments `p` can match a path that starts with the segments `s`
/// and goes on below them (at least one more segment).
fn prefix_match(p: &[&str], s: &[&str]) -> bool {
    match (p.first(), s.first()) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(&"**"), Some(_)) => prefix_match(&p[1..], s) || prefix_match(p, &s[1..]),
        (Some(seg), Some(first)) => {
            seg_match(seg.as_bytes(), first.as_bytes()) && prefix_match(&p[1..], &s[1..])
        }
    }
}

/// `.dockerignore`: patterns in order, the last match wins, `!` re-includes; a matched
/// directory excludes everything below it.
#[derive(Debug, Default, Clone)]
pub struct Ignore {
    patterns: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Ignore {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let (neg, pat) = match t.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, t),
            };
            let segs: Vec<String> = pat
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(str::to_string)
                .collect();
            if !segs.is_empty() {
                patterns.push((neg, segs));
            }
        }
        Ignore { patterns }
    }

    /// Whether the context path `rel` is excluded.
    pub fn excluded(&self, rel: &Path) -> bool {
        let segs: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let mut out = false;
        for (neg, p) in &self.patterns {
            let p: Vec<&str> = p.iter().map(String::as_str).collect();
            // The path itself or one of its parents.
            if (1..=segs.len()).any(|n| path_match(&p, &segs[..n])) {
                out = !neg;
            }
        }
        out
    }

    /// Whether some `!` pattern could re-include a path below the directory `rel`
    /// (so an excluded directory must still be walked: its entries are checked one by
    /// one). False means everything below an excluded `rel` stays excluded.
    pub fn may_include_below(&self, rel: &Path) -> bool {
        let segs: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        self.patterns.iter().filter(|(neg, _)| *neg).any(|(_, p)| {
            let p: Vec<&str> = p.iter().map(String::as_str).collect();
            prefix_match(&p, &segs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let i = Ignore::parse("# c\n*.log\nbuild/\n!build/keep\n**/secret\n");
        assert!(i.excluded(Path::new("a.log")));
        assert!(!i.excluded(Path::new("d/a.log")));
        assert!(i.excluded(Path::new("build/x")));
        assert!(!i.excluded(Path::new("build/keep")));
        assert!(i.excluded(Path::new("deep/er/secret")));
        assert!(!i.excluded(Path::new("src/main.rs")));
    }

    #[test]
    fn re_includes_below_a_directory() {
        let i = Ignore::parse("big\nbuild/\n!build/keep\n!**/important.txt\n");
        // `build/keep` may be below `build`; `**/important.txt` below anything.
        assert!(i.may_include_below(Path::new("build")));
        assert!(i.may_include_below(Path::new("big")));
        let j = Ignore::parse("big\nbuild/\n!build/keep\n");
        assert!(j.may_include_below(Path::new("build")));
        assert!(!j.may_include_below(Path::new("big")));
        assert!(!j.may_include_below(Path::new("build/keep")));
        assert!(!j.may_include_below(Path::new("other/build")));
        let k = Ignore::parse("*\n!src/*.rs\n");
        assert!(k.may_include_below(Path::new("src")));
        assert!(!k.may_include_below(Path::new("src/sub")));
        assert!(!k.may_include_below(Path::new("docs")));
        assert!(!Ignore::parse("big\n").may_include_below(Path::new("big")));
    }
}
