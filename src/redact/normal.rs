//! The normalised view of a text that secrets are matched in. A secret travels through output
//! wrapped in ANSI colour codes (`grep --color=always`), split across lines (`fold -w 5`,
//! `base64` wrapping at 76 columns, a PEM key), JSON-escaped (`\"`, `\\`, `\/`, `\u00e4`) or
//! percent-encoded (`%2F`, or with `/` left as is). Rather than registering every combination
//! of these as a pattern, the text is normalised once: ANSI sequences and line breaks are
//! dropped and JSON and percent escapes are decoded. Each byte of the view remembers the range
//! of original bytes it came from, so a match in the view masks exactly the original bytes.

/// A normalised text and, for each of its bytes, the original bytes it stands for.
pub struct View {
    pub bytes: Vec<u8>,
    /// `start[i]..end[i]` is the original range byte `i` of the view came from.
    pub start: Vec<usize>,
    pub end: Vec<usize>,
}

/// Whether `text` has anything the view would change; when not, the text is its own view.
pub fn needs_view(text: &[u8]) -> bool {
    text.iter().any(|b| is_special(*b))
}

fn is_special(byte: u8) -> bool {
    matches!(byte, 0x1b | b'\\' | b'%' | b'\n' | b'\r')
}

/// Normalises `text` (see the module documentation).
pub fn view(text: &[u8]) -> View {
    let mut view = View {
        bytes: Vec::with_capacity(text.len()),
        start: Vec::with_capacity(text.len()),
        end: Vec::with_capacity(text.len()),
    };
    let mut at = 0;
    while at < text.len() {
        // A run of plain bytes is copied in one go; only the special ones are stepped through.
        let run = text[at..]
            .iter()
            .position(|b| is_special(*b))
            .unwrap_or(text.len() - at);
        if run > 0 {
            view.bytes.extend_from_slice(&text[at..at + run]);
            view.start.extend(at..at + run);
            view.end.extend(at + 1..at + run + 1);
            at += run;
            continue;
        }
        let (consumed, decoded) = step(text, at);
        for byte in decoded.as_slice() {
            view.bytes.push(*byte);
            view.start.push(at);
            view.end.push(at + consumed);
        }
        at += consumed;
    }
    view
}

/// Bytes a step produced: at most four (one UTF-8 character).
pub struct Decoded {
    bytes: [u8; 4],
    len: usize,
}

impl Decoded {
    fn none() -> Self {
        Self {
            bytes: [0; 4],
            len: 0,
        }
    }
    fn byte(byte: u8) -> Self {
        Self {
            bytes: [byte, 0, 0, 0],
            len: 1,
        }
    }
    fn char(c: char) -> Self {
        let mut bytes = [0; 4];
        let len = c.encode_utf8(&mut bytes).len();
        Self { bytes, len }
    }
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Reads one unit of the original at `at`: how many bytes it spans and what it stands for.
fn step(text: &[u8], at: usize) -> (usize, Decoded) {
    match text[at] {
        0x1b => (ansi_len(&text[at..]), Decoded::none()),
        b'\n' | b'\r' => (1, Decoded::none()),
        b'\\' => json_escape(&text[at..]).unwrap_or((1, Decoded::byte(b'\\'))),
        b'%' => match (text.get(at + 1), text.get(at + 2)) {
            (Some(&hi), Some(&lo)) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                (3, Decoded::byte(hex_value(hi) << 4 | hex_value(lo)))
            }
            _ => (1, Decoded::byte(b'%')),
        },
        byte => (1, Decoded::byte(byte)),
    }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// The length of the ANSI escape sequence at the start of `text` (CSI `ESC [ ... final`,
/// OSC `ESC ] ... BEL|ESC \`, or a two-byte `ESC x`).
fn ansi_len(text: &[u8]) -> usize {
    match text.get(1) {
        Some(b'[') => text[2..]
            .iter()
            .position(|b| (0x40..=0x7e).contains(b))
            .map_or(text.len(), |p| p + 3),
        Some(b']') => {
            let mut i = 2;
            while i < text.len() {
                if text[i] == 0x07 {
                    return i + 1;
                }
                if text[i] == 0x1b && text.get(i + 1) == Some(&b'\\') {
                    return i + 2;
                }
                i += 1;
            }
            text.len()
        }
        Some(_) => 2,
        None => 1,
    }
}

/// A JSON string escape at the start of `text`, decoded. `\n` and `\r` stand for line breaks,
/// which the view drops like real ones.
fn json_escape(text: &[u8]) -> Option<(usize, Decoded)> {
    let decoded = match *text.get(1)? {
        b'"' => Decoded::byte(b'"'),
        b'\\' => Decoded::byte(b'\\'),
        b'/' => Decoded::byte(b'/'),
        b'n' | b'r' => Decoded::none(),
        b't' => Decoded::byte(b'\t'),
        b'b' => Decoded::byte(0x08),
        b'f' => Decoded::byte(0x0c),
        b'u' => return unicode_escape(text),
        _ => return None,
    };
    Some((2, decoded))
}

/// `\uXXXX`, or a surrogate pair `\uD83D\uDE00`, decoded to UTF-8.
fn unicode_escape(text: &[u8]) -> Option<(usize, Decoded)> {
    let unit = |at: usize| -> Option<u32> {
        let digits = text.get(at..at + 4)?;
        let digits = std::str::from_utf8(digits).ok()?;
        u32::from_str_radix(digits, 16).ok()
    };
    let first = unit(2)?;
    if (0xd800..0xdc00).contains(&first) && text.get(6..8) == Some(b"\\u") {
        let second = unit(8)?;
        if (0xdc00..0xe000).contains(&second) {
            let code = 0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00);
            return Some((12, Decoded::char(char::from_u32(code)?)));
        }
    }
    Some((6, Decoded::char(char::from_u32(first)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(text: &str) -> String {
        String::from_utf8(view(text.as_bytes()).bytes).unwrap()
    }

    #[test]
    fn escapes_colour_and_line_breaks_are_undone() {
        assert_eq!(normal("pa\\\"ss\\\\word"), "pa\"ss\\word");
        assert_eq!(normal("a\\/b \\u00e4"), "a/b ä");
        assert_eq!(normal("\\ud83d\\ude00"), "😀");
        assert_eq!(normal("p%40ss/w%2Frd"), "p@ss/w/rd");
        assert_eq!(normal("\x1b[01;31m\x1b[Kred\x1b[m\x1b[K"), "red");
        assert_eq!(normal("abc\r\ndef\nghi"), "abcdefghi");
        assert_eq!(normal("100% \\q"), "100% \\q");
    }

    #[test]
    fn every_view_byte_knows_its_origin() {
        let text = "x%41\\u00e4y";
        let v = view(text.as_bytes());
        assert_eq!(v.bytes, "xAäy".as_bytes());
        assert_eq!((v.start[1], v.end[1]), (1, 4));
        assert_eq!((v.start[2], v.end[3]), (4, 10));
    }
}
