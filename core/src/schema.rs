//! Wire schemas: what a type looks like on the wire, for method keys.
//!
//! A method key (see [`MethodKey::from_schema`](crate::MethodKey::from_schema))
//! hashes the [`Shape`] of a method's arguments and of its result, so two
//! peers agree on a key exactly when they agree on what the bytes mean —
//! not on how the types are spelled. `Vec<u8>` and `alloc::vec::Vec<u8>`
//! have one shape; adding a field to a struct changes its shape.
//!
//! A shape follows the serde data model as postcard encodes it, with every
//! name left out (names never go on the wire):
//!
//! - a struct — named fields, tuple struct, newtype or unit struct — is the
//!   [`Shape::Tuple`] of its fields in declaration order; `()` is the empty
//!   tuple;
//! - an enum is a [`Shape::Enum`]: for each variant in declaration order,
//!   the list of its fields (none for a unit variant); `Result<T, E>` is the
//!   enum `Ok(T) | Err(E)`;
//! - `usize` and `isize` are `u64` and `i64`, as serde writes them.
//!
//! Derive [`Schema`](trait@Schema) with `#[derive(courier::Schema)]` next to
//! `Serialize` and `Deserialize`. Implement it by hand for a type whose
//! `Serialize` writes something else than its fields (a custom impl,
//! `#[serde(with = ...)]`, `#[serde(skip)]`, ...): the derive refuses the
//! serde attributes that change what goes on the wire. Recursive types (a
//! tree of itself) have no schema.
//!
//! PROTOCOL.md §5 gives the canonical byte encoding of a shape, which is
//! what the key hashes.
//!
//! ```
//! use courier::schema::Shape;
//! use courier::Schema;
//!
//! #[derive(Schema)]
//! struct Point {
//!     x: i32,
//!     y: i32,
//! }
//! assert_eq!(
//!     *Point::SCHEMA,
//!     Shape::Tuple(&[&Shape::I32, &Shape::I32]),
//! );
//! // The same bytes on the wire, the same shape:
//! assert_eq!(Point::SCHEMA, <(i32, i32)>::SCHEMA);
//! ```

