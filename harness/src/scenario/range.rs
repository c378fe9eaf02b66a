//! Inclusive ranges that a seed draws from.

use std::fmt;
use std::marker::PhantomData;

use rand::distr::uniform::SampleUniform;
use rand::Rng;
use serde::de::{self, Deserializer, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// An inclusive range drawn from the seed.
///
/// In TOML either a number (`count = 2`, meaning exactly 2) or a table
/// (`count = { min = 1, max = 3 }`). It serializes as the table, so a report shows both bounds
/// whichever form the file used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Range<T> {
    /// Smallest value that may be drawn.
    pub min: T,
    /// Largest value that may be drawn.
    pub max: T,
}

impl<T: Copy> Range<T> {
    /// The range `min..=max`.
    pub const fn new(min: T, max: T) -> Self {
        Range { min, max }
    }

    /// The range holding only `value`.
    pub const fn exactly(value: T) -> Self {
        Range {
            min: value,
            max: value,
        }
    }
}

impl<T: SampleUniform + PartialOrd + Copy> Range<T> {
    /// Draws a value uniformly from `min..=max`.
    ///
    /// Uses `rng` even when `min == max`, so whether a draw happens never depends on the
    /// scenario's numbers. (How many words it takes may: rand rejects a biased sample now and
    /// then, so a changed range can shift later draws from the same generator.)
    ///
    /// # Panics
    /// If `min > max`; [`super::parse`] rejects such ranges.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R) -> T {
        rng.random_range(self.min..=self.max)
    }
}

impl<T: fmt::Display + PartialEq> fmt::Display for Range<T> {
    /// `3` for an exact value, `1..=3` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}..={}", self.min, self.max)
        }
    }
}

impl<'de, T: Deserialize<'de> + Copy> Deserialize<'de> for Range<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RangeVisitor(PhantomData))
    }
}

struct RangeVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de> + Copy> Visitor<'de> for RangeVisitor<T> {
    type Value = Range<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative integer or a table `{ min = .., max = .. }`")
    }

    // A bare number is the range holding only that number. `T` does the bounds check, so
    // `-1` or `5000000000` get serde's usual "expected u32" message.
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        T::deserialize(value.into_deserializer()).map(Range::exactly)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        T::deserialize(value.into_deserializer()).map(Range::exactly)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        const FIELDS: &[&str] = &["min", "max"];
        let (mut min, mut max) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                "min" => &mut min,
                "max" => &mut max,
                _ => return Err(de::Error::unknown_field(&key, FIELDS)),
            };
            *slot = Some(map.next_value()?);
        }
        Ok(Range {
            min: min.ok_or_else(|| de::Error::missing_field("min"))?,
            max: max.ok_or_else(|| de::Error::missing_field("max"))?,
        })
    }
}
