//! A strict reader over JSON objects that names the exact field of every
//! problem and refuses unknown fields (the hand-written equivalent of serde's
//! `deny_unknown_fields`, with field paths in the messages).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::manifest::FieldError;
use super::types::EnvName;

/// An object being read; remembers which keys were taken.
pub(super) struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
    seen: BTreeSet<&'a str>,
}

impl<'a> Obj<'a> {
    /// The document root, which must be an object.
    /// Unknown keys are refused at once, so a misspelt key is reported as
    /// unknown rather than as a missing required one.
    pub(super) fn root(value: &'a Value, known: &[&str]) -> Result<Obj<'a>, FieldError> {
        match value {
            Value::Object(map) => Obj {
                path: String::new(),
                map,
                seen: BTreeSet::new(),
            }
            .known(known),
            other => Err(FieldError::new(
                "(root)",
                format!("expected an object, found {}", kind(other)),
            )),
        }
    }

    /// The path of `key` in this object.
    pub(super) fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// An error about `key` in this object.
    pub(super) fn field_error(&self, key: &str, reason: impl Into<String>) -> FieldError {
        FieldError::new(self.path_of(key), reason)
    }

    /// The error for a required `key` that is absent.
    pub(super) fn missing(&self, key: &str) -> FieldError {
        self.field_error(key, "is required")
    }

    fn take(&mut self, key: &str) -> Option<(&'a str, &'a Value)> {
        let (k, v) = self.map.get_key_value(key)?;
        self.seen.insert(k.as_str());
        Some((k.as_str(), v))
    }

    /// A nested object (a TOML table) whose keys must all be in `known`.
    pub(super) fn obj(&mut self, key: &str, known: &[&str]) -> Result<Option<Obj<'a>>, FieldError> {
        match self.any_obj(key)? {
            None => Ok(None),
            Some(obj) => obj.known(known).map(Some),
        }
    }

    /// A nested object with arbitrary keys.
    fn any_obj(&mut self, key: &str) -> Result<Option<Obj<'a>>, FieldError> {
        match self.take(key) {
            None => Ok(None),
            Some((_, Value::Object(map))) => Ok(Some(Obj {
                path: self.path_of(key),
                map,
                seen: BTreeSet::new(),
            })),
            Some((_, other)) => {
                Err(self.field_error(key, format!("expected a table, found {}", kind(other))))
            }
        }
    }

    /// An optional string, checked by `parse`.
    pub(super) fn opt_str<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, FieldError> {
        match self.take(key) {
            None => Ok(None),
            Some((_, Value::String(s))) => parse(s).map(Some).map_err(|r| self.field_error(key, r)),
            Some((_, other)) => {
                Err(self.field_error(key, format!("expected a string, found {}", kind(other))))
            }
        }
    }

    /// An optional boolean; absent is `false`.
    pub(super) fn opt_bool(&mut self, key: &str) -> Result<bool, FieldError> {
        match self.take(key) {
            None => Ok(false),
            Some((_, Value::Bool(b))) => Ok(*b),
            Some((_, other)) => Err(self.field_error(
                key,
                format!("expected true or false, found {}", kind(other)),
            )),
        }
    }

    /// An optional non-negative integer that fits 32 bits.
    pub(super) fn opt_u32(&mut self, key: &str) -> Result<Option<u32>, FieldError> {
        match self.take(key) {
            None => Ok(None),
            Some((_, v)) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    self.field_error(
                        key,
                        format!(
                            "expected an integer from 0 to 4294967295, found {}",
                            show(v)
                        ),
                    )
                }),
        }
    }

    /// An optional positive number of seconds.
    pub(super) fn opt_ttl(&mut self, key: &str) -> Result<Option<u64>, FieldError> {
        match self.take(key) {
            None => Ok(None),
            Some((_, v)) => match v.as_u64() {
                Some(n) if n > 0 => Ok(Some(n)),
                _ => Err(self.field_error(
                    key,
                    format!(
                        "expected a positive integer number of seconds, found {}",
                        show(v)
                    ),
                )),
            },
        }
    }

    /// An optional array of strings read as a set: each item checked by
    /// `parse`, duplicates refused.
    pub(super) fn set<T: Ord>(
        &mut self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<BTreeSet<T>, FieldError> {
        let mut out = BTreeSet::new();
        let items = match self.take(key) {
            None => return Ok(out),
            Some((_, Value::Array(items))) => items,
            Some((_, other)) => {
                return Err(self.field_error(
                    key,
                    format!("expected an array of strings, found {}", kind(other)),
                ));
            }
        };
        for (i, item) in items.iter().enumerate() {
            let at = format!("{key}[{i}]");
            let Value::String(s) = item else {
                return Err(
                    self.field_error(&at, format!("expected a string, found {}", kind(item)))
                );
            };
            let parsed = parse(s).map_err(|r| self.field_error(&at, r))?;
            if !out.insert(parsed) {
                return Err(self.field_error(&at, format!("{s:?} is listed twice")));
            }
        }
        Ok(out)
    }

    /// An optional table of environment variable names to exact values.
    pub(super) fn env(&mut self, key: &str) -> Result<BTreeMap<EnvName, String>, FieldError> {
        let mut out = BTreeMap::new();
        let Some(mut table) = self.any_obj(key)? else {
            return Ok(out);
        };
        let names: Vec<&'a String> = table.map.keys().collect();
        for name in names {
            let env_name = EnvName::new(name).map_err(|r| table.field_error(name, r))?;
            let value = table.opt_str(name, |s| {
                if s.contains('\0') || s.len() > 4096 {
                    Err("value must not contain NUL and be at most 4096 bytes".to_owned())
                } else {
                    Ok(s.to_owned())
                }
            })?;
            if let Some(value) = value {
                out.insert(env_name, value);
            }
        }
        Ok(out)
    }

    /// Refuses any key not in `known`.
    fn known(self, known: &[&str]) -> Result<Obj<'a>, FieldError> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(self),
            Some(k) => Err(self.field_error(k, "unknown field")),
        }
    }

    /// Refuses any key that was not taken.
    pub(super) fn finish(self) -> Result<(), FieldError> {
        match self.map.keys().find(|k| !self.seen.contains(k.as_str())) {
            None => Ok(()),
            Some(k) => Err(self.field_error(k, "unknown field")),
        }
    }
}

/// `Some(value)` if `present`: empty sections are the same as absent ones.
pub(super) fn opt<T>(present: bool, value: T) -> Option<T> {
    present.then_some(value)
}

/// The value of a required field, or the error naming it.
pub(super) fn req<T>(value: Option<T>, obj: &Obj<'_>, key: &str) -> Result<T, FieldError> {
    value.ok_or_else(|| obj.missing(key))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        other => kind(other).to_owned(),
    }
}
