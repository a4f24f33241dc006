//! Container ids (64 random hex digits) and docker-style random names.

use std::io::Read;

const ADJECTIVES: &[&str] = &[
    "admiring",
    "agile",
    "bold",
    "brave",
    "calm",
    "clever",
    "cool",
    "eager",
    "elated",
    "epic",
    "fervent",
    "focused",
    "gallant",
    "gifted",
    "happy",
    "hopeful",
    "jolly",
    "keen",
    "kind",
    "lucid",
    "magical",
    "modest",
    "nifty",
    "noble",
    "optimistic",
    "peaceful",
    "quirky",
    "relaxed",
    "serene",
    "sharp",
    "stoic",
    "sweet",
    "tender",
    "trusting",
    "upbeat",
    "vibrant",
    "wizardly",
    "youthful",
    "zealous",
    "zen",
];

const SURNAMES: &[&str] = &[
    "agnesi",
    "babbage",
    "bardeen",
    "bohr",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "euclid",
    "fermat",
    "feynman",
    "gauss",
    "goldberg",
    "hamilton",
    "hopper",
    "hypatia",
    "johnson",
    "kepler",
    "knuth",
    "lamarr",
    "lovelace",
    "maxwell",
    "meitner",
    "mirzakhani",
    "newton",
    "noether",
    "pascal",
    "poincare",
    "ritchie",
    "shannon",
    "thompson",
    "torvalds",
    "turing",
    "wozniak",
    "yalow",
];

/// `n` random bytes from the kernel.
pub fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// A new container id: 64 lowercase hex digits.
pub fn new_id() -> std::io::Result<String> {
    Ok(random_bytes(32)?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A random `adjective_surname` name; `taken` says whether a name is in use. After a few
/// collisions a digit is appended, as docker does.
pub fn random_name(taken: impl Fn(&str) -> bool) -> std::io::Result<String> {
    for attempt in 0..64 {
        let r = random_bytes(3)?;
        let mut name = format!(
            "{}_{}",
            ADJECTIVES[r[0] as usize % ADJECTIVES.len()],
            SURNAMES[r[1] as usize % SURNAMES.len()]
        );
        if attempt > 8 {
            name.push_str(&(r[2] % 10).to_string());
        }
        if !taken(&name) {
            return Ok(name);
        }
    }
    Ok(format!("skiff_{}", &new_id()?[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex() {
        let id = new_id().unwrap();
        assert_eq!(id.len(), 64);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(id, new_id().unwrap());
    }

    #[test]
    fn names_avoid_taken_ones_and_are_valid() {
        let n = random_name(|n| n.starts_with('a')).unwrap();
        assert!(!n.starts_with('a'));
        assert!(super::super::config::validate_name(&n).is_ok());
    }
}
