//! What a lease on a grant may do: read the payload, write back named fields, create child
//! records. The schema is declared by the originator and checked here once, at creation.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::limits;
use crate::problems::{Problems, is_name};

/// The type of a writable field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// UTF-8 text, optionally bounded by `max_length` or restricted to `enum`.
    String,
    /// Any JSON number.
    Number,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A calendar date `YYYY-MM-DD`.
    Date,
}

/// The declaration of one writable field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// The value's type.
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// For strings: the most characters accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// For strings: the only values accepted.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<String>>,
}

/// Child records a lease may create (one per contact, say).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSpec {
    /// What a child record is (`contact`).
    pub kind: String,
    /// The most child records across all submissions of the grant.
    pub max: u32,
    /// The fields of each child record.
    pub fields: BTreeMap<String, FieldSpec>,
}

fn default_true() -> bool {
    true
}

/// What a lease on the grant may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// Whether the payload may be read (default true).
    #[serde(default = "default_true")]
    pub read: bool,
    /// Fields that may be written back, by name.
    #[serde(default)]
    pub write_fields: BTreeMap<String, FieldSpec>,
    /// Child records that may be created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<CreateSpec>,
}

impl Default for Permissions {
    fn default() -> Self {
        Self {
            read: true,
            write_fields: BTreeMap::new(),
            create: None,
        }
    }
}

impl Permissions {
    /// Whether a lease may submit anything at all.
    pub fn can_write(&self) -> bool {
        !self.write_fields.is_empty() || self.create.is_some()
    }

    /// Checks the declared schema, recording problems under `at` (e.g. `permissions`).
    pub fn check(&self, at: &str, problems: &mut Problems) {
        check_fields(&self.write_fields, &format!("{at}.write_fields"), problems);
        if let Some(create) = &self.create {
            let at = format!("{at}.create");
            if !is_name(&create.kind) {
                problems.push(format!("{at}.kind"), NAME_RULE);
            }
            if !(1..=limits::MAX_CREATES).contains(&create.max) {
                problems.push(
                    format!("{at}.max"),
                    format_args!("must be 1 to {}", limits::MAX_CREATES),
                );
            }
            if create.fields.is_empty() {
                problems.push(format!("{at}.fields"), "must declare at least one field");
            }
            check_fields(&create.fields, &format!("{at}.fields"), problems);
        }
    }
}

const NAME_RULE: &str = "must start with a letter and hold only letters, digits and _ (at most 64)";

fn check_fields(fields: &BTreeMap<String, FieldSpec>, at: &str, problems: &mut Problems) {
    if fields.len() > limits::MAX_FIELDS {
        problems.push(at, format_args!("at most {} fields", limits::MAX_FIELDS));
    }
    for (name, spec) in fields {
        if !is_name(name) {
            // The name is the originator's own schema text, not a secret: say which one.
            problems.push(format!("{at}.{name}"), NAME_RULE);
            continue;
        }
        check_field(spec, &format!("{at}.{name}"), problems);
    }
}

fn check_field(spec: &FieldSpec, at: &str, problems: &mut Problems) {
    let is_string = spec.kind == FieldType::String;
    if let Some(max) = spec.max_length {
        if !is_string {
            problems.push(format!("{at}.max_length"), "only applies to type string");
        } else if !(1..=limits::MAX_FIELD_LENGTH).contains(&max) {
            problems.push(
                format!("{at}.max_length"),
                format_args!("must be 1 to {}", limits::MAX_FIELD_LENGTH),
            );
        }
    }
    if let Some(allowed) = &spec.allowed {
        let at = format!("{at}.enum");
        if !is_string {
            problems.push(at, "only applies to type string");
        } else if allowed.is_empty() || allowed.len() > limits::MAX_ENUM_VALUES {
            problems.push(
                at,
                format_args!("must list 1 to {} values", limits::MAX_ENUM_VALUES),
            );
        } else {
            let mut seen = std::collections::BTreeSet::new();
            for value in allowed {
                let too_long = spec
                    .max_length
                    .is_some_and(|max| value.chars().count() > max as usize);
                if value.is_empty() || too_long || value.chars().count() > 200 {
                    problems.push(
                        &at,
                        "values must be 1 to 200 characters and within max_length",
                    );
                    break;
                }
                if !seen.insert(value) {
                    problems.push(&at, "values must be unique");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: serde_json::Value) -> Vec<String> {
        let p: Permissions = serde_json::from_value(json).unwrap();
        let mut problems = Problems::default();
        p.check("permissions", &mut problems);
        problems.0.into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn the_spec_example_is_valid() {
        let fields = check(serde_json::json!({"read": true,
            "write_fields": {"result_ack": {"type": "boolean"}, "note": {"type": "string", "max_length": 200}},
            "create": {"kind": "contact", "max": 10,
                "fields": {"name": {"type": "string", "max_length": 80}, "phone": {"type": "string"}}}}));
        assert!(fields.is_empty(), "{fields:?}");
    }

    #[test]
    fn each_schema_mistake_is_named() {
        let fields = check(serde_json::json!({
            "write_fields": {
                "1bad": {"type": "string"},
                "n": {"type": "number", "max_length": 3},
                "s": {"type": "string", "max_length": 0},
                "e": {"type": "boolean", "enum": ["a"]},
                "d": {"type": "string", "enum": ["a", "a"]},
                "z": {"type": "string", "enum": []}},
            "create": {"kind": "", "max": 0, "fields": {}}}));
        assert_eq!(
            fields,
            [
                "permissions.write_fields.1bad",
                "permissions.write_fields.d.enum",
                "permissions.write_fields.e.enum",
                "permissions.write_fields.n.max_length",
                "permissions.write_fields.s.max_length",
                "permissions.write_fields.z.enum",
                "permissions.create.kind",
                "permissions.create.max",
                "permissions.create.fields",
            ]
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let typo = serde_json::json!({"write_fields": {"a": {"type": "string", "maxlength": 3}}});
        assert!(serde_json::from_value::<Permissions>(typo).is_err());
        let bad_type = serde_json::json!({"write_fields": {"a": {"type": "text"}}});
        assert!(serde_json::from_value::<Permissions>(bad_type).is_err());
    }
}
