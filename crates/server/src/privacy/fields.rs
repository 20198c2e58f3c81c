//! Personal fields in a record's JSON value: a stream's declaration checked, a value sealed
//! (each declared member replaced by its ciphertext) and revealed (decrypted, or marked
//! erased). The format is decision 0030's:
//!
//! ```text
//! {"user": "u-17", "email": "a@b.example"}          as appended
//! {"user": "u-17", "email": {"$personal": "1.<key id, 16 hex>.<base64url(nonce ‖ ciphertext ‖ tag)>"}}
//!                                                    as stored
//! {"user": "u-17", "email": {"erased": true}}       as read once u-17 is erased
//! ```

use aes_gcm_siv::Nonce;
use aes_gcm_siv::aead::{Aead, Payload};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use logbook_log::PersonalData;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::key_store::DataKey;
use super::{PrivacyError, SUBJECT_BYTES_MAX};

/// The member of the object that stands for an encrypted value.
pub const SEALED_MEMBER: &str = "$personal";
/// Most personal fields one stream declares.
pub const FIELDS_MAX: usize = 32;
/// Most bytes of one declared JSON Pointer.
pub const POINTER_BYTES_MAX: usize = 256;
const FORMAT: &str = "1";
const AAD_PREFIX: &[u8] = b"logbook personal field 1\0";

/// Checks a stream's declaration; the error names the member (`personal_data.fields[2]`).
///
/// # Errors
/// [`PrivacyError::InvalidDeclaration`].
pub fn check_declaration(d: &PersonalData) -> Result<(), PrivacyError> {
    let invalid =
        |field: String, reason: String| PrivacyError::InvalidDeclaration { field, reason };
    check_pointer(&d.subject).map_err(|r| invalid("personal_data.subject".into(), r))?;
    if d.fields.is_empty() || d.fields.len() > FIELDS_MAX {
        return Err(invalid(
            "personal_data.fields".into(),
            format!("declare 1..={FIELDS_MAX} fields; {} given", d.fields.len()),
        ));
    }
    for (i, f) in d.fields.iter().enumerate() {
        let at = || format!("personal_data.fields[{i}]");
        check_pointer(f).map_err(|r| invalid(at(), r))?;
        if overlaps(f, &d.subject) {
            return Err(invalid(
                at(),
                format!(
                    "{f:?} overlaps the subject {:?}, which stays readable",
                    d.subject
                ),
            ));
        }
        if let Some(other) = d.fields[..i].iter().find(|o| overlaps(f, o)) {
            return Err(invalid(at(), format!("{f:?} overlaps the field {other:?}")));
        }
    }
    Ok(())
}

/// A JSON Pointer (RFC 6901) naming a member: `/a/b`, `~0` for `~` and `~1` for `/`.
fn check_pointer(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!(
            "{p:?} is not a JSON Pointer to a member (e.g. \"/email\")"
        ));
    }
    if p.len() > POINTER_BYTES_MAX {
        return Err(format!("{} bytes; at most {POINTER_BYTES_MAX}", p.len()));
    }
    let bytes = p.as_bytes();
    let bad_escape = p
        .match_indices('~')
        .any(|(i, _)| !matches!(bytes.get(i + 1), Some(b'0' | b'1')));
    if bad_escape {
        return Err(format!("{p:?}: `~` must be followed by 0 or 1 (RFC 6901)"));
    }
    Ok(())
}

/// Whether one pointer names the other or a member inside it.
fn overlaps(a: &str, b: &str) -> bool {
    let inside = |x: &str, y: &str| x == y || x.strip_prefix(y).is_some_and(|r| r.starts_with('/'));
    inside(a, b) || inside(b, a)
}

