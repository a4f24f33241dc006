//! Image references: `NAME[:TAG]`, following docker's reference grammar.
//!
//! ```text
//! reference      := name [ ":" tag ]
//! name           := [ host [ ":" port ] "/" ] path-component ( "/" path-component )*
//! path-component := alnum ( separator alnum )*
//! alnum          := [a-z0-9]+
//! separator      := [._] | "__" | "-"+
//! tag            := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! ```
//!
//! The first component is taken as a registry host when it contains a `.` or a `:`, is
//! `localhost`, or contains upper-case letters (docker's rule), and there is at least one
//! more component. Names are kept as written: no `docker.io/library/` normalisation yet.
//! Digest references (`NAME@sha256:...`) are recognised and refused as not supported yet.

use std::fmt;
use std::str::FromStr;

use super::Error;

/// The tag used when a reference names none.
pub const DEFAULT_TAG: &str = "latest";

/// Longest accepted name (docker's limit), host included.
const NAME_MAX: usize = 255;

/// Longest accepted tag.
const TAG_MAX: usize = 128;

/// A parsed `NAME:TAG` image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// The repository name, including the registry host if one was given
    /// (`alpine`, `example.com:5000/team/app`).
    pub name: String,
    /// The tag (`latest` when none was given).
    pub tag: String,
}

