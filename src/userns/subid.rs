//! Parsing of `/etc/subuid` and `/etc/subgid`.
//!
//! Each non-blank, non-comment line is `OWNER:START:COUNT`, where `OWNER` is
//! a user name or a numeric uid, and the range `START..START+COUNT` is handed
//! to that user. A user may have several lines. This is the format read by
//! shadow-utils' `newuidmap` / `newgidmap`, which is what enforces it; this
//! parser rejects lines those tools would not honour, so that mistakes are
//! reported with a file name and line number instead of a late mapping error.

use std::path::Path;

use super::Error;

/// The owner field of a subordinate id line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A user name, e.g. `bob`.
    Name(String),
    /// A numeric uid, e.g. `1000`.
    Id(u32),
}

impl Owner {
    /// Whether this owner designates the user `user` with uid `uid`.
    ///
    /// Like shadow-utils, a numeric owner also matches a user whose *name* is
    /// that number.
    pub fn matches(&self, user: &str, uid: u32) -> bool {
        match self {
            Owner::Name(name) => name == user,
            Owner::Id(id) => *id == uid || user == id.to_string(),
        }
    }
}

/// One parsed line of a subordinate id file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubIdEntry {
    /// Who the range belongs to.
    pub owner: Owner,
    /// First host id of the range.
    pub start: u32,
    /// Number of ids in the range (never 0; `start + count` fits in a `u32`).
    pub count: u32,
}

/// A range of subordinate host ids: `start..start + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubIdRange {
    /// First host id of the range.
    pub start: u32,
    /// Number of ids in the range.
    pub count: u32,
}

/// Parses the content of a subordinate id file.
///
/// `source` is only used in error messages. Blank lines and lines whose first
/// non-blank character is `#` are skipped; leading and trailing whitespace of
/// a line is ignored. Any other line must have exactly three `:`-separated
/// fields: a non-empty owner without whitespace, a decimal start and a
/// decimal, non-zero count with `start + count <= u32::MAX`.
pub fn parse(content: &str, source: &Path) -> Result<Vec<SubIdEntry>, Error> {
    let mut entries = Vec::new();
    for (index, raw) in content.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = parse_line(line).map_err(|message| Error::Parse {
            path: source.to_path_buf(),
            line: index + 1,
            message,
        })?;
        entries.push(entry);
    }
    Ok(entries)
}

/// Parses one significant line, returning a description of the problem.
fn parse_line(line: &str) -> Result<SubIdEntry, String> {
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() != 3 {
        return Err(format!(
            "expected 3 fields separated by ':', found {} in {line:?}",
            fields.len()
        ));
    }
    let (owner, start, count) = (fields[0], fields[1], fields[2]);
    if owner.is_empty() {
        return Err("the owner (user name or uid) is empty".to_string());
    }
    if owner.chars().any(char::is_whitespace) {
        return Err(format!("the owner {owner:?} contains whitespace"));
    }
    let start = parse_number(start, "start")?;
    let count = parse_number(count, "count")?;
    if count == 0 {
        return Err("count is 0; a range must hold at least one id".to_string());
    }
    if start.checked_add(count).is_none() {
        return Err(format!(
            "start {start} + count {count} goes past the largest id {}",
            u32::MAX
        ));
    }
    let owner = match owner.parse::<u32>() {
        Ok(id) if owner.bytes().all(|b| b.is_ascii_digit()) => Owner::Id(id),
        _ => Owner::Name(owner.to_string()),
    };
    Ok(SubIdEntry {
        owner,
        start,
        count,
    })
}

/// Parses a decimal `u32` field named `what`.
fn parse_number(field: &str, what: &str) -> Result<u32, String> {
    // `str::parse` accepts a leading '+', which shadow-utils does not.
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {field:?} is not a decimal number"));
    }
    field
        .parse::<u32>()
        .map_err(|_| format!("{what} {field} is larger than {}", u32::MAX))
}

