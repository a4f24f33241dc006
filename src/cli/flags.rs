//! Value parsers for numeric flags: a negative number gets a message that says what
//! the flag takes, instead of clap's "unexpected argument '-5'" (the flags that use
//! these allow hyphen values so that the number reaches the parser).

/// Seconds (`-t`, `--time`, `--stop-timeout`): 0 or more.
pub fn seconds(s: &str) -> Result<u64, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n < 0 => Err(format!(
            "{n} is negative: give the seconds to wait, 0 or more (0 kills at once)"
        )),
        Ok(n) => Ok(n.unsigned_abs()),
        Err(_) => Err(format!("{s:?} is not a number of seconds")),
    }
}

/// `--tail`: a number of lines, 0 or more, or `all`.
pub fn tail(s: &str) -> Result<String, String> {
    if s == "all" {
        return Ok(s.to_string());
    }
    match s.trim().parse::<i64>() {
        Ok(n) if n < 0 => Err(format!(
            "{n} is negative: give the number of lines from the end, 0 or more, or \"all\""
        )),
        Ok(n) => Ok(n.to_string()),
        Err(_) => Err(format!(
            "{s:?} is not a number: give the number of lines from the end, or \"all\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_numbers_are_refused_with_a_hint() {
        assert_eq!(seconds("3"), Ok(3));
        assert!(seconds("-1").unwrap_err().contains("0 or more"));
        assert!(seconds("x").is_err());
        assert_eq!(tail("all").unwrap(), "all");
        assert_eq!(tail("5").unwrap(), "5");
        assert!(tail("-5").unwrap_err().contains("0 or more, or \"all\""));
    }
}
