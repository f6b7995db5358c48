//! The serde deserializer over the positioned tree: [`De`] reads one [`Node`] for the schema's
//! `Deserialize` impls and skips what the [`Ctx`] sets aside; its errors ([`DeError`]) carry the
//! position and path of the node they are about: the value; the key for an unknown field; the
//! key holding the mapping for a missing field.

use std::collections::HashSet;

use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer as _, MapAccess, SeqAccess, Visitor,
};

use super::{
    error::{DeError, ErrKind, explain},
    problem::{Pos, Seg, child},
    scalar::visit_plain,
    tree::{Kind, Node},
};

/// What the deserializer skips on this read (set by the recovering loop of `decode`).
#[derive(Debug, Default)]
pub(super) struct Ctx {
    /// Nodes set aside (skipped as if absent).
    pub(super) masks: HashSet<Vec<Seg>>,
    /// Read `version: 1` in place of a missing or bad `version` (to check the rest).
    pub(super) synth_version: bool,
}

/// Deserializes one node.
#[derive(Debug)]
pub(super) struct De<'a> {
    node: &'a Node,
    path: Vec<Seg>,
    /// The key holding this node, when it is a mapping entry's value.
    key_pos: Option<Pos>,
    ctx: &'a Ctx,
}

impl<'a> De<'a> {
    /// Deserializes the document's root, skipping what `ctx` sets aside.
    pub(super) fn root(node: &'a Node, ctx: &'a Ctx) -> Self {
        Self {
            node,
            path: Vec::new(),
            key_pos: None,
            ctx,
        }
    }

    /// Errors are about this node; a missing field is about the key holding it.
    fn locate(&self, e: DeError) -> DeError {
        let pos = match e.kind {
            ErrKind::Missing(_) => self.key_pos.unwrap_or(self.node.pos),
            _ => self.node.pos,
        };
        e.locate(pos, &self.path)
    }

    fn is_null(&self) -> bool {
        matches!(&self.node.kind, Kind::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    fn is_empty_plain(&self) -> bool {
        matches!(&self.node.kind, Kind::Scalar { text, plain: true } if text.is_empty())
    }

    fn seq<'de, V: Visitor<'de>>(&self, items: &[Node], v: V) -> Result<V::Value, DeError> {
        v.visit_seq(SeqAcc {
            items: items.iter().enumerate(),
            path: &self.path,
            ctx: self.ctx,
        })
    }

    fn map<'de, V: Visitor<'de>>(
        &self,
        entries: &[(Node, Node)],
        v: V,
    ) -> Result<V::Value, DeError> {
        let root = self.path.is_empty();
        v.visit_map(MapAcc {
            entries: entries.iter(),
            path: &self.path,
            ctx: self.ctx,
            pending: None,
            synth: (root && self.ctx.synth_version).then(synthetic_version),
            saw_version: false,
        })
    }
}

/// The root's stand-in `version: 1`, when the file's `version` is missing or bad.
fn synthetic_version() -> (Node, Node) {
    let scalar = |t: &str| Node {
        kind: Kind::Scalar {
            text: t.into(),
            plain: true,
        },
        pos: Pos { line: 1, column: 1 },
    };
    (scalar("version"), scalar("1"))
}

impl<'de> Deserializer<'de> for De<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            Kind::Scalar { text, plain: true } => visit_plain(text, v),
            Kind::Scalar { text, plain: false } => v.visit_str(text),
            Kind::Seq(items) => self.seq(items, v),
            Kind::Map(entries) => self.map(entries, v),
        };
        r.map_err(|e| self.locate(e))
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Scalar { text, .. } => v.visit_str(text).map_err(|e| self.locate(e)),
            _ => self.deserialize_any(v),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = if self.is_null() {
            v.visit_none()
        } else {
            let (pos, path) = (self.node.pos, self.path.clone());
            return v.visit_some(self).map_err(|e| e.locate(pos, &path));
        };
        r.map_err(|e| self.locate(e))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        if self.is_null() {
            v.visit_unit().map_err(|e| self.locate(e))
        } else {
            self.deserialize_any(v)
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        let (pos, path) = (self.node.pos, self.path.clone());
        v.visit_newtype_struct(self)
            .map_err(|e| e.locate(pos, &path))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        if self.is_empty_plain() {
            return self.seq(&[], v).map_err(|e| self.locate(e));
        }
        self.deserialize_any(v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        if self.is_empty_plain() {
            return self.map(&[], v).map_err(|e| self.locate(e));
        }
        self.deserialize_any(v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Scalar { text, .. } => {
                let access: de::value::StrDeserializer<'_, DeError> =
                    text.as_str().into_deserializer();
                v.visit_enum(access).map_err(|e| self.locate(e))
            }
            _ => self.deserialize_any(v),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
    }
}

/// A list's elements, skipping those set aside.
#[derive(Debug)]
struct SeqAcc<'a> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    path: &'a [Seg],
    ctx: &'a Ctx,
}

impl<'de> SeqAccess<'de> for SeqAcc<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        for (i, node) in self.items.by_ref() {
            let path = child(self.path, Seg::Index(i));
            if self.ctx.masks.contains(&path) {
                continue;
            }
            let de = De {
                node,
                path: path.clone(),
                key_pos: None,
                ctx: self.ctx,
            };
            return seed
                .deserialize(de)
                .map(Some)
                .map_err(|e| explain(e, node, &path));
        }
        Ok(None)
    }
}

/// A mapping's entries, skipping those set aside (and the root's `version` when it is
/// replaced by the stand-in).
#[derive(Debug)]
struct MapAcc<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    path: &'a [Seg],
    ctx: &'a Ctx,
    /// The value whose key was just read, its path and its key's position.
    pending: Option<(&'a Node, Vec<Seg>, Pos)>,
    /// The root's stand-in `version: 1`, read after the entries.
    synth: Option<(Node, Node)>,
    saw_version: bool,
}

impl<'de> MapAccess<'de> for MapAcc<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        for (k, v) in self.entries.by_ref() {
            let path = child(self.path, Seg::Key(k.key_text()));
            if self.ctx.masks.contains(&path)
                || (self.synth.is_some() && path == [Seg::Key("version".into())])
            {
                continue;
            }
            self.pending = Some((v, path.clone(), k.pos));
            let de = De {
                node: k,
                path: path.clone(),
                key_pos: None,
                ctx: self.ctx,
            };
            return seed
                .deserialize(de)
                .map(Some)
                .map_err(|e| e.locate(k.pos, &path));
        }
        if let Some((k, _)) = &self.synth
            && !self.saw_version
        {
            self.saw_version = true;
            let name = k.key_text();
            return seed
                .deserialize(name.as_str().into_deserializer())
                .map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        if let Some((value, path, key_pos)) = self.pending.take() {
            let de = De {
                node: value,
                path: path.clone(),
                key_pos: Some(key_pos),
                ctx: self.ctx,
            };
            return seed.deserialize(de).map_err(|e| explain(e, value, &path));
        }
        // The synthetic `version: 1`.
        let (_, v) = self
            .synth
            .as_ref()
            .ok_or_else(|| <DeError as de::Error>::custom("internal error: value without a key"))?;
        let de = De {
            node: v,
            path: vec![Seg::Key("version".into())],
            key_pos: None,
            ctx: self.ctx,
        };
        seed.deserialize(de)
    }
}
