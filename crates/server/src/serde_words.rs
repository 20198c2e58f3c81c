//! Serde's deserialization errors in the API's words: the field as a JSON path the way the
//! API names fields (`records[2].key`), and the message with JSON's names for types instead
//! of Rust's. Used by the body extractor and by the view-spec errors.

/// The JSON path of a deserialization error as the API names fields (`records[2].key`):
/// empty for the whole body; cut before any segment serde could not name (`?`); and an
/// enum given as an object (`{"kind": {"table": 1}}`) named by its member, not the variant.
pub(crate) fn json_path(path: &str, message: &str) -> String {
    let mut path = if path == "." { "" } else { path }.to_string();
    if let Some(i) = path.find('?') {
        path.truncate(i);
        while path.ends_with('.') || path.ends_with('[') {
            path.pop();
        }
    }
    if message.contains("expected unit")
        && let Some(i) = path.rfind('.')
    {
        path.truncate(i);
    }
    path
}

/// A serde message in the API's words: JSON's names for types (object, array, integer)
/// instead of Rust's (`struct CreateStream`, `u32`, `sequence`, `map`), the range of an
/// integer, "value" for a variant. Text it does not recognise is kept.
pub(crate) fn api_words(message: &str) -> String {
    // An array given for an object (serde's "invalid length N, expected struct X with M
    // elements").
    if message.starts_with("invalid length") && message.contains("expected struct ") {
        return "expected an object, got an array".to_string();
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("struct ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "struct ".len()..];
        let name_end = after
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(after.len());
        let mut tail = &after[name_end..];
        // "with 3 elements"
        if let Some(t) = tail.strip_prefix(" with ")
            && let Some(j) = t.find(" element")
        {
            tail = t[j + " element".len()..].trim_start_matches('s');
        }
        out.push_str("an object");
        rest = tail;
    }
    out.push_str(rest);
    let words: [(&str, &str); 19] = [
        ("expected u8", "expected an integer from 0 to 255"),
        ("expected u16", "expected an integer from 0 to 65535"),
        ("expected u32", "expected an integer from 0 to 4294967295"),
        ("expected u64", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
        ("expected i8", "expected an integer"),
        ("expected i16", "expected an integer"),
        ("expected i32", "expected an integer"),
        ("expected i64", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected string or map", "expected a string"),
        ("expected unit", "expected a string"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected an object"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: map", "invalid type: object"),
        ("floating point `", "number `"),
        ("unknown variant `", "unknown value `"),
    ];
    for (from, to) in words {
        out = replace_word(&out, from, to);
    }
    out
}

/// Replaces `from`; one ending in a letter or digit only where no letter or digit follows
/// (so `u8` does not match `u80`).
fn replace_word(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let after = &rest[i + from.len()..];
        let whole = !from.ends_with(|c: char| c.is_ascii_alphanumeric())
            || !after.starts_with(|c: char| c.is_ascii_alphanumeric());
        out.push_str(&rest[..i]);
        out.push_str(if whole { to } else { from });
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stop_before_what_serde_could_not_name() {
        assert_eq!(json_path("a.?.b", "x"), "a");
        assert_eq!(json_path("records[0].?", "x"), "records[0]");
        assert_eq!(json_path("?", "x"), "");
        assert_eq!(json_path(".", "x"), "");
        // An enum given as an object is named by its member, not the variant.
        assert_eq!(json_path("kind.table", "expected unit"), "kind");
    }

    #[test]
    fn words_match_whole_type_names_only() {
        assert_eq!(
            api_words("expected u8"),
            "expected an integer from 0 to 255"
        );
        assert_eq!(api_words("expected u80"), "expected u80");
        assert_eq!(
            api_words("invalid type: map, expected struct CreateStream"),
            "invalid type: object, expected an object"
        );
    }
}
