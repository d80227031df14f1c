//! `MeterId`: a short, inline, `Copy` meter identifier.
//!
//! Meter ids are on the hot path of every reading (routing, hashing, alert ids), so they
//! are stored inline (no heap allocation) and restricted to a URL- and CQL-safe
//! alphabet. MPANs, serial numbers, UUIDs and the seed firmware's `meter-01` all fit.

use core::fmt;

/// Longest meter id accepted, in bytes.
pub const MAX_METER_ID_LEN: usize = 47;

/// An inline meter identifier: 1 to 47 characters of `[A-Za-z0-9_.:-]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MeterId {
    len: u8,
    bytes: [u8; MAX_METER_ID_LEN],
}

/// Why a string is not a meter id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterIdError {
    /// The id is the empty string.
    Empty,
    /// The id is longer than [`MAX_METER_ID_LEN`] bytes.
    TooLong {
        /// Length of the rejected id in bytes.
        len: usize,
    },
    /// The id contains a character outside `[A-Za-z0-9_.:-]`.
    BadCharacter {
        /// Byte offset of the first bad character.
        position: usize,
    },
}

impl fmt::Display for MeterIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeterIdError::Empty => write!(f, "meter id is empty"),
            MeterIdError::TooLong { len } => {
                write!(
                    f,
                    "meter id is {len} bytes long, at most {MAX_METER_ID_LEN} allowed"
                )
            }
            MeterIdError::BadCharacter { position } => write!(
                f,
                "meter id has a character outside [A-Za-z0-9_.:-] at position {position}"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for MeterIdError {}

impl MeterId {
    /// Parses and checks a meter id.
    pub fn new(text: &str) -> Result<MeterId, MeterIdError> {
        let raw = text.as_bytes();
        if raw.is_empty() {
            return Err(MeterIdError::Empty);
        }
        if raw.len() > MAX_METER_ID_LEN {
            return Err(MeterIdError::TooLong { len: raw.len() });
        }
        if let Some(position) = raw
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')))
        {
            return Err(MeterIdError::BadCharacter { position });
        }
        let mut bytes = [0u8; MAX_METER_ID_LEN];
        bytes[..raw.len()].copy_from_slice(raw);
        Ok(MeterId {
            len: raw.len() as u8,
            bytes,
        })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored (checked in `new`), so this never fails;
        // the fallback keeps the function total without `unsafe`.
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }

    /// The partition (0..n_partitions) that owns this meter: Kafka's default
    /// partitioner (murmur2 of the key, as the Java client and librdkafka's `murmur2`
    /// compute it), so readings keyed by meter id land where gridpulse looks for the
    /// meter whichever Kafka client produced them. Stable across processes and versions.
    pub fn partition(&self, n_partitions: u32) -> u32 {
        let positive = (murmur2(&self.bytes[..self.len as usize]) & 0x7fff_ffff) as u32;
        positive % n_partitions.max(1)
    }
}

/// Kafka's murmur2 (seed 0x9747b28c), as `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut hash: u32 = 0x9747_b28c ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        hash = hash.wrapping_mul(M);
        hash ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        if tail.len() >= 3 {
            hash ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            hash ^= u32::from(tail[1]) << 8;
        }
        hash ^= u32::from(tail[0]);
        hash = hash.wrapping_mul(M);
    }
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(M);
    hash ^= hash >> 15;
    hash as i32
}

impl fmt::Display for MeterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for MeterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeterId({})", self.as_str())
    }
}

impl core::str::FromStr for MeterId {
    type Err = MeterIdError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        MeterId::new(text)
    }
}

impl serde::Serialize for MeterId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for MeterId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MeterIdVisitor;
        impl serde::de::Visitor<'_> for MeterIdVisitor {
            type Value = MeterId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a meter id string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<MeterId, E> {
                MeterId::new(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(MeterIdVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, MeterIdError>) {
        assert_eq!(
            MeterId::new(input).as_ref().map(MeterId::as_str),
            expected.as_ref().map(|s| *s)
        );
    }

    #[test]
    fn accepts_and_rejects() {
        check("meter-01", Ok("meter-01"));
        check("2000012345678", Ok("2000012345678"));
        check("a.b:c_d-e", Ok("a.b:c_d-e"));
        check("", Err(MeterIdError::Empty));
        check("x/y", Err(MeterIdError::BadCharacter { position: 1 }));
        check("é", Err(MeterIdError::BadCharacter { position: 0 }));
        check(&"a".repeat(48), Err(MeterIdError::TooLong { len: 48 }));
        check(&"a".repeat(47), Ok(&"a".repeat(47)));
    }

    #[test]
    fn partition_is_kafkas_murmur2_and_in_range() {
        // The vectors of Kafka's own UtilsTest.testMurmur2: the hash must never change,
        // or meters would move partitions between versions and clients.
        for (input, expected) in [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ] {
            assert_eq!(murmur2(input.as_bytes()), expected, "{input}");
        }
        let id = MeterId::new("meter-01").unwrap();
        for n in 1..20 {
            assert!(id.partition(n) < n);
        }
    }
}