/// The ranges that belong to the user `user` with uid `uid`, in file order.
///
/// A line matches when its owner is the user's name or its numeric uid.
pub fn ranges_for(entries: &[SubIdEntry], user: &str, uid: u32) -> Vec<SubIdRange> {
    entries
        .iter()
        .filter(|entry| entry.owner.matches(user, uid))
        .map(|entry| SubIdRange {
            start: entry.start,
            count: entry.count,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("/etc/subuid")
    }

    fn parse_err(content: &str) -> (usize, String, String) {
        match parse(content, path()) {
            Err(err @ Error::Parse { .. }) => {
                let text = err.to_string();
                match err {
                    Error::Parse { line, message, .. } => (line, message, text),
                    _ => unreachable!(),
                }
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn parses_names_and_numeric_owners() {
        let entries = parse("bob:100000:65536\n1001:165536:65536\n", path()).unwrap();
        assert_eq!(
            entries,
            vec![
                SubIdEntry {
                    owner: Owner::Name("bob".into()),
                    start: 100000,
                    count: 65536
                },
                SubIdEntry {
                    owner: Owner::Id(1001),
                    start: 165536,
                    count: 65536
                },
            ]
        );
    }

    #[test]
    fn skips_comments_and_blank_lines() {
        let content = "# managed by useradd\n\n   \n  # indented comment\nbob:1:2\n\n";
        let entries = parse(content, path()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].start, 1);
        assert_eq!(entries[0].count, 2);
        assert!(parse("", path()).unwrap().is_empty());
    }

    #[test]
    fn accepts_surrounding_whitespace_and_crlf() {
        let entries = parse("  bob:10:20  \r\n", path()).unwrap();
        assert_eq!(entries[0].owner, Owner::Name("bob".into()));
        assert_eq!((entries[0].start, entries[0].count), (10, 20));
    }

    #[test]
    fn owner_with_digits_and_letters_is_a_name() {
        let entries = parse("user1:10:20\n+5:1:1\n", path()).unwrap();
        assert_eq!(entries[0].owner, Owner::Name("user1".into()));
        assert_eq!(entries[1].owner, Owner::Name("+5".into()));
    }

    #[test]
    fn wrong_field_count_names_file_and_line() {
        let (line, message, text) = parse_err("# header\nbob:1:2\nalice:100000\n");
        assert_eq!(line, 3);
        assert!(message.contains("expected 3 fields"), "{message}");
        assert!(message.contains("found 2"), "{message}");
        assert!(text.starts_with("/etc/subuid:3: "), "{text}");
        assert!(text.contains("NAME_OR_UID:START:COUNT"), "{text}");

        let (line, message, _) = parse_err("bob:1:2:3\n");
        assert_eq!(line, 1);
        assert!(message.contains("found 4"), "{message}");
    }

    #[test]
    fn non_numeric_start_and_count() {
        let (line, message, _) = parse_err("\n\nbob:abc:10\n");
        assert_eq!(line, 3);
        assert!(message.contains("start \"abc\""), "{message}");

        let (line, message, _) = parse_err("bob:1:-5\n");
        assert_eq!(line, 1);
        assert!(message.contains("count \"-5\""), "{message}");

        let (_, message, _) = parse_err("bob:+1:5\n");
        assert!(message.contains("start \"+1\""), "{message}");

        let (_, message, _) = parse_err("bob::5\n");
        assert!(message.contains("start \"\""), "{message}");

        let (_, message, _) = parse_err("bob:99999999999:5\n");
        assert!(message.contains("larger than 4294967295"), "{message}");
    }

    #[test]
    fn zero_count_is_rejected() {
        let (line, message, _) = parse_err("bob:1:1\nalice:200000:0\n");
        assert_eq!(line, 2);
        assert!(message.contains("count is 0"), "{message}");
    }

    #[test]
    fn overflowing_range_is_rejected() {
        let (line, message, _) = parse_err("bob:4294967295:1\n");
        assert_eq!(line, 1);
        assert!(message.contains("goes past the largest id"), "{message}");
        // The largest acceptable range ends just below u32::MAX.
        let ok = parse("bob:4294967294:1\n", path()).unwrap();
        assert_eq!(ok[0].start, u32::MAX - 1);
    }

    #[test]
    fn empty_or_spaced_owner_is_rejected() {
        let (_, message, _) = parse_err(":1:2\n");
        assert!(message.contains("owner"), "{message}");
        let (_, message, _) = parse_err("bo b:1:2\n");
        assert!(message.contains("whitespace"), "{message}");
    }

    #[test]
    fn ranges_for_matches_name_or_uid_in_file_order() {
        let content = "bob:100000:65536\nalice:165536:65536\n1000:231072:1000\nbob:300000:10\n";
        let entries = parse(content, path()).unwrap();
        assert_eq!(
            ranges_for(&entries, "bob", 1000),
            vec![
                SubIdRange {
                    start: 100000,
                    count: 65536
                },
                SubIdRange {
                    start: 231072,
                    count: 1000
                },
                SubIdRange {
                    start: 300000,
                    count: 10
                },
            ]
        );
        assert_eq!(
            ranges_for(&entries, "alice", 1001),
            vec![SubIdRange {
                start: 165536,
                count: 65536
            }]
        );
        assert!(ranges_for(&entries, "carol", 1002).is_empty());
        // A numeric owner also matches a user literally named by that number.
        assert_eq!(ranges_for(&entries, "1000", 5).len(), 1);
    }
}