impl Reference {
    /// Parses `NAME[:TAG]`; the tag defaults to `latest`.
    pub fn parse(s: &str) -> Result<Reference, Error> {
        let invalid = |reason: String| Error::InvalidReference {
            reference: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(invalid("the reference is empty".into()));
        }
        if let Some(at) = s.find('@') {
            let digest = &s[at + 1..];
            let what = if digest.starts_with("sha256:") {
                "digest references (NAME@sha256:...) are"
            } else {
                "references with '@' (digests) are"
            };
            return Err(Error::Unsupported {
                feature: what.into(),
                hint: format!("refer to the image as NAME:TAG or by its id instead of {s:?}"),
            });
        }
        // The tag is after the last ':' if no '/' follows it (otherwise the ':' is a
        // registry port: "localhost:5000/app").
        let (name, tag) = match s.rfind(':') {
            Some(i) if !s[i + 1..].contains('/') => (&s[..i], &s[i + 1..]),
            _ => (s, DEFAULT_TAG),
        };
        if name.is_empty() {
            return Err(invalid("the name before the ':' is empty".into()));
        }
        check_tag(tag).map_err(invalid)?;
        check_name(name).map_err(invalid)?;
        Ok(Reference {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }
}

/// Parses `NAME[:TAG]` (same as [`Reference::parse`]).
pub fn parse(s: &str) -> Result<Reference, Error> {
    Reference::parse(s)
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Reference, Error> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("the tag after ':' is empty".into());
    }
    if tag.len() > TAG_MAX {
        return Err(format!(
            "the tag is {} characters long, at most {TAG_MAX} are allowed",
            tag.len()
        ));
    }
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    if let Some(first) = chars.next() {
        if !word(first) {
            return Err(format!(
                "invalid tag {tag:?}: a tag must start with a letter, digit or '_'"
            ));
        }
    }
    if let Some(bad) = chars.find(|&c| !(word(c) || c == '.' || c == '-')) {
        return Err(format!(
            "invalid tag {tag:?}: {bad:?} is not allowed, a tag may contain only letters, \
             digits, '_', '.' and '-'"
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    if name.len() > NAME_MAX {
        return Err(format!(
            "the name is {} characters long, at most {NAME_MAX} are allowed",
            name.len()
        ));
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 && looks_like_host(components[0]) {
        check_host(components[0])?;
        components.remove(0);
    }
    for c in components {
        check_path_component(c)?;
    }
    Ok(())
}

fn looks_like_host(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.chars().any(|c| c.is_ascii_uppercase())
}

/// `host[:port]` where host is a domain name or a bracketed IPv6 address.
fn check_host(hostport: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| format!("registry host {hostport:?} has an unclosed '['"))?;
        let addr = &rest[..end];
        if addr.is_empty()
            || !addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(format!(
                "registry host {hostport:?} is not a valid IPv6 address"
            ));
        }
        let after = &rest[end + 1..];
        match after.strip_prefix(':') {
            Some(p) => (None, Some(p)),
            None if after.is_empty() => (None, None),
            None => return Err(format!("unexpected text after ']' in {hostport:?}")),
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(hostport), None),
        }
    };
    if let Some(host) = host {
        for label in host.split('.') {
            let ok = !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(format!(
                    "registry host {host:?} is not a valid host name (labels are letters, \
                     digits and inner '-', separated by single dots)"
                ));
            }
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "registry port {port:?} in {hostport:?} is not a number"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn check_path_component(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err(
            "the name has an empty path component (a leading, trailing or doubled '/')".into(),
        );
    }
    if let Some(upper) = c.chars().find(|ch| ch.is_ascii_uppercase()) {
        return Err(format!(
            "repository names must be lowercase, but {c:?} contains {upper:?}"
        ));
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    if let Some(&bad) = bytes
        .iter()
        .find(|&&b| !(alnum(b) || matches!(b, b'.' | b'_' | b'-')))
    {
        return Err(format!(
            "invalid character {:?} in name component {c:?}: only lowercase letters, \
             digits and the separators '.', '_', '__' and '-' are allowed",
            describe_byte(c, bad)
        ));
    }
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(format!(
            "name component {c:?} must start and end with a lowercase letter or digit"
        ));
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return Err(format!(
                "name component {c:?} has the separator {sep:?}; separators are a single \
                 '.', one or two '_', or dashes"
            ));
        }
    }
    Ok(())
}

/// The character containing the first occurrence of byte `b` (for messages about
/// non-ASCII input).
fn describe_byte(s: &str, b: u8) -> char {
    if b.is_ascii() {
        char::from(b)
    } else {
        s.chars().find(|c| !c.is_ascii()).unwrap_or('\u{fffd}')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (String, String) {
        let r = Reference::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"));
        (r.name, r.tag)
    }

    fn reason(s: &str) -> String {
        match Reference::parse(s) {
            Err(Error::InvalidReference { reference, reason }) => {
                assert_eq!(reference, s);
                reason
            }
            other => panic!("{s:?} should be invalid, got {other:?}"),
        }
    }

    #[test]
    fn good_references() {
        assert_eq!(ok("alpine"), ("alpine".into(), "latest".into()));
        assert_eq!(ok("alpine:3.20"), ("alpine".into(), "3.20".into()));
        assert_eq!(
            ok("library/alpine:edge"),
            ("library/alpine".into(), "edge".into())
        );
        assert_eq!(
            ok("localhost:5000/team/app"),
            ("localhost:5000/team/app".into(), "latest".into())
        );
        assert_eq!(
            ok("registry.example.com:5000/a.b/c__d/e-f--g:V1_x.y-z"),
            (
                "registry.example.com:5000/a.b/c__d/e-f--g".into(),
                "V1_x.y-z".into()
            )
        );
        assert_eq!(
            ok("[::1]:5000/app:1"),
            ("[::1]:5000/app".into(), "1".into())
        );
        assert_eq!(
            ok("Example.COM/app"),
            ("Example.COM/app".into(), "latest".into())
        );
        assert_eq!(ok("a0:_tag"), ("a0".into(), "_tag".into()));
        let t = "x".repeat(128);
        assert_eq!(ok(&format!("app:{t}")).1, t);
    }

    #[test]
    fn display_and_from_str() {
        let r: Reference = "alpine".parse().unwrap();
        assert_eq!(r.to_string(), "alpine:latest");
        assert_eq!(parse("a/b:c").unwrap().to_string(), "a/b:c");
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        assert!(reason("").contains("empty"));
        assert!(reason("Alpine").contains("lowercase"));
        assert!(reason("library/Alpine").contains("lowercase"));
        assert!(reason("a//b").contains("empty path component"));
        assert!(reason("a/").contains("empty path component"));
        assert!(reason("/a").contains("empty path component"));
        assert!(reason("alpine:").contains("tag after ':' is empty"));
        assert!(reason(":tag").contains("name before"));
        assert!(reason("alpine:-x").contains("must start with"));
        assert!(reason("alpine:a+b").contains("'+'"));
        assert!(reason(&format!("app:{}", "x".repeat(129))).contains("at most 128"));
        assert!(reason("a..b").contains("separator"));
        assert!(reason("a___b").contains("separator"));
        assert!(reason("a._b").contains("separator"));
        assert!(reason("-a").contains("must start and end"));
        assert!(reason("a.").contains("must start and end"));
        assert!(reason("a b").contains("invalid character ' '"));
        assert!(reason("caf\u{e9}").contains('\u{e9}'));
        assert!(reason("exa_mple.com/app").contains("host"));
        assert!(reason("example.com:port/app").contains("not a number"));
        assert!(reason(&"a".repeat(256)).contains("at most 255"));
    }

    #[test]
    fn digests_are_not_supported_yet() {
        let d = format!("alpine@sha256:{}", "a".repeat(64));
        let e = Reference::parse(&d).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("not supported yet"), "{msg}");
        assert!(msg.contains("@sha256"), "{msg}");
    }
}
