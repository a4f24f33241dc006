//! Here-documents of RUN lines (`RUN <<EOF`, `RUN cat <<-'END' > f`): finding the
//! terminators a line opens. The parser reads their text (see `super::parser`).

/// The here-documents a RUN line opens, in order: (terminator, `<<-`: leading tabs
/// stripped). A terminator is a name (`[A-Za-z_][A-Za-z0-9_]*`), maybe quoted.
pub(super) fn openers(line: &str) -> Vec<(String, bool)> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut k = 0;
    while k + 1 < b.len() {
        if b[k] != b'<' || b[k + 1] != b'<' || (k + 2 < b.len() && b[k + 2] == b'<') {
            k += 1;
            continue;
        }
        let mut j = k + 2;
        let strip = b.get(j) == Some(&b'-');
        if strip {
            j += 1;
        }
        let quote = match b.get(j) {
            Some(&q @ (b'"' | b'\'')) => {
                j += 1;
                Some(q)
            }
            _ => None,
        };
        let w0 = j;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
            j += 1;
        }
        let ok_start = b
            .get(w0)
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_');
        let ok_end = match quote {
            Some(q) => b.get(j) == Some(&q),
            None => true,
        };
        if ok_start && ok_end {
            out.push((line[w0..j].to_string(), strip));
        }
        k = j.max(k + 2);
    }
    out
}
