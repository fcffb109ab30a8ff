//! Plain-text tables for a terminal: columns padded to their widest cell, two spaces apart,
//! the last column left ragged so long text (a reason, a body) does not pad every line.

/// Renders `header` and `rows` as aligned lines (each ending with a newline).
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(columns) {
            if i + 1 == columns {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_the_last_one_is_ragged() {
        let rows = vec![
            vec![
                "security".to_owned(),
                "12".to_owned(),
                "a long reason".to_owned(),
            ],
            vec!["a".to_owned(), "1234".to_owned(), "x".to_owned()],
        ];
        assert_eq!(
            render(&["OUTPUT", "READY", "NOTE"], &rows),
            "OUTPUT    READY  NOTE\nsecurity  12     a long reason\na         1234   x\n"
        );
    }
}
