//! Redaction of a stream of lines (child output) over a window rather than line by line, so a
//! secret a child prints split across lines (`fold -w 5`, wrapped base64, a PEM key) is
//! masked in every line it touches.
//!
//! A line is released once the lines after it hold at least as many (normalised) bytes as the
//! longest registered form, so any occurrence starting in it is complete inside the window;
//! released lines stay in the window as history for as long, so the tail of an occurrence that
//! started in a released line is still masked. The caller flushes everything at the end of the
//! stream and when the child has been quiet for a moment (live output must not lag behind).

use super::{Redactor, normal};
use std::collections::VecDeque;

#[derive(Default)]
pub struct LineWindow {
    history: VecDeque<(String, usize)>,
    history_len: usize,
    pending: VecDeque<(String, usize)>,
    pending_len: usize,
}

impl LineWindow {
    pub fn push(&mut self, line: String) {
        let len = normal_len(&line);
        self.pending_len += len;
        self.pending.push_back((line, len));
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Bytes held back, for a caller that bounds how much it buffers.
    pub fn pending_len(&self) -> usize {
        self.pending_len
    }

    /// After the child has been quiet for a moment: the lines held back, redacted, unless the
    /// output stops at what may be the beginning of a secret (a child that writes a secret in
    /// two parts with a pause between): then nothing yet, and the caller asks again later (and
    /// flushes at the end, or after a longer quiet).
    pub fn take_quiet(&mut self, redactor: &Redactor) -> Vec<String> {
        let tail: Vec<&str> = self
            .history
            .iter()
            .chain(&self.pending)
            .map(|(line, _)| line.as_str())
            .collect();
        if redactor.longest_form() > 0 && redactor.may_continue_secret(&tail.concat()) {
            return Vec::new();
        }
        self.take_ready(redactor, true)
    }

    /// The lines that can be released now, redacted; with `flush`, all of them.
    pub fn take_ready(&mut self, redactor: &Redactor, flush: bool) -> Vec<String> {
        let need = redactor.longest_form();
        if need == 0 {
            // No registered secret: nothing can span lines (the journal still masks each
            // line's credential shapes).
            self.pending_len = 0;
            return self.pending.drain(..).map(|(line, _)| line).collect();
        }
        let mut count = 0;
        let mut after = self.pending_len;
        for (_, len) in &self.pending {
            if !flush && after - len < need {
                break;
            }
            after -= len;
            count += 1;
        }
        if count == 0 {
            return Vec::new();
        }
        let joined: Vec<&str> = self
            .history
            .iter()
            .chain(&self.pending)
            .map(|(line, _)| line.as_str())
            .collect();
        let redacted = redactor.redact(&joined.join("\n")).into_owned();
        let mut lines = redacted.split('\n').skip(self.history.len());
        let mut ready = Vec::with_capacity(count);
        for _ in 0..count {
            let (line, len) = self.pending.pop_front().expect("counted above");
            self.pending_len -= len;
            ready.push(lines.next().map_or_else(|| line.clone(), str::to_owned));
            self.history_len += len;
            self.history.push_back((line, len));
        }
        while let Some((_, front)) = self.history.front() {
            if self.history_len - front < need {
                break;
            }
            self.history_len -= front;
            self.history.pop_front();
        }
        ready
    }
}

fn normal_len(line: &str) -> usize {
    if normal::needs_view(line.as_bytes()) {
        normal::view(line.as_bytes()).bytes.len()
    } else {
        line.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_after_the_start_of_a_secret_holds_the_line_back() {
        let redactor = Redactor::new();
        redactor.register("correct-horse-battery-staple");
        let mut window = LineWindow::default();
        window.push("token: correct-ho".into());
        assert!(window.take_quiet(&redactor).is_empty());
        window.push("rse-battery-staple".into());
        let out = window.take_ready(&redactor, true);
        assert_eq!(out, ["token: [redacted]", "[redacted]"]);
        window.push("plain output".into());
        assert_eq!(window.take_quiet(&redactor), ["plain output"]);
    }

    #[test]
    fn a_secret_folded_over_lines_is_masked_in_each() {
        let redactor = Redactor::new();
        redactor.register("correct-horse-battery-staple");
        let mut window = LineWindow::default();
        let mut out = Vec::new();
        window.push("before".into());
        for chunk in "correct-horse-battery-staple".as_bytes().chunks(5) {
            window.push(String::from_utf8(chunk.to_vec()).unwrap());
            out.extend(window.take_ready(&redactor, false));
        }
        window.push("after".into());
        out.extend(window.take_ready(&redactor, true));
        assert_eq!(out.first().map(String::as_str), Some("before"));
        assert_eq!(out.last().map(String::as_str), Some("after"));
        assert_eq!(out.len(), 8);
        for line in &out[1..7] {
            assert_eq!(line, "[redacted]");
        }
    }
}