/// The shape of a type's values on the wire; see the [module](self) docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// `bool`: one byte, 0 or 1.
    Bool,
    /// `i8`.
    I8,
    /// `i16` (zigzag varint).
    I16,
    /// `i32` (zigzag varint).
    I32,
    /// `i64` and `isize` (zigzag varint).
    I64,
    /// `i128` (zigzag varint).
    I128,
    /// `u8`: one byte.
    U8,
    /// `u16` (varint).
    U16,
    /// `u32` (varint).
    U32,
    /// `u64` and `usize` (varint).
    U64,
    /// `u128` (varint).
    U128,
    /// `f32`: four bytes little-endian.
    F32,
    /// `f64`: eight bytes little-endian.
    F64,
    /// `char`: its UTF-8 bytes with a length prefix.
    Char,
    /// A UTF-8 string with a length prefix (`String`, `str`).
    String,
    /// `Option<T>`: a byte 0 (none) or 1 followed by the value.
    Option(&'static Shape),
    /// A sequence with a length prefix (`Vec<T>`, `[T]`, sets, ...).
    Seq(&'static Shape),
    /// A map with a length prefix: key, value, key, value, ...
    Map(&'static Shape, &'static Shape),
    /// An array `[T; N]`: exactly `N` values, no length prefix.
    Array(usize, &'static Shape),
    /// Values one after the other: a tuple, a struct's fields, `()`.
    Tuple(&'static [&'static Shape]),
    /// A variant index (varint), then that variant's fields. One entry per
    /// variant, in declaration order, listing its fields.
    Enum(&'static [&'static [&'static Shape]]),
    /// A stream of items, each of this shape, in item frames: a method's
    /// streaming parameter or its streamed result (never a value's shape).
    Stream(&'static Shape),
    /// The result of a notification: no reply at all.
    NoReply,
}

/// A type whose values have a known [`Shape`] on the wire.
///
/// Every argument and result type of a [`service`](crate::service) method
/// needs it: the method key hashes the shapes. Derive it with
/// `#[derive(courier::Schema)]`, or implement it by hand:
///
/// ```
/// use courier::schema::Shape;
/// use courier::Schema;
///
/// /// Serialized as its value in milliseconds (a custom `Serialize`).
/// struct Millis(core::time::Duration);
///
/// impl Schema for Millis {
///     const SCHEMA: &'static Shape = &Shape::U64;
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no wire schema (`courier::Schema`)",
    label = "the method key needs the wire schema of this type",
    note = "derive it with `#[derive(courier::Schema)]`, or implement `courier::Schema` by hand"
)]
pub trait Schema {
    /// The shape of this type's values on the wire.
    const SCHEMA: &'static Shape;
}

/// FNV-1a 64: the offset basis.
pub(crate) const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a 64: one byte into the hash.
pub(crate) const fn fnv_byte(hash: u64, byte: u8) -> u64 {
    (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3)
}

/// FNV-1a 64: bytes into the hash.
pub(crate) const fn fnv_bytes(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash = fnv_byte(hash, bytes[i]);
        i += 1;
    }
    hash
}

/// A count in the canonical encoding: u64 little-endian.
const fn fnv_count(hash: u64, count: usize) -> u64 {
    fnv_bytes(hash, &(count as u64).to_le_bytes())
}

/// The tag that starts a shape in the canonical encoding (PROTOCOL.md §5).
const fn tag(shape: &Shape) -> u8 {
    match shape {
        Shape::Bool => 0x01,
        Shape::I8 => 0x02,
        Shape::I16 => 0x03,
        Shape::I32 => 0x04,
        Shape::I64 => 0x05,
        Shape::I128 => 0x06,
        Shape::U8 => 0x07,
        Shape::U16 => 0x08,
        Shape::U32 => 0x09,
        Shape::U64 => 0x0a,
        Shape::U128 => 0x0b,
        Shape::F32 => 0x0c,
        Shape::F64 => 0x0d,
        Shape::Char => 0x0e,
        Shape::String => 0x0f,
        Shape::Option(_) => 0x10,
        Shape::Seq(_) => 0x11,
        Shape::Map(_, _) => 0x12,
        Shape::Array(_, _) => 0x13,
        Shape::Tuple(_) => 0x14,
        Shape::Enum(_) => 0x15,
        Shape::Stream(_) => 0x20,
        Shape::NoReply => 0x21,
    }
}

/// Feeds the canonical encoding of `shape` (PROTOCOL.md §5) into an FNV-1a
/// 64 hash.
pub(crate) const fn fnv_shape(hash: u64, shape: &Shape) -> u64 {
    let hash = fnv_byte(hash, tag(shape));
    match shape {
        Shape::Option(inner) | Shape::Seq(inner) | Shape::Stream(inner) => fnv_shape(hash, inner),
        Shape::Map(key, value) => fnv_shape(fnv_shape(hash, key), value),
        Shape::Array(len, item) => fnv_shape(fnv_count(hash, *len), item),
        Shape::Tuple(fields) => fnv_fields(hash, fields),
        Shape::Enum(variants) => {
            let mut hash = fnv_count(hash, variants.len());
            let mut i = 0;
            while i < variants.len() {
                hash = fnv_fields(hash, variants[i]);
                i += 1;
            }
            hash
        }
        _ => hash,
    }
}

/// A count, then each shape.
const fn fnv_fields(hash: u64, fields: &[&Shape]) -> u64 {
    let mut hash = fnv_count(hash, fields.len());
    let mut i = 0;
    while i < fields.len() {
        hash = fnv_shape(hash, fields[i]);
        i += 1;
    }
    hash
}

macro_rules! leaf {
    ($($ty:ty => $shape:ident),* $(,)?) => {
        $(
            impl Schema for $ty {
                const SCHEMA: &'static Shape = &Shape::$shape;
            }
        )*
    };
}

leaf! {
    bool => Bool,
    i8 => I8, i16 => I16, i32 => I32, i64 => I64, i128 => I128, isize => I64,
    u8 => U8, u16 => U16, u32 => U32, u64 => U64, u128 => U128, usize => U64,
    f32 => F32, f64 => F64, char => Char, str => String,
    core::num::NonZeroI8 => I8, core::num::NonZeroI16 => I16,
    core::num::NonZeroI32 => I32, core::num::NonZeroI64 => I64,
    core::num::NonZeroI128 => I128, core::num::NonZeroIsize => I64,
    core::num::NonZeroU8 => U8, core::num::NonZeroU16 => U16,
    core::num::NonZeroU32 => U32, core::num::NonZeroU64 => U64,
    core::num::NonZeroU128 => U128, core::num::NonZeroUsize => U64,
}

impl Schema for () {
    const SCHEMA: &'static Shape = &Shape::Tuple(&[]);
}

impl<T: ?Sized> Schema for core::marker::PhantomData<T> {
    // serde writes a unit struct: nothing.
    const SCHEMA: &'static Shape = &Shape::Tuple(&[]);
}

impl Schema for core::time::Duration {
    // serde writes `struct Duration { secs: u64, nanos: u32 }`.
    const SCHEMA: &'static Shape = &Shape::Tuple(&[&Shape::U64, &Shape::U32]);
}

impl<T: Schema> Schema for Option<T> {
    const SCHEMA: &'static Shape = &Shape::Option(T::SCHEMA);
}

impl<T: Schema, E: Schema> Schema for Result<T, E> {
    // serde writes `enum Result { Ok(T), Err(E) }`.
    const SCHEMA: &'static Shape = &Shape::Enum(&[&[T::SCHEMA], &[E::SCHEMA]]);
}

impl<T: Schema> Schema for [T] {
    const SCHEMA: &'static Shape = &Shape::Seq(T::SCHEMA);
}

impl<T: Schema, const N: usize> Schema for [T; N] {
    const SCHEMA: &'static Shape = &Shape::Array(N, T::SCHEMA);
}

impl<T: Schema + ?Sized> Schema for &T {
    const SCHEMA: &'static Shape = T::SCHEMA;
}

macro_rules! tuple {
    ($($name:ident)+) => {
        impl<$($name: Schema),+> Schema for ($($name,)+) {
            const SCHEMA: &'static Shape = &Shape::Tuple(&[$($name::SCHEMA),+]);
        }
    };
}

tuple!(A);
tuple!(A B);
tuple!(A B C);
tuple!(A B C D);
tuple!(A B C D E);
tuple!(A B C D E F);
tuple!(A B C D E F G);
tuple!(A B C D E F G H);
tuple!(A B C D E F G H I);
tuple!(A B C D E F G H I J);
tuple!(A B C D E F G H I J K);
tuple!(A B C D E F G H I J K L);
tuple!(A B C D E F G H I J K L M);
tuple!(A B C D E F G H I J K L M N);
tuple!(A B C D E F G H I J K L M N O);
tuple!(A B C D E F G H I J K L M N O P);

#[cfg(feature = "alloc")]
mod alloc_impls {
    use alloc::boxed::Box;
    use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
    use alloc::string::String;
    use alloc::vec::Vec;

    use super::{Schema, Shape};

    impl Schema for String {
        const SCHEMA: &'static Shape = &Shape::String;
    }

    impl<T: Schema> Schema for Vec<T> {
        const SCHEMA: &'static Shape = &Shape::Seq(T::SCHEMA);
    }

    impl<T: Schema> Schema for VecDeque<T> {
        const SCHEMA: &'static Shape = &Shape::Seq(T::SCHEMA);
    }

    impl<T: Schema> Schema for BTreeSet<T> {
        const SCHEMA: &'static Shape = &Shape::Seq(T::SCHEMA);
    }

    impl<K: Schema, V: Schema> Schema for BTreeMap<K, V> {
        const SCHEMA: &'static Shape = &Shape::Map(K::SCHEMA, V::SCHEMA);
    }

    impl<T: Schema + ?Sized> Schema for Box<T> {
        const SCHEMA: &'static Shape = T::SCHEMA;
    }
}

mod heapless_impls {
    use super::{Schema, Shape};

    // The wire format of `Vec<T>` and `String`, so the keys are theirs.
    impl<T: Schema, const N: usize> Schema for heapless::Vec<T, N> {
        const SCHEMA: &'static Shape = &Shape::Seq(T::SCHEMA);
    }

    impl<const N: usize> Schema for heapless::String<N> {
        const SCHEMA: &'static Shape = &Shape::String;
    }
}

#[cfg(feature = "std")]
mod std_impls {
    use std::collections::{HashMap, HashSet};

    use super::{Schema, Shape};

    impl<T: Schema, S> Schema for HashSet<T, S> {
        const SCHEMA: &'static Shape = &Shape::Seq(T::SCHEMA);
    }

    impl<K: Schema, V: Schema, S> Schema for HashMap<K, V, S> {
        const SCHEMA: &'static Shape = &Shape::Map(K::SCHEMA, V::SCHEMA);
    }
}

/// The shape of a stream of `T` items ([`Shape::Stream`]), as a type, for
/// the method keys the [`service`](crate::service) attribute computes.
#[doc(hidden)]
pub struct StreamOf<T: ?Sized>(core::marker::PhantomData<T>);

impl<T: Schema + ?Sized> Schema for StreamOf<T> {
    const SCHEMA: &'static Shape = &Shape::Stream(T::SCHEMA);
}

#[cfg(test)]
mod tests {
    use alloc::string::String;
    use alloc::vec::Vec;

    use super::*;

    /// FNV-1a 64 of `bytes`, written out plainly.
    fn fnv(bytes: &[u8]) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x100_0000_01b3);
        }
        hash
    }

    fn encoded(shape: &Shape) -> u64 {
        fnv_shape(FNV_BASIS, shape)
    }

    #[test]
    fn leaves_and_containers_encode_as_the_spec_says() {
        assert_eq!(encoded(u64::SCHEMA), fnv(&[0x0a]));
        assert_eq!(encoded(usize::SCHEMA), fnv(&[0x0a]));
        assert_eq!(encoded(<Option<bool>>::SCHEMA), fnv(&[0x10, 0x01]));
        assert_eq!(encoded(<[u8]>::SCHEMA), fnv(&[0x11, 0x07]));
        assert_eq!(
            encoded(<[u16; 3]>::SCHEMA),
            fnv(&[0x13, 3, 0, 0, 0, 0, 0, 0, 0, 0x08])
        );
        assert_eq!(encoded(<()>::SCHEMA), fnv(&[0x14, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(
            encoded(<(u8, String)>::SCHEMA),
            fnv(&[0x14, 2, 0, 0, 0, 0, 0, 0, 0, 0x07, 0x0f])
        );
        assert_eq!(
            encoded(<Result<u32, ()>>::SCHEMA),
            fnv(&[
                0x15, 2, 0, 0, 0, 0, 0, 0, 0, // two variants
                1, 0, 0, 0, 0, 0, 0, 0, 0x09, // Ok(u32)
                1, 0, 0, 0, 0, 0, 0, 0, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, // Err(())
            ])
        );
    }

    #[test]
    fn counts_keep_nesting_apart() {
        // Without counts both would be "tuple, seq, tuple, u8, u8".
        let a = <(Vec<(u8,)>, u8)>::SCHEMA;
        let b = <(Vec<(u8, u8)>,)>::SCHEMA;
        assert_ne!(encoded(a), encoded(b));
        // An enum with one two-field variant is not one with two variants.
        let c = Shape::Enum(&[&[&Shape::U8, &Shape::U8]]);
        let d = Shape::Enum(&[&[&Shape::U8], &[&Shape::U8]]);
        assert_ne!(encoded(&c), encoded(&d));
    }

    #[test]
    fn spelling_does_not_matter_but_the_wire_does() {
        assert_eq!(
            encoded(<alloc::vec::Vec<u8>>::SCHEMA),
            encoded(<Vec<u8>>::SCHEMA)
        );
        assert_eq!(
            encoded(<alloc::boxed::Box<str>>::SCHEMA),
            encoded(<String>::SCHEMA)
        );
        assert_ne!(encoded(<Vec<u8>>::SCHEMA), encoded(<String>::SCHEMA));
        assert_ne!(encoded(<u32>::SCHEMA), encoded(<u64>::SCHEMA));
    }
}
