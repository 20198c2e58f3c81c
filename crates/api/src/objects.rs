//! Arrays of objects that are objects: serde's derived `Deserialize` for a struct also takes
//! a JSON array of its fields in order (`[null, null]` as a range), which the API does not —
//! an array where an object is expected is a mistake to name, not a shape to guess at. The
//! request bodies' arrays of objects deserialize through [`vec`] (`#[serde(deserialize_with
//! = "crate::objects::vec")]`) and refuse an element that is not an object ("invalid type:
//! sequence, expected an object", at `ranges[0]`). A body itself is checked by the server.

use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A `T` read from a JSON object only.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Only<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Only(PhantomData)).map(Object)
    }
}

/// An array whose elements must be objects.
///
/// # Errors
/// The deserializer's error for an element that is not an object.
pub fn vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Vec::<Object<T>>::deserialize(d).map(|v| v.into_iter().map(|o| o.0).collect())
}

/// [`vec`] for an optional array (`null` or absent: `None`).
///
/// # Errors
/// As [`vec`].
pub fn option_vec<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<Vec<Object<T>>>::deserialize(d)
        .map(|v| v.map(|v| v.into_iter().map(|o| o.0).collect()))
}

#[cfg(test)]
mod tests {
    use crate::txns::{CommitBody, ReadBody};

    #[test]
    fn an_array_where_an_object_is_expected_is_refused() {
        let e = serde_json::from_str::<ReadBody>(r#"{"ranges": [[null, null]]}"#).unwrap_err();
        assert!(e.to_string().contains("expected an object"), "{e}");
        let ok: ReadBody = serde_json::from_str(r#"{"ranges": [{"prefix": "a"}]}"#).unwrap();
        assert_eq!(ok.ranges[0].prefix.as_deref(), Some("a"));
        let e = serde_json::from_str::<CommitBody>(r#"{"writes": [["put", "k", 1]]}"#).unwrap_err();
        assert!(e.to_string().contains("expected an object"), "{e}");
        let e = serde_json::from_str::<ReadBody>(r#"{"ranges": [{"prefix": "a", "x": 1}]}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `x`"), "{e}");
    }
}
