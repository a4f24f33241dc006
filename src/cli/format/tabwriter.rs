//! Go's `text/tabwriter` as docker's tables use it (`NewWriter(out, 10, 1, 3, ' ', 0)`):
//! tab-terminated cells are aligned in columns, each column as wide as its widest cell
//! plus 3 (at least 10); a column is a block of consecutive lines that have that cell.

/// Aligns `text` (lines of `\t`-separated cells).
pub fn align(text: &str, minwidth: usize, padding: usize) -> String {
    let mut lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    // A trailing newline leaves an empty last line: not a line of the table.
    let trailing = text.ends_with('\n');
    if trailing {
        lines.pop();
    }
    let mut out = String::with_capacity(text.len() * 2);
    let mut widths = Vec::new();
    format(
        &lines,
        0,
        lines.len(),
        &mut widths,
        minwidth,
        padding,
        &mut out,
    );
    if !trailing && out.ends_with('\n') {
        out.pop();
    }
    out
}

fn cell_width(c: &str) -> usize {
    c.chars().count()
}

/// Go's `Writer.format`: widths of the columns of lines `line0..line1`.
fn format(
    lines: &[Vec<&str>],
    mut line0: usize,
    line1: usize,
    widths: &mut Vec<usize>,
    minwidth: usize,
    padding: usize,
    out: &mut String,
) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        // This line has a cell in this column: the lines before it are printed, and a
        // block begins.
        write_lines(lines, line0, this, widths, out);
        line0 = this;
        let mut width = minwidth;
        while this < line1 && column + 1 < lines[this].len() {
            width = width.max(cell_width(lines[this][column]) + padding);
            this += 1;
        }
        widths.push(width);
        format(lines, line0, this, widths, minwidth, padding, out);
        widths.pop();
        line0 = this;
    }
    write_lines(lines, line0, line1, widths, out);
}

fn write_lines(lines: &[Vec<&str>], from: usize, to: usize, widths: &[usize], out: &mut String) {
    for line in &lines[from..to] {
        for (j, c) in line.iter().enumerate() {
            out.push_str(c);
            if j + 1 < line.len() {
                if let Some(w) = widths.get(j) {
                    out.push_str(&" ".repeat(w.saturating_sub(cell_width(c))));
                }
            }
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::align;

    #[test]
    fn columns_as_go_aligns_them() {
        let t = "NAME\tSTATUS\tX\nweb\trunning\t1\nlonger-name-here\texited\t2\n";
        assert_eq!(
            align(t, 10, 3),
            "NAME               STATUS    X\n\
             web                running   1\n\
             longer-name-here   exited    2\n"
        );
    }

    #[test]
    fn a_line_without_the_column_ends_the_block() {
        let t = "a\tb\nplain\nlonger\tc\n";
        assert_eq!(align(t, 1, 1), "a b\nplain\nlonger c\n");
    }

    #[test]
    fn an_empty_last_cell_keeps_the_padding() {
        assert_eq!(align("ab\t\n", 5, 1), "ab   \n");
    }
}
