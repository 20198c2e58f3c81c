//! The views catalog: which views exist, their versions and specs, which version serves
//! reads. It is one JSON document in the store's `catalog` space, rewritten and fsynced on
//! every change ([`crate::engine`]).
//!
//! **Numbering.** A view's versions are numbered within the view: its first version is 1, each
//! rebuild takes the next number, and a number is never reused while the view exists (a
//! dropped version 2 stays gone; the next rebuild is 3). That number is the only one users
//! see. A version's state lives in a store space `v{space}`, where `space` comes from one
//! counter for the whole data directory (so a dropped-and-recreated view never meets the
//! spaces of its predecessor); the engine translates at every entry point.
//!
//! **Formats.** 4 (this one) records both numbers. 3 numbered versions by the global
//! counter alone; [`Catalog::decode`] upgrades it by numbering each view's versions 1, 2, …
//! in the order of their old ids and keeping the old ids as their spaces (the state in the
//! spaces is the same in both formats). Any other format is refused with
//! [`ViewError::Corrupt`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Result, ViewError};
use crate::spec::ViewSpec;

/// Format version of the catalog and of the state layout ([`crate::layout`], checkpoints as
/// in [`crate::state`]). 4 numbers versions per view; a format-3 catalog (one numbering for
/// the whole data directory, the same state layout) is upgraded at open.
pub const FORMAT_VERSION: u32 = 4;

/// A gradual rollout: this share of reads goes to `version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// The version receiving reads.
    pub version: u64,
    /// Percent of reads (by key hash), 0 ..= 100.
    pub percent: u8,
}

/// The catalog as stored (format [`FORMAT_VERSION`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Catalog {
    pub format_version: u32,
    /// The next version's store space (one counter for the data directory).
    pub next_space: u64,
    pub views: BTreeMap<String, ViewEntry>,
}

/// One view.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ViewEntry {
    /// The version number serving reads.
    pub current: u64,
    /// A rollout in progress (its version is a number of this view).
    pub rollout: Option<Rollout>,
    /// The number the next version of this view gets.
    pub next_version: u64,
    /// Version number → version.
    pub versions: BTreeMap<u64, VersionEntry>,
}

/// One version of a view.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionEntry {
    pub spec: ViewSpec,
    /// Incarnation of the source stream the version was built from.
    pub incarnation: u64,
    /// Its store space (`v{space}`), unique in the data directory.
    pub space: u64,
}

/// Only the format, read before the shape that depends on it.
#[derive(Deserialize)]
struct Format {
    format_version: u32,
}

/// Format 3: versions keyed by a data-directory-wide id, which also named their space.
mod v3 {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Catalog {
        #[expect(dead_code, reason = "checked before this shape is parsed")]
        pub format_version: u32,
        pub next_version: u64,
        pub views: BTreeMap<String, ViewEntry>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct ViewEntry {
        pub current: u64,
        pub rollout: Option<Rollout>,
        pub versions: BTreeMap<u64, VersionEntry>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct VersionEntry {
        pub spec: ViewSpec,
        pub incarnation: u64,
    }
}

impl Catalog {
    /// The catalog of a store that has none yet.
    pub fn empty() -> Catalog {
        Catalog {
            format_version: FORMAT_VERSION,
            next_space: 1,
            views: BTreeMap::new(),
        }
    }

    /// Parses a stored catalog; a format-3 one is upgraded (see the module docs). Returns
    /// the catalog and whether it was upgraded (the caller stores it back).
    ///
    /// # Errors
    /// [`ViewError::Corrupt`]: not JSON of a known format, or a format-3 catalog whose
    /// current or rollout version is not one of the view's versions.
    pub fn decode(bytes: &[u8]) -> Result<(Catalog, bool)> {
        let parse_error = |e: serde_json::Error| ViewError::corrupt("catalog", e.to_string());
        let format: Format = serde_json::from_slice(bytes).map_err(parse_error)?;
        match format.format_version {
            FORMAT_VERSION => Ok((serde_json::from_slice(bytes).map_err(parse_error)?, false)),
            3 => Ok((
                upgrade_v3(serde_json::from_slice(bytes).map_err(parse_error)?)?,
                true,
            )),
            other => Err(ViewError::corrupt(
                "catalog",
                format!(
                    "format version {other} is not the supported {FORMAT_VERSION} (or 3, which \
                     is upgraded); views are derived data: remove the views directory and \
                     create them again, they are recomputed from the log"
                ),
            )),
        }
    }

    /// The stored form.
    ///
    /// # Errors
    /// [`ViewError::Corrupt`] if it cannot be serialized (it always can).
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| ViewError::corrupt("catalog", e.to_string()))
    }
}

