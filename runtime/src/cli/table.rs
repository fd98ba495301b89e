//! Plain-text tables for people: columns aligned with two spaces between
//! them, the last column not padded, and no trailing spaces.
//!
//! Cells come from the network (agent names, capabilities), so control
//! characters are written escaped (`\u{1b}`) and cannot drive the terminal;
//! an empty cell is written `-` so every column stays visible.

/// One cell as it is printed: control characters escaped, `-` if empty.
pub fn cell(text: &str) -> String {
    if text.is_empty() {
        return "-".to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Renders `rows` under an optional `header`, one line each, columns
/// aligned; every line ends with `\n`. Nothing at all for no header and no
/// rows.
///
/// ```
/// use mxp_runtime::cli::table::render;
/// let rows = vec![vec!["a".to_owned(), "x".to_owned()], vec!["bbb".to_owned(), String::new()]];
/// assert_eq!(render(Some(&["NAME", "VALUE"]), &rows), "NAME  VALUE\na     x\nbbb   -\n");
/// ```
pub fn render(header: Option<&[&str]>, rows: &[Vec<String>]) -> String {
    let lines: Vec<Vec<String>> = header
        .map(|h| h.iter().map(|s| (*s).to_owned()).collect())
        .into_iter()
        .chain(rows.iter().map(|r| r.iter().map(|c| cell(c)).collect()))
        .collect();
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for line in &lines {
        for (width, text) in widths.iter_mut().zip(line) {
            *width = (*width).max(text.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, (value, width)) in line.iter().zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(value);
            if i + 1 < line.len() {
                let pad = width.saturating_sub(value.chars().count());
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn columns_are_aligned_on_the_widest_cell() {
        let rows = vec![
            row(&["1", "short", "x,y"]),
            row(&["22", "a longer name", "z"]),
        ];
        let text = render(Some(&["ID", "NAME", "CAPS"]), &rows);
        assert_eq!(
            text,
            "ID  NAME           CAPS\n\
             1   short          x,y\n\
             22  a longer name  z\n"
        );
    }

    #[test]
    fn without_a_header_only_rows_and_nothing_for_nothing() {
        let rows = vec![row(&["a", "b"]), row(&["ccc", "d"])];
        assert_eq!(render(None, &rows), "a    b\nccc  d\n");
        assert_eq!(render(None, &[]), "");
        assert_eq!(render(Some(&["A", "B"]), &[]), "A  B\n");
    }

    #[test]
    fn empty_cells_are_dashes_and_control_characters_are_escaped() {
        assert_eq!(cell(""), "-");
        assert_eq!(cell("evil\u{1b}[2Jname\n"), "evil\\u{1b}[2Jname\\n");
        assert_eq!(cell("naïve"), "naïve");
        let rows = vec![row(&["naïve", ""]), row(&["n", "v"])];
        assert_eq!(render(None, &rows), "naïve  -\nn      v\n");
    }

    #[test]
    fn no_trailing_spaces_even_for_empty_last_header() {
        let rows = vec![row(&["a", "b"])];
        let text = render(Some(&["LONG HEADER", "X"]), &rows);
        assert!(text.lines().all(|l| !l.ends_with(' ')), "{text:?}");
    }
}