/// The data subject a value names at `pointer`: a string of 1..=64 bytes of
/// `[A-Za-z0-9._:@-]`, or a non-negative integer (its decimal text).
///
/// # Errors
/// [`PrivacyError::InvalidSubject`] naming `pointer`.
pub fn subject_of(value: &Value, pointer: &str) -> Result<String, PrivacyError> {
    let invalid = |reason: String| PrivacyError::InvalidSubject {
        pointer: pointer.to_string(),
        reason,
    };
    match value.pointer(pointer) {
        None => Err(invalid("the record has no data subject there".into())),
        Some(Value::String(s)) => check_subject(s).map(|()| s.clone()).map_err(invalid),
        Some(Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        Some(other) => Err(invalid(format!(
            "a data subject is a string or a non-negative integer, not {other}"
        ))),
    }
}

/// A data subject id: 1..=64 bytes of `[A-Za-z0-9._:@-]`.
///
/// # Errors
/// Why not, as text.
pub fn check_subject(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > SUBJECT_BYTES_MAX {
        return Err(format!(
            "{} bytes; a data subject id is 1..={SUBJECT_BYTES_MAX}",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._:@-".contains(*c)))
    {
        return Err(format!("{c:?} is not allowed: [A-Za-z0-9._:@-] only"));
    }
    Ok(())
}

fn aad(stream: &str, pointer: &str, subject: &str) -> Vec<u8> {
    let mut aad = AAD_PREFIX.to_vec();
    for (i, part) in [stream, pointer, subject].into_iter().enumerate() {
        if i > 0 {
            aad.push(0);
        }
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// Replaces each declared member present in `value` by its ciphertext under `key`.
/// Deterministic: the same value gives the same bytes (a retry is a duplicate).
///
/// # Errors
/// [`PrivacyError::InvalidSubject`] is the caller's; here only a failure to re-serialise.
pub fn seal(
    value: &mut Value,
    stream: &str,
    d: &PersonalData,
    subject: &str,
    key: &DataKey,
) -> Result<(), PrivacyError> {
    for pointer in &d.fields {
        let Some(member) = value.pointer_mut(pointer) else {
            continue;
        };
        let plain = canonical_text(member)?;
        let aad = aad(stream, pointer, subject);
        let digest = Sha256::new()
            .chain_update(&key.nonce_key[..])
            .chain_update(&aad)
            .chain_update(&plain)
            .finalize();
        let nonce = Nonce::from_slice(&digest[..12]);
        let sealed = key
            .cipher
            .encrypt(
                nonce,
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| PrivacyError::Cipher("encryption failed".into()))?;
        let mut body = nonce.to_vec();
        body.extend_from_slice(&sealed);
        let text = format!("{FORMAT}.{:016x}.{}", key.id, URL_SAFE_NO_PAD.encode(body));
        let mut sealed = serde_json::Map::new();
        sealed.insert(SEALED_MEMBER.to_string(), Value::String(text));
        *member = Value::Object(sealed);
    }
    Ok(())
}

/// The stored text of a JSON value (the server's canonical form).
pub fn canonical_text(v: &Value) -> Result<Vec<u8>, PrivacyError> {
    let raw =
        serde_json::value::to_raw_value(v).map_err(|e| PrivacyError::Cipher(e.to_string()))?;
    crate::canonical::canonical(&raw).map_err(|e| PrivacyError::Cipher(e.to_string()))
}

/// What a reader gets for one sealed member.
pub enum Revealed {
    /// The plaintext value.
    Plain(Value),
    /// The key is gone: `{"erased": true}`.
    Erased,
    /// The ciphertext does not authenticate under the subject's live key (damage).
    Undecryptable,
}

/// A sealed member's key id and body; `None` when `member` is not a sealed value,
/// `Some(Err(()))` when it is one whose text is malformed.
fn sealed_parts(member: &Value) -> Option<Result<(u64, &str), ()>> {
    let text = member
        .as_object()
        .filter(|o| o.len() == 1)?
        .get(SEALED_MEMBER)?
        .as_str()?;
    let mut parts = text.splitn(3, '.');
    let (Some(FORMAT), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return Some(Err(()));
    };
    Some(
        u64::from_str_radix(id, 16)
            .map(|id| (id, body))
            .map_err(|_| ()),
    )
}

/// `member` as a reader sees it, given the subject's live key (`None`: none or erased).
/// `None` when `member` is not a sealed value (left as stored).
pub fn reveal(
    member: &Value,
    stream: &str,
    pointer: &str,
    subject: &str,
    key: Option<&DataKey>,
) -> Option<Revealed> {
    let Ok((id, body)) = sealed_parts(member)? else {
        return Some(Revealed::Undecryptable);
    };
    let Some(key) = key.filter(|k| k.id == id) else {
        return Some(Revealed::Erased);
    };
    Some(
        open(body, &aad(stream, pointer, subject), key)
            .map_or(Revealed::Undecryptable, Revealed::Plain),
    )
}

/// The plaintext of a sealed body under `key` and `aad`; `None` if it does not authenticate.
fn open(body: &str, aad: &[u8], key: &DataKey) -> Option<Value> {
    let b = URL_SAFE_NO_PAD.decode(body).ok().filter(|b| b.len() > 12)?;
    let plain = key
        .cipher
        .decrypt(Nonce::from_slice(&b[..12]), Payload { msg: &b[12..], aad })
        .ok()?;
    serde_json::from_slice(&plain).ok()
}

/// Every sealed member anywhere in `value` — a view's row, where a projection may have moved
/// it (`fields: ["a.b"]` puts it under the member `"a.b"`) and the subject may be absent —
/// as a reader sees it. The key is found by the id the ciphertext names (`live_key`: id →
/// subject and key, `None` once erased); the pointer it was sealed at is one of the stream's
/// declared `fields`, tried in turn (the AAD authenticates only the right one). Returns how
/// many members were sealed.
pub fn reveal_anywhere(
    value: &mut Value,
    stream: &str,
    d: &PersonalData,
    live_key: &dyn Fn(u64) -> Option<(String, std::sync::Arc<DataKey>)>,
) -> usize {
    let revealed = match sealed_parts(value) {
        Some(Err(())) => Revealed::Undecryptable,
        Some(Ok((id, body))) => match live_key(id) {
            None => Revealed::Erased,
            Some((subject, key)) => d
                .fields
                .iter()
                .find_map(|p| open(body, &aad(stream, p, &subject), &key))
                .map_or(Revealed::Undecryptable, Revealed::Plain),
        },
        None => {
            return match value {
                Value::Array(items) => items
                    .iter_mut()
                    .map(|v| reveal_anywhere(v, stream, d, live_key))
                    .sum(),
                Value::Object(members) => members
                    .values_mut()
                    .map(|v| reveal_anywhere(v, stream, d, live_key))
                    .sum(),
                _ => 0,
            };
        }
    };
    *value = revealed.shown(stream);
    1
}

impl Revealed {
    /// The value a reader gets: the plaintext, `{"erased": true}`, or `{"undecryptable":
    /// true}` (logged at `error`: damage on disk).
    pub fn shown(self, stream: &str) -> Value {
        match self {
            Revealed::Plain(p) => p,
            Revealed::Erased => serde_json::json!({"erased": true}),
            Revealed::Undecryptable => {
                tracing::error!(
                    stream,
                    "a personal field does not decrypt under its subject's key: damaged"
                );
                serde_json::json!({"undecryptable": true})
            }
        }
    }
}

/// The JSON Pointer (RFC 6901) of a view's dotted field path (`a.b` → `/a/b`).
pub fn pointer_of_path(segments: &[String]) -> String {
    segments
        .iter()
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// The declared personal field `path` (a JSON Pointer) names, lies inside or contains.
pub fn personal_overlap<'a>(d: &'a PersonalData, path: &str) -> Option<&'a str> {
    d.fields
        .iter()
        .find(|f| overlaps(f, path))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::key_store::data_key;
    use serde_json::json;

    fn declared() -> PersonalData {
        PersonalData {
            subject: "/user".into(),
            fields: vec!["/email".into(), "/a/ip".into()],
        }
    }

    #[test]
    fn sealing_is_deterministic_and_reveals_only_under_its_own_key() {
        let (key, other) = (data_key(7, &[1u8; 48]), data_key(8, &[2u8; 48]));
        let plain =
            json!({"user": "u1", "email": "e@x", "a": {"ip": [10, 0, 0, 1], "city": "Oslo"}});
        let mut sealed = plain.clone();
        seal(&mut sealed, "s", &declared(), "u1", &key).unwrap_or_else(|e| panic!("{e}"));
        let mut again = plain.clone();
        seal(&mut again, "s", &declared(), "u1", &key).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sealed, again, "a retry is the same bytes");
        assert_eq!(sealed["a"]["city"], "Oslo");
        assert!(!sealed.to_string().contains("e@x"));
        let email = &sealed["email"];
        let got = |k: Option<&DataKey>, stream: &str, subject: &str| match reveal(
            email, stream, "/email", subject, k,
        ) {
            Some(Revealed::Plain(v)) => Ok(v),
            Some(Revealed::Erased) => Err("erased"),
            Some(Revealed::Undecryptable) => Err("undecryptable"),
            None => Err("not sealed"),
        };
        assert_eq!(got(Some(&key), "s", "u1"), Ok(json!("e@x")));
        assert_eq!(got(None, "s", "u1"), Err("erased"));
        assert_eq!(
            got(Some(&other), "s", "u1"),
            Err("erased"),
            "a newer key of the subject"
        );
        assert_eq!(
            got(Some(&key), "t", "u1"),
            Err("undecryptable"),
            "moved to another stream"
        );
        assert_eq!(
            got(Some(&key), "s", "u2"),
            Err("undecryptable"),
            "moved to another subject"
        );
        assert!(reveal(&json!("plain"), "s", "/email", "u1", Some(&key)).is_none());
    }

    #[test]
    fn a_sealed_field_moved_by_a_view_is_revealed_by_its_key_id() {
        let key = std::sync::Arc::new(data_key(7, &[1u8; 48]));
        let mut sealed = json!({"user": "u1", "email": "e@x", "a": {"ip": "10.0.0.1"}});
        seal(&mut sealed, "s", &declared(), "u1", &key).unwrap_or_else(|e| panic!("{e}"));
        // A projection (`fields: ["a.ip", "email"]`) moves the members; the subject is gone.
        let row = json!({"a.ip": sealed["a"]["ip"], "email": sealed["email"], "n": 1});
        let live = |id: u64| (id == 7).then(|| ("u1".to_string(), key.clone()));
        let mut shown = row.clone();
        assert_eq!(reveal_anywhere(&mut shown, "s", &declared(), &live), 2);
        assert_eq!(shown, json!({"a.ip": "10.0.0.1", "email": "e@x", "n": 1}));
        let mut shown = row.clone();
        reveal_anywhere(&mut shown, "s", &declared(), &|_| None);
        let erased = json!({"erased": true});
        assert_eq!(shown, json!({"a.ip": erased, "email": erased, "n": 1}));
        let mut shown = row;
        reveal_anywhere(&mut shown, "other", &declared(), &live);
        assert_eq!(
            shown["email"],
            json!({"undecryptable": true}),
            "bound to its stream"
        );
    }

    #[test]
    fn declarations_and_subjects_are_checked_by_name() {
        assert!(check_declaration(&declared()).is_ok());
        let field = |d: PersonalData| match check_declaration(&d) {
            Err(PrivacyError::InvalidDeclaration { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let d = |subject: &str, fields: &[&str]| PersonalData {
            subject: subject.into(),
            fields: fields.iter().map(|f| (*f).to_string()).collect(),
        };
        assert_eq!(field(d("", &["/a"])), "personal_data.subject");
        assert_eq!(field(d("/u", &["/u"])), "personal_data.fields[0]");
        assert_eq!(field(d("/u/v", &["/u"])), "personal_data.fields[0]");
        assert_eq!(
            field(d("/u", &["/a", "/b", "/a/c"])),
            "personal_data.fields[2]"
        );
        assert_eq!(field(d("/u", &["/ab", "/a~"])), "personal_data.fields[1]");
        assert!(
            check_declaration(&d("/u", &["/ab", "/a"])).is_ok(),
            "a prefix by bytes is not inside"
        );
        assert_eq!(
            subject_of(&json!({"user": 17}), "/user").ok(),
            Some("17".to_string())
        );
        for bad in [
            json!({}),
            json!({"user": ""}),
            json!({"user": "a b"}),
            json!({"user": 1.5}),
            json!({"user": "x".repeat(65)}),
        ] {
            assert!(subject_of(&bad, "/user").is_err(), "{bad}");
        }
    }
}
