//! Image references, parsed and normalised the way docker does.
//!
//! ```text
//! reference      := name [ ":" tag ] [ "@" digest ]
//! name           := [ domain "/" ] path-component ( "/" path-component )*
//! domain         := host [ ":" port ]            host: DNS labels or "[" IPv6 "]"
//! path-component := alnum ( separator alnum )*
//! alnum          := [a-z0-9]+
//! separator      := [._] | "__" | "-"+
//! tag            := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest         := "sha256:" [a-f0-9]{64}
//! ```
//!
//! The first component of the name is the registry domain when it contains a `.` or a
//! `:`, is `localhost`, or contains upper-case letters (docker's rule), and more
//! components follow. Otherwise the domain is `docker.io`, and a single-component
//! repository there gets the `library/` prefix. `index.docker.io` is spelled `docker.io`.
//! A reference with neither tag nor digest gets the tag `latest`.
//!
//! | written                  | normalised                                   |
//! |--------------------------|----------------------------------------------|
//! | `busybox`                | `docker.io/library/busybox:latest`           |
//! | `org/app:1`              | `docker.io/org/app:1`                        |
//! | `localhost:5000/x`       | `localhost:5000/x:latest`                    |
//! | `busybox@sha256:<hex>`   | `docker.io/library/busybox@sha256:<hex>`     |
//! | `busybox:1@sha256:<hex>` | `docker.io/library/busybox:1@sha256:<hex>`   |

use std::fmt;
use std::str::FromStr;

use super::Error;

/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

/// The registry of names without a domain.
pub const DEFAULT_DOMAIN: &str = "docker.io";

/// The repository namespace of single-component names on [`DEFAULT_DOMAIN`].
const OFFICIAL_PREFIX: &str = "library/";

/// Longest accepted name (domain and path, docker's limit).
const NAME_MAX: usize = 255;

/// Longest accepted tag.
const TAG_MAX: usize = 128;

/// A parsed, normalised image reference.
///
/// Its [`Display`](fmt::Display) is the full normalised form
/// (`docker.io/library/busybox:latest`), which is also how the store keys names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `NAME[:TAG][@DIGEST]`; the tag defaults to `latest` when
    /// there is no digest.
    pub fn parse(s: &str) -> Result<Reference, Error> {
        let invalid = |reason: String| Error::InvalidReference {
            reference: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(invalid("the reference is empty".into()));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                check_digest(d).map_err(invalid)?;
                (rest, Some(d.to_string()))
            }
            None => (s, None),
        };
        // The tag is after the last ':' if no '/' follows it (otherwise the ':' is a
        // registry port: "localhost:5000/app").
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if name.is_empty() {
            let before = if digest.is_some() && tag.is_none() {
                "'@'"
            } else {
                "':'"
            };
            return Err(invalid(format!("the name before the {before} is empty")));
        }
        if let Some(tag) = tag {
            check_tag(tag).map_err(invalid)?;
        }
        if name.len() > NAME_MAX {
            return Err(invalid(format!(
                "the name is {} characters long, at most {NAME_MAX} are allowed",
                name.len()
            )));
        }
        let (domain, path) = split_domain(name);
        if let Some(d) = domain {
            check_host(d).map_err(invalid)?;
        }
        for c in path.split('/') {
            check_path_component(c).map_err(invalid)?;
        }
        if path.len() == 64 && super::is_sha256_hex(path) {
            return Err(invalid(
                "a repository name cannot be 64 hexadecimal characters (that is an image \
                 id: use it without a tag)"
                    .into(),
            ));
        }
        let domain = match domain {
            None | Some("index.docker.io") => DEFAULT_DOMAIN.to_string(),
            Some(d) => d.to_string(),
        };
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path.to_string()
        };
        let full = domain.len() + 1 + path.len();
        if full > NAME_MAX {
            return Err(invalid(format!(
                "the normalised name {domain}/{path} is {full} characters long, at most \
                 {NAME_MAX} are allowed"
            )));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The registry domain, with port if any (`docker.io`, `localhost:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry (`library/busybox`, `org/app`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The full repository name: `domain/path` (`docker.io/library/busybox`).
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag, if any (`latest` when the reference named neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:<64 hex>`), if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The same repository with tag `tag` and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, Error> {
        check_tag(tag).map_err(|reason| Error::InvalidReference {
            reference: format!("{}:{tag}", self.repository()),
            reason,
        })?;
        Ok(Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }

    /// The same repository pinned to `digest` (`sha256:<hex>`), without a tag.
    pub fn with_digest(&self, digest: &str) -> Result<Reference, Error> {
        check_digest(digest).map_err(|reason| Error::InvalidReference {
            reference: format!("{}@{digest}", self.repository()),
            reason,
        })?;
        Ok(Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        })
    }
}

/// Parses and normalises a reference (same as [`Reference::parse`]).
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
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Splits `name` into its domain (if the first component is one) and the path.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest)) if looks_like_host(first) => (Some(first), rest),
        _ => (None, name),
    }
}

fn looks_like_host(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.chars().any(|c| c.is_ascii_uppercase())
}

fn check_digest(d: &str) -> Result<(), String> {
    let Some((algo, hex)) = d.split_once(':') else {
        return Err(format!(
            "digest {d:?} has no algorithm: write it as sha256:<64 hex digits>"
        ));
    };
    if algo != "sha256" {
        return Err(format!(
            "digest algorithm {algo:?} is not supported: only sha256 digests are"
        ));
    }
    if hex.len() != 64 {
        return Err(format!(
            "the sha256 digest has {} hex digits, it must have exactly 64",
            hex.len()
        ));
    }
    if !super::is_sha256_hex(hex) {
        return Err(format!(
            "the sha256 digest {hex:?} must be lower-case hexadecimal (0-9, a-f)"
        ));
    }
    Ok(())
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
#[path = "reference_tests.rs"]
mod tests;
