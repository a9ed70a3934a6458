//! The one rule for prompt ids, shared by `prompt` (which keys answers by id) and `check`
//! (which reports two prompts sharing an id): if they disagreed, `check` would pass a script
//! whose answers file then answers the wrong question.

/// The id of a question: lower case, each run of characters other than `a-z0-9` turned into one
/// `_` ("Deploy to production?" -> `deploy_to_production_`, DESIGN.md's rule taken literally;
/// answers are also found under the id without its edge `_`). An id with nothing left is
/// `prompt`.
pub fn slug(text: &str) -> String {
    let mut id = String::with_capacity(text.len());
    for c in text.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            id.push(c);
        } else if !id.ends_with('_') {
            id.push('_');
        }
    }
    if id.trim_matches('_').is_empty() {
        "prompt".to_owned()
    } else {
        id
    }
}

/// The id of `approve(role)`: `approve_` and the role slugged.
pub fn approve_id(role: &str) -> String {
    format!("approve_{}", slug(role))
}
