//! Source carets: `path:line:col`, a gutter, the offending line and a `^` under the column.
//! Every script error (compile or runtime) is shown this way so it points at the script.

use std::fmt::Write as _;

/// A place in a script, 1-based like editors count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The text of the line, when the source is known.
    pub source_line: Option<String>,
}

impl Location {
    /// Builds a location and looks the line up in `source`.
    pub fn new(file: &str, line: usize, column: usize, source: Option<&str>) -> Self {
        let source_line = source
            .and_then(|text| text.lines().nth(line.saturating_sub(1)))
            .map(str::to_owned);
        Self { file: file.to_owned(), line, column, source_line }
    }

    /// `  --> file:line:col` followed by the gutter, the line and the caret.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let number = self.line.to_string();
        let pad = " ".repeat(number.len());
        let _ = writeln!(out, "{pad}--> {}:{}:{}", self.file, self.line, self.column);
        if let Some(text) = &self.source_line {
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{number} | {}", text.replace('\t', " "));
            let caret_at = self.column.saturating_sub(1).min(text.chars().count());
            let _ = writeln!(out, "{pad} | {}^", " ".repeat(caret_at));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_sits_under_the_column() {
        let loc = Location::new("a.rhai", 2, 5, Some("let a = 1;\nlet b = ;\n"));
        assert_eq!(
            loc.render(),
            " --> a.rhai:2:5\n  |\n2 | let b = ;\n  |     ^\n"
        );
    }
}
