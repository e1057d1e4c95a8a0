//! Validation problems, each naming the field it is about (`permissions.write_fields.note.max_length`).

use serde::Serialize;
use std::fmt;

/// One thing wrong with a request, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldProblem {
    /// A dotted path to the field (`factor.value`, `grants[3].expires_at`).
    pub field: String,
    /// What is wrong, in words; never the offending value (it may be a secret).
    pub message: String,
}

/// Every problem found in one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<FieldProblem>);

impl Problems {
    /// Records a problem at `field`.
    pub fn push(&mut self, field: impl Into<String>, message: impl fmt::Display) {
        self.0.push(FieldProblem {
            field: field.into(),
            message: message.to_string(),
        });
    }

    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Prefixes every path, e.g. with `grants[3].` for a batch.
    pub fn prefixed(self, prefix: &str) -> Self {
        Self(
            self.0
                .into_iter()
                .map(|p| FieldProblem {
                    field: format!("{prefix}{}", p.field),
                    message: p.message,
                })
                .collect(),
        )
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", p.field, p.message)?;
        }
        Ok(())
    }
}

/// Whether `s` is a field or kind name: an ASCII letter, then letters, digits or `_`, at most 64.
pub fn is_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && s.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
