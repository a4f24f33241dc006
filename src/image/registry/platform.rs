//! Platforms (`os/arch[/variant]`) and choosing one manifest from a manifest list or
//! OCI image index.

use std::fmt;

use serde::Deserialize;

use super::Error;

/// An image platform such as `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`, ...
    pub os: String,
    /// GOARCH name: `amd64`, `arm64`, ...
    pub arch: String,
    /// CPU variant (`v7` for arm, `v8` for arm64), if any.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on (linux, our architecture, the usual variant).
    pub fn host() -> Platform {
        let arch = crate::image::store::oci_arch().to_string();
        let variant = match arch.as_str() {
            "arm64" => Some("v8".to_string()),
            "arm" => Some("v7".to_string()),
            _ => None,
        };
        Platform {
            os: "linux".into(),
            arch,
            variant,
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform, Error> {
        let bad = |why: &str| Error::InvalidPlatform {
            platform: s.to_string(),
            reason: why.to_string(),
        };
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !(2..=3).contains(&parts.len()) {
            return Err(bad(
                "write it as os/arch or os/arch/variant, e.g. linux/arm64",
            ));
        }
        if let Some(p) = parts.iter().find(|p| !ok(p)) {
            return Err(bad(&format!(
                "{p:?} is not a valid part (lower-case letters, digits and '_')"
            )));
        }
        Ok(Platform {
            os: parts[0].into(),
            arch: parts[1].into(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// One entry of a manifest list / image index.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    /// Media type of the child manifest.
    #[serde(default)]
    pub media_type: Option<String>,
    /// Digest of the child manifest.
    pub digest: String,
    /// Size of the child manifest.
    #[serde(default)]
    pub size: u64,
    /// Its platform (absent for attestations and the like).
    #[serde(default)]
    pub platform: Option<EntryPlatform>,
}

/// The platform of an [`IndexEntry`].
#[derive(Debug, Clone, Deserialize)]
pub struct EntryPlatform {
    /// Operating system.
    pub os: String,
    /// Architecture.
    pub architecture: String,
    /// Variant, if any.
    #[serde(default)]
    pub variant: Option<String>,
}

/// Picks the entry for `want`: os and architecture must match; among those, an exact
/// variant match wins, then an entry without variant (or `want` without one), then
/// (for arm64, where v8 is the only common variant) any variant.
pub fn select<'a>(entries: &'a [IndexEntry], want: &Platform) -> Option<&'a IndexEntry> {
    let candidates: Vec<&IndexEntry> = entries
        .iter()
        .filter(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.os == want.os && p.architecture == want.arch)
        })
        .collect();
    let variant = |e: &IndexEntry| e.platform.as_ref().and_then(|p| p.variant.clone());
    candidates
        .iter()
        .find(|e| variant(e) == want.variant)
        .or_else(|| {
            candidates
                .iter()
                .find(|e| variant(e).is_none() || want.variant.is_none())
        })
        .or_else(|| candidates.iter().find(|_| want.arch == "arm64"))
        .copied()
}

/// The platforms an index offers, for error messages.
pub fn available(entries: &[IndexEntry]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| e.platform.as_ref())
        .map(|p| {
            let mut s = format!("{}/{}", p.os, p.architecture);
            if let Some(v) = &p.variant {
                s.push('/');
                s.push_str(v);
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest: &str, os: &str, arch: &str, variant: Option<&str>) -> IndexEntry {
        IndexEntry {
            media_type: None,
            digest: digest.into(),
            size: 1,
            platform: Some(EntryPlatform {
                os: os.into(),
                architecture: arch.into(),
                variant: variant.map(String::from),
            }),
        }
    }

    #[test]
    fn parse_and_display() {
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!((p.os.as_str(), p.arch.as_str()), ("linux", "arm"));
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert_eq!(Platform::parse("linux/amd64").unwrap().variant, None);
        for bad in ["linux", "linux/", "a/b/c/d", "Linux/amd64", "linux/amd 64"] {
            let e = Platform::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert_eq!(Platform::host().os, "linux");
    }

    #[test]
    fn selects_our_platform() {
        let entries = vec![
            IndexEntry {
                media_type: None,
                digest: "attest".into(),
                size: 1,
                platform: None,
            },
            entry("arm7", "linux", "arm", Some("v7")),
            entry("arm6", "linux", "arm", Some("v6")),
            entry("amd", "linux", "amd64", None),
            entry("win", "windows", "amd64", None),
            entry("arm64", "linux", "arm64", Some("v8")),
        ];
        let pick = |p: &str| select(&entries, &Platform::parse(p).unwrap()).map(|e| &*e.digest);
        assert_eq!(pick("linux/amd64"), Some("amd"));
        assert_eq!(pick("windows/amd64"), Some("win"));
        assert_eq!(pick("linux/arm/v6"), Some("arm6"));
        assert_eq!(pick("linux/arm/v7"), Some("arm7"));
        assert_eq!(pick("linux/arm"), Some("arm7"));
        assert_eq!(pick("linux/arm64"), Some("arm64"));
        assert_eq!(pick("linux/arm64/v8"), Some("arm64"));
        assert_eq!(pick("linux/arm/v5"), None);
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(available(&entries).len(), 5);
        // A host platform is always selectable from an index that has it.
        let host = Platform::host();
        let mine = vec![entry("me", &host.os, &host.arch, host.variant.as_deref())];
        assert_eq!(select(&mine, &host).map(|e| &*e.digest), Some("me"));
    }
}
