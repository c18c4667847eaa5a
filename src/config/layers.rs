//! The configuration's layers as one tree to deserialize: the TOML file's values, and over them
//! the environment's, which are text. A value from the environment is read as whatever the
//! configuration expects where it lands — a number, a boolean or a list as TOML writes them, or
//! text — so a password of digits stays text and a port written `2525` is a number, with no
//! guessing and no second try.

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};
use std::collections::BTreeMap;
use toml::de::Error;

/// One node of the tree.
pub(super) enum Node {
    /// From the file (or nothing overrides inside it).
    Toml(toml::Value),
    /// From the environment, as given.
    Env(String),
    /// A table with something from the environment somewhere inside.
    Table(BTreeMap<String, Node>),
}

impl Node {
    /// Puts the environment's `raw` at `path`, over what the file says.
    pub(super) fn set(&mut self, path: &[String], raw: &str) {
        let Some((first, rest)) = path.split_first() else {
            *self = Node::Env(raw.to_string());
            return;
        };
        if let Node::Toml(toml::Value::Table(t)) = self {
            let t = std::mem::take(t);
            *self = Node::Table(t.into_iter().map(|(k, v)| (k, Node::Toml(v))).collect());
        }
        if !matches!(self, Node::Table(_)) {
            *self = Node::Table(BTreeMap::new());
        }
        if let Node::Table(map) = self {
            map.entry(first.clone()).or_insert_with(|| Node::Table(BTreeMap::new())).set(rest, raw);
        }
    }
}

/// A value from the environment read as TOML (numbers, booleans, lists), else as text.
fn as_toml(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Asks each kind of node for a value: the file's through TOML's own deserializer, a table as a
/// map (anything else asked of a table is refused by the visitor), the environment's text as
/// the type asked for: read as TOML would (`as_toml`: numbers, booleans, lists), as text
/// (`as_text`), or as the one method given says.
macro_rules! each_kind {
    (as_toml: $($method:ident),* $(,)?) => {
        $( each_kind!(@one $method () |raw, v| as_toml(&raw).$method(v)); )*
    };
    (as_text: $($method:ident),* $(,)?) => {
        $( each_kind!(@one $method () |raw, v| v.visit_string(text(raw))); )*
    };
    (@one $method:ident ($($arg:ident: $ty:ty),*) $env:expr) => {
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Error> {
            match self {
                Node::Toml(v) => v.$method($($arg,)* visitor),
                Node::Table(map) => visitor.visit_map(Entries { rest: map.into_iter(), value: None }),
                Node::Env(raw) => {
                    let env: fn(String, V) -> Result<V::Value, Error> = $env;
                    env(raw, visitor)
                }
            }
        }
    };
}

/// A value from the environment where text is expected: a TOML string as written (`"s3cret"`
/// with its quotes and escapes read), else the text as it is (`123456`, `true`).
fn text(raw: String) -> String {
    match as_toml(&raw) {
        toml::Value::String(s) => s,
        _ => raw,
    }
}

impl<'de> Deserializer<'de> for Node {
    type Error = Error;

    each_kind!(as_toml: deserialize_any, deserialize_bool, deserialize_unit, deserialize_seq, deserialize_map);
    each_kind!(as_toml: deserialize_i8, deserialize_i16, deserialize_i32, deserialize_i64, deserialize_f32, deserialize_f64);
    each_kind!(as_toml: deserialize_u8, deserialize_u16, deserialize_u32, deserialize_u64);
    each_kind!(as_text: deserialize_char, deserialize_str, deserialize_string, deserialize_identifier);
    each_kind!(as_text: deserialize_bytes, deserialize_byte_buf);
    each_kind!(@one deserialize_ignored_any () |_, v| v.visit_unit());
    each_kind!(@one deserialize_unit_struct (name: &'static str) |raw, v| as_toml(&raw).deserialize_any(v));
    each_kind!(@one deserialize_tuple (len: usize) |raw, v| as_toml(&raw).deserialize_seq(v));
    each_kind!(@one deserialize_tuple_struct (name: &'static str, len: usize) |raw, v| as_toml(&raw).deserialize_seq(v));
    each_kind!(@one deserialize_struct (name: &'static str, fields: &'static [&'static str]) |raw, v| {
        as_toml(&raw).deserialize_any(v)
    });
    each_kind!(@one deserialize_enum (name: &'static str, variants: &'static [&'static str]) |raw, v| {
        v.visit_enum(text(raw).into_deserializer())
    });

    /// Present: whatever is set, from either layer.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Toml(v) => v.deserialize_option(visitor),
            node => visitor.visit_some(node),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Toml(v) => v.deserialize_newtype_struct(name, visitor),
            node => visitor.visit_newtype_struct(node),
        }
    }
}

/// A table's entries, one at a time.
struct Entries {
    rest: std::collections::btree_map::IntoIter<String, Node>,
    value: Option<Node>,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.rest.next() else { return Ok(None) };
        self.value = Some(value);
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(value),
            None => Err(de::Error::custom("a value without its key")),
        }
    }
}
