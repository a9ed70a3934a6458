//! Where the password of a URL with user info is (`scheme://user:PASSWORD@host/...`), for
//! registering it and for masking it in text before it is known to be one. URL parsers take
//! the authority to end at the first `/`, so `postgres://u:bad@pass/word@host/db` yields the
//! password `bad` and leaves `pass/word` in view; here the password runs to the last `@` before
//! any `?` or `#`, which covers passwords holding `/` or `@` (at worst it also masks a path
//! that has an `@` in it: too much, never too little).

use std::ops::Range;

/// Characters that end a URL inside running text.
fn ends_url(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`')
}

/// The byte range of the password inside `url` (a single URL, or the token of one).
pub fn password_span(url: &str) -> Option<Range<usize>> {
    let scheme_end = url.find("://")?;
    let scheme = &url[..scheme_end];
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let rest = &rest[..rest.find(ends_url).unwrap_or(rest.len())];
    let before_query = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    let at = before_query.rfind('@')?;
    let userinfo = &before_query[..at];
    let colon = userinfo.find(':')?;
    if userinfo[..colon].contains('/') || colon + 1 >= at {
        return None;
    }
    Some(rest_start + colon + 1..rest_start + at)
}

/// The passwords of every URL with user info in running text, as byte ranges.
pub fn password_spans(text: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let marker = from + found;
        // Back up over the scheme.
        let start = text[..marker]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .last()
            .map_or(marker, |(i, _)| i);
        if let Some(span) = password_span(&text[start..]) {
            spans.push(start + span.start..start + span.end);
            from = start + span.end;
        } else {
            from = marker + 3;
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(url: &str) -> Option<&str> {
        password_span(url).map(|r| &url[r])
    }

    #[test]
    fn passwords_with_slash_and_at_are_whole() {
        assert_eq!(
            password("postgres://u:bad@pass/word@host/db"),
            Some("bad@pass/word")
        );
        assert_eq!(password("postgres://u:pw@host/db?x=a@b"), Some("pw"));
        assert_eq!(password("https://host/path"), None);
        assert_eq!(password("https://user@host/path"), None);
    }

    #[test]
    fn urls_are_found_in_text() {
        let text = "connect to postgres://app:s3cret@db:5432/x now, then redis://:tok3n@cache";
        let found: Vec<&str> = password_spans(text).into_iter().map(|r| &text[r]).collect();
        assert_eq!(found, ["s3cret", "tok3n"]);
    }
}