/// Numbers each view's versions 1, 2, … in old-id order; the old ids become their spaces.
fn upgrade_v3(old: v3::Catalog) -> Result<Catalog> {
    let mut views = BTreeMap::new();
    for (name, view) in old.views {
        let number_of: BTreeMap<u64, u64> = view
            .versions
            .keys()
            .zip(1..)
            .map(|(id, n)| (*id, n))
            .collect();
        let renumber = |id: u64, what: &str| {
            number_of.get(&id).copied().ok_or_else(|| {
                ViewError::corrupt(
                    "catalog",
                    format!("view {name:?}: the {what} version {id} is not one of its versions"),
                )
            })
        };
        let current = renumber(view.current, "current")?;
        let rollout = match view.rollout {
            Some(r) => Some(Rollout {
                version: renumber(r.version, "rollout")?,
                percent: r.percent,
            }),
            None => None,
        };
        let versions: BTreeMap<u64, VersionEntry> = view
            .versions
            .into_iter()
            .zip(1..)
            .map(|((id, e), number)| {
                let entry = VersionEntry {
                    spec: e.spec,
                    incarnation: e.incarnation,
                    space: id,
                };
                (number, entry)
            })
            .collect();
        let entry = ViewEntry {
            current,
            rollout,
            next_version: versions.len() as u64 + 1,
            versions,
        };
        views.insert(name, entry);
    }
    Ok(Catalog {
        format_version: FORMAT_VERSION,
        next_space: old.next_version,
        views,
    })
}

impl ViewEntry {
    /// The store space of version `number`, if the view has it.
    pub fn space_of(&self, number: u64) -> Option<u64> {
        self.versions.get(&number).map(|e| e.space)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> serde_json::Value {
        serde_json::json!({"source": "s", "kind": "table"})
    }

    #[test]
    fn format_3_is_renumbered_per_view_in_id_order() {
        let old = serde_json::json!({"format_version": 3, "next_version": 6, "views": {
            "a": {"current": 4, "rollout": {"version": 5, "percent": 10}, "versions": {
                "1": {"spec": spec(), "incarnation": 7},
                "4": {"spec": spec(), "incarnation": 7},
                "5": {"spec": spec(), "incarnation": 8}}},
            "b": {"current": 2, "rollout": null, "versions": {
                "2": {"spec": spec(), "incarnation": 7}}}}});
        let (c, upgraded) = Catalog::decode(old.to_string().as_bytes()).unwrap();
        assert!(upgraded);
        assert_eq!((c.format_version, c.next_space), (FORMAT_VERSION, 6));
        let a = &c.views["a"];
        assert_eq!((a.current, a.next_version), (2, 4));
        assert_eq!(
            a.rollout,
            Some(Rollout {
                version: 3,
                percent: 10
            })
        );
        let spaces: Vec<(u64, u64, u64)> = a
            .versions
            .iter()
            .map(|(n, e)| (*n, e.space, e.incarnation))
            .collect();
        assert_eq!(spaces, [(1, 1, 7), (2, 4, 7), (3, 5, 8)]);
        let b = &c.views["b"];
        assert_eq!((b.current, b.space_of(1), b.next_version), (1, Some(2), 2));
        // Stored back, it reads as format 4, unchanged.
        let (again, upgraded) = Catalog::decode(&c.encode().unwrap()).unwrap();
        assert!(!upgraded);
        assert_eq!(again.encode().unwrap(), c.encode().unwrap());
    }

    #[test]
    fn other_formats_and_dangling_versions_are_refused() {
        let future =
            serde_json::json!({"format_version": 5, "next_space": 1, "views": {}, "new": 1});
        let e = Catalog::decode(future.to_string().as_bytes()).unwrap_err();
        assert!(
            matches!(&e, ViewError::Corrupt { what: "catalog", reason } if reason.contains("format version 5 is not the supported 4")),
            "{e}"
        );
        let dangling = serde_json::json!({"format_version": 3, "next_version": 3, "views": {
            "a": {"current": 1, "rollout": {"version": 2, "percent": 10}, "versions": {
                "1": {"spec": spec(), "incarnation": 7}}}}});
        let e = Catalog::decode(dangling.to_string().as_bytes()).unwrap_err();
        assert!(
            matches!(&e, ViewError::Corrupt { what: "catalog", reason } if reason.contains("rollout version 2")),
            "{e}"
        );
        assert!(matches!(
            Catalog::decode(b"[]"),
            Err(ViewError::Corrupt { .. })
        ));
    }
}
