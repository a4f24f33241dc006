//! `--format` for every command that lists or inspects: Go templates (docker's
//! `text/template` dialect), `json`, and `table [TEMPLATE]`, in one place.
//!
//! # Use (for a new command)
//!
//! A list command builds one JSON object per row with docker's field names (`ID`,
//! `Names`, `Size`, ...: strings, as docker's formatters give them), and calls
//!
//! ```ignore
//! const TABLE: format::Table = format::Table {
//!     default: "table {{.Name}}\t{{.CPUPerc}}",
//!     headers: &[("Name", "NAME"), ("CPUPerc", "CPU %")],
//! };
//! format::print(args.format.as_deref().unwrap_or(""), &rows, &TABLE)?;
//! ```
//!
//! which prints the default table for `""` or `table`, one JSON object per line for
//! `json`, a table of `TEMPLATE` (with the header line made of the fields' headers)
//! for `table TEMPLATE`, and `TEMPLATE` once per row otherwise (docker's `\t` and `\n`
//! in the format are a tab and a newline). An inspect-like command calls
//! [`print_inspect`] (an indented JSON array, or the template once per object).
//! Template errors come back as a [`Failure`] with exit code 125.
//!
//! # Why our own evaluator
//!
//! The `gtmpl` crate was evaluated: it is passively maintained (last release 0.7.1),
//! prints lists and maps in Rust's `Debug` form (`{{.Config.Env}}` gives
//! `[String("A=1")]`, Go gives `[A=1]`) with maps in hash order, unwraps in its parser,
//! and brings `lazy_static` and a second `thiserror`. What docker users write is a small
//! language: this evaluator (lexer and parser, executor, functions, `printf`, tabwriter)
//! works on `serde_json::Value` directly, prints as Go's `%v` does, words its errors as
//! Go's, and never panics on a template.

mod exec;
mod funcs;
mod lex;
mod parse;
mod printf;
pub mod tabwriter;

use serde_json::Value;

use super::output;
use super::Failure;

pub use parse::Template;

/// A template that could not be parsed or executed.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template's syntax (docker: "template parsing error: ...").
    #[error("template parsing error: {0}")]
    Parse(String),
    /// Executing it on the data failed (a field of the wrong type, a bad argument).
    #[error("{0}")]
    Exec(String),
}

impl From<TemplateError> for Failure {
    fn from(e: TemplateError) -> Failure {
        Failure {
            message: e.to_string(),
            code: 125,
        }
    }
}

impl Template {
    /// Parses Go template source.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        parse::parse(src)
    }

    /// Runs the template on `data`.
    pub fn execute(&self, data: &Value) -> Result<String, TemplateError> {
        exec::execute(self, data)
    }
}

/// The table of a list command: its default format and each field's column header.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    /// The format without `--format` (`table {{.ID}}\t...`).
    pub default: &'a str,
    /// (field, header) pairs: `("ID", "CONTAINER ID")`.
    pub headers: &'a [(&'a str, &'a str)],
}

/// What a `--format` value asks for.
enum Kind<'a> {
    Json,
    Table(&'a str),
    Plain(&'a str),
}

fn kind<'a>(format: &'a str, table: &Table<'a>) -> Kind<'a> {
    let trimmed = format.trim();
    if trimmed.is_empty() || trimmed == "table" {
        return Kind::Table(table.default.strip_prefix("table").unwrap_or(table.default));
    }
    if trimmed == "json" {
        return Kind::Json;
    }
    match trimmed.strip_prefix("table") {
        Some(rest) if rest.starts_with(char::is_whitespace) => Kind::Table(rest),
        _ => Kind::Plain(format),
    }
}

/// docker's format clean-up: spaces trimmed, `\t` and `\n` (backslash sequences typed
/// in the shell) made a tab and a newline.
fn unescape(src: &str) -> String {
    src.trim_matches(' ')
        .replace("\\t", "\t")
        .replace("\\n", "\n")
}

/// Checks a `--format` before anything is done (a bad template fails first).
pub fn check(format: &str, table: &Table<'_>) -> Result<(), Failure> {
    match kind(format, table) {
        Kind::Json => Ok(()),
        Kind::Table(t) | Kind::Plain(t) => Template::parse(&unescape(t))
            .map(drop)
            .map_err(Failure::from),
    }
}

/// Renders `rows` by `format` (see the module's documentation).
pub fn render(format: &str, rows: &[Value], table: &Table<'_>) -> Result<String, TemplateError> {
    let mut out = String::new();
    match kind(format, table) {
        Kind::Json => {
            for r in rows {
                out.push_str(&r.to_string());
                out.push('\n');
            }
        }
        Kind::Plain(src) => {
            let t = Template::parse(&unescape(src))?;
            for r in rows {
                out.push_str(&t.execute(r)?);
                out.push('\n');
            }
        }
        Kind::Table(src) => {
            let t = Template::parse(&unescape(src))?;
            let mut body = String::new();
            let header = |path: &[String]| header_of(table, path);
            // A header the template cannot make (it indexes into a field, say) is left out.
            if let Ok(h) = exec::execute_header(&t, &header) {
                body.push_str(&h);
                body.push('\n');
            }
            for r in rows {
                body.push_str(&t.execute(r)?);
                body.push('\n');
            }
            out = tabwriter::align(&body, 10, 3);
        }
    }
    Ok(out)
}

/// The header of a field: the table's, else the field path upper-cased (`.State.Status`
/// is `STATE STATUS`).
fn header_of(table: &Table<'_>, path: &[String]) -> String {
    if let [one] = path {
        if let Some((_, h)) = table.headers.iter().find(|(f, _)| f == one) {
            return (*h).to_string();
        }
    }
    path.iter()
        .map(|p| p.to_uppercase())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints `rows` by `format`; template errors are exit code 125.
pub fn print(format: &str, rows: &[Value], table: &Table<'_>) -> Result<(), Failure> {
    let text = render(format, rows, table)?;
    output::text(&text);
    Ok(())
}

/// Renders inspect output: an indented JSON array without a format (or with `json`),
/// else the template once per object (no `\t` translation, as docker's inspect).
pub fn render_inspect(format: Option<&str>, objects: &[Value]) -> Result<String, TemplateError> {
    match format {
        None | Some("") => Ok(serde_json::to_string_pretty(objects).unwrap_or_default() + "\n"),
        Some(f) if f.trim() == "json" => {
            Ok(serde_json::to_string_pretty(objects).unwrap_or_default() + "\n")
        }
        Some(src) => {
            let t = Template::parse(src)?;
            let mut out = String::new();
            for o in objects {
                out.push_str(&t.execute(o)?);
                out.push('\n');
            }
            Ok(out)
        }
    }
}

/// Checks an inspect `--format` before anything is done.
pub fn check_inspect(format: Option<&str>) -> Result<(), Failure> {
    match format {
        Some(f) if !f.trim().is_empty() && f.trim() != "json" => {
            Template::parse(f).map(drop).map_err(Failure::from)
        }
        _ => Ok(()),
    }
}

/// Prints inspect output (see [`render_inspect`]).
pub fn print_inspect(format: Option<&str>, objects: &[Value]) -> Result<(), Failure> {
    let text = render_inspect(format, objects)?;
    output::text(&text);
    Ok(())
}

#[cfg(test)]
mod tests;
