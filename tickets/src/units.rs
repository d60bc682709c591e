//! The handling units (承办单位, Arts. 4 and 10) a ticket is dispatched to, as data:
//! `data/units.toml` (Zhuhai's districts, functional areas, towns, departments and
//! public-service enterprises), extendable by operators without a rebuild.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// The shipped unit list.
pub const SHIPPED: &str = include_str!("../data/units.toml");

/// A unit list that does not parse or contradicts itself.
#[derive(Debug, thiserror::Error)]
pub enum UnitsError {
    /// Not TOML of the expected shape.
    #[error("unit list does not parse: {0}")]
    Parse(#[from] toml::de::Error),
    /// Duplicate ids or hints, bad ids, unknown parents.
    #[error("unit list is inconsistent: {0}")]
    Inconsistent(String),
}

/// What a unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    /// A district government (区政府).
    District,
    /// A functional area's committee (管委会).
    FunctionalArea,
    /// A town or sub-district (镇, 街道).
    Town,
    /// A city department (市直部门).
    Department,
    /// A public-service enterprise (water, power, gas).
    Enterprise,
}

/// One handling unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    /// Stable id (`xiangzhou`, `water-group`): what tickets and tokens name.
    pub id: String,
    /// Official name.
    pub name: String,
    /// What it is.
    pub kind: UnitKind,
    /// The district or area a town belongs to (`""` otherwise).
    #[serde(default)]
    pub parent: String,
    /// The district, as the gateway's prefill spells it (`""` for city-wide units).
    #[serde(default)]
    pub district: String,
    /// Prefill values (department or district) that pre-select this unit.
    #[serde(default)]
    pub hints: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitFile {
    unit: Vec<Unit>,
}

/// The unit list, by id, with its hints.
#[derive(Debug, Clone, Default)]
pub struct Units {
    by_id: BTreeMap<String, Unit>,
    by_hint: HashMap<String, String>,
}

impl Units {
    /// The shipped list.
    pub fn builtin() -> Self {
        Self::from_toml(SHIPPED).unwrap_or_else(|e| unreachable!("shipped units: {e}"))
    }

    /// A list from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, UnitsError> {
        let file: UnitFile = toml::from_str(text)?;
        let mut units = Units::default();
        for u in file.unit {
            let id_ok = !u.id.is_empty()
                && u.id.len() <= 64
                && u.id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !id_ok {
                return Err(UnitsError::Inconsistent(format!(
                    "unit id {:?}: use 1-64 of [a-z0-9-]",
                    u.id
                )));
            }
            for h in &u.hints {
                if let Some(other) = units.by_hint.insert(h.clone(), u.id.clone()) {
                    return Err(UnitsError::Inconsistent(format!(
                        "hint {h:?} names both {other} and {}",
                        u.id
                    )));
                }
            }
            let id = u.id.clone();
            if units.by_id.insert(id.clone(), u).is_some() {
                return Err(UnitsError::Inconsistent(format!("unit {id} given twice")));
            }
        }
        for u in units.by_id.values() {
            if !u.parent.is_empty() && !units.by_id.contains_key(&u.parent) {
                return Err(UnitsError::Inconsistent(format!(
                    "unit {}: parent {} is not in the list",
                    u.id, u.parent
                )));
            }
        }
        Ok(units)
    }

    /// The unit with this id.
    pub fn get(&self, id: &str) -> Option<&Unit> {
        self.by_id.get(id)
    }

    /// Every unit, by id.
    pub fn all(&self) -> impl Iterator<Item = &Unit> {
        self.by_id.values()
    }

    /// The unit a prefill value pre-selects (Art. 10: the department the citizen named,
    /// else the district).
    pub fn by_hint(&self, hint: &str) -> Option<&Unit> {
        self.by_hint
            .get(hint.trim())
            .and_then(|id| self.by_id.get(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_list_loads_and_hints_preselect_one_unit_each() {
        let units = Units::builtin();
        assert!(units.all().count() >= 30);
        let water = units.by_hint("水务局").expect("the water bureau is a hint");
        assert_eq!(water.kind, UnitKind::Department);
        let xz = units.by_hint("香洲区").expect("a district");
        assert_eq!(xz.id, "xiangzhou");
        assert!(
            units.by_hint("物业").is_none(),
            "a property company is no unit"
        );
        for u in units.all() {
            if u.kind == UnitKind::Town {
                assert!(units.get(&u.parent).is_some(), "{} has its parent", u.id);
            }
        }
    }

    #[test]
    fn duplicate_hints_and_ids_are_refused() {
        let dup = r#"
[[unit]]
id = "a"
name = "A"
kind = "department"
hints = ["x"]
[[unit]]
id = "b"
name = "B"
kind = "department"
hints = ["x"]
"#;
        assert!(matches!(
            Units::from_toml(dup),
            Err(UnitsError::Inconsistent(_))
        ));
        let bad_id = "[[unit]]\nid = \"A B\"\nname = \"A\"\nkind = \"town\"\n";
        assert!(Units::from_toml(bad_id).is_err());
        let orphan = "[[unit]]\nid = \"t\"\nname = \"T\"\nkind = \"town\"\nparent = \"nowhere\"\n";
        assert!(Units::from_toml(orphan).is_err());
    }
}
