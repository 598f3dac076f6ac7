//! Per-chunk Bloom filters for stream filtering (RabbitMQ 3.13), laid out as osiris lays them
//! out: `size` bytes, two bit positions per filter value in bits `1..8*size`, and bit 0 set when
//! the chunk also holds entries without a filter value. A chunk whose entries have no filter
//! values at all gets no filter (Bloom size 0).
//!
//! Bits are numbered from the most significant bit of the first byte, as Erlang bitstrings are.
//! The hash is brook's own (osiris uses `erlang:phash2`): the filter never leaves the broker, so
//! only brook has to agree with itself. It must stay stable across brook versions, since filters
//! are stored on disk; hence a fixed FNV-1a + mix, not `std`'s unspecified hasher.

/// RabbitMQ's default `stream-filter-size-bytes`.
pub const DEFAULT_SIZE: u8 = 16;

fn hash(value: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in value {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64 finalizer: spreads FNV's weak high bits.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The two bit positions of a value in a filter of `bits` bits, both in `1..bits`.
fn positions(value: &[u8], bits: u32) -> (u32, u32) {
    let h = hash(value);
    let range = u64::from(bits - 1);
    (
        (h as u32 as u64 % range) as u32 + 1,
        ((h >> 32) % range) as u32 + 1,
    )
}

fn bit_set(filter: &[u8], n: u32) -> bool {
    filter
        .get((n / 8) as usize)
        .is_some_and(|b| b & (0x80 >> (n % 8)) != 0)
}

fn set_bit(filter: &mut [u8], n: u32) {
    if let Some(b) = filter.get_mut((n / 8) as usize) {
        *b |= 0x80 >> (n % 8);
    }
}

/// Accumulates the filter of the chunk being written.
#[derive(Debug)]
pub(crate) struct BloomBuilder {
    size: u8,
    bits: Vec<u8>,
    filtered: bool,
    unfiltered: bool,
}

impl BloomBuilder {
    pub(crate) fn new(size: u8) -> Self {
        Self {
            size: size.max(DEFAULT_SIZE),
            bits: Vec::new(),
            filtered: false,
            unfiltered: false,
        }
    }

    /// Records one entry's filter value; `None` or empty means "no filter value".
    pub(crate) fn insert(&mut self, value: Option<&[u8]>) {
        match value.filter(|v| !v.is_empty()) {
            None => self.unfiltered = true,
            Some(v) => {
                if self.bits.is_empty() {
                    self.bits = vec![0; usize::from(self.size)];
                }
                let (a, b) = positions(v, u32::from(self.size) * 8);
                set_bit(&mut self.bits, a);
                set_bit(&mut self.bits, b);
                self.filtered = true;
            }
        }
    }

    /// The filter bytes for the chunk (empty when no entry had a filter value).
    pub(crate) fn bytes(&mut self) -> &[u8] {
        if !self.filtered {
            return &[];
        }
        if self.unfiltered {
            set_bit(&mut self.bits, 0);
        }
        &self.bits
    }

    pub(crate) fn clear(&mut self) {
        self.bits.fill(0);
        self.filtered = false;
        self.unfiltered = false;
    }
}

/// A subscription's filter: which chunks may hold entries it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Matcher {
    values: Vec<Vec<u8>>,
    match_unfiltered: bool,
}

impl Matcher {
    /// From Subscribe properties: `filter.<anything>` values and `match-unfiltered`. `None` when
    /// the subscription has no filter (it gets every chunk).
    pub(crate) fn from_properties(props: &[(String, String)]) -> Option<Self> {
        let values: Vec<Vec<u8>> = props
            .iter()
            .filter(|(k, _)| k.starts_with("filter."))
            .map(|(_, v)| v.as_bytes().to_vec())
            .collect();
        if values.is_empty() {
            return None;
        }
        let match_unfiltered = brook_protocol::property(props, "match-unfiltered") == Some("true");
        Some(Self {
            values,
            match_unfiltered,
        })
    }

    /// Whether a chunk with this stored filter may hold a wanted entry. Filters are
    /// probabilistic: clients filter the messages of delivered chunks again.
    pub(crate) fn matches(&self, filter: &[u8]) -> bool {
        if filter.is_empty() {
            // Only entries without filter values.
            return self.match_unfiltered;
        }
        let bits = filter.len() as u32 * 8;
        (self.match_unfiltered && bit_set(filter, 0))
            || self.values.iter().any(|v| {
                let (a, b) = positions(v, bits);
                bit_set(filter, a) && bit_set(filter, b)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::props;

    #[test]
    fn chunks_without_filter_values_get_no_filter() {
        let mut b = BloomBuilder::new(16);
        b.insert(None);
        b.insert(Some(b""));
        assert!(b.bytes().is_empty());
    }

    #[test]
    fn matching() {
        let mut b = BloomBuilder::new(16);
        b.insert(Some(b"apple"));
        b.insert(Some(b"pear"));
        let filter = b.bytes().to_vec();
        assert_eq!(filter.len(), 16);
        assert_eq!(filter[0] & 0x80, 0, "bit 0: no unfiltered entries");
        let m = |kv: &[(&str, &str)]| Matcher::from_properties(&props(kv)).unwrap();
        assert!(m(&[("filter.0", "apple")]).matches(&filter));
        assert!(m(&[("filter.1", "kiwi"), ("filter.2", "pear")]).matches(&filter));
        // No false negatives, and false positives are rare: 2 values in 128 bits.
        let misses = (0..1000)
            .filter(|i| m(&[("filter.0", &format!("other-{i}"))]).matches(&filter))
            .count();
        assert!(misses < 20, "{misses} false positives in 1000");
        // An unfiltered chunk matches only with match-unfiltered.
        assert!(!m(&[("filter.0", "apple")]).matches(&[]));
        assert!(m(&[("filter.0", "apple"), ("match-unfiltered", "true")]).matches(&[]));
        // A mixed chunk sets bit 0.
        b.insert(None);
        let mixed = b.bytes().to_vec();
        assert!(m(&[("filter.0", "kiwi"), ("match-unfiltered", "true")]).matches(&mixed));
        assert!(Matcher::from_properties(&props(&[("name", "x")])).is_none());
    }

    #[test]
    fn positions_are_stable() {
        // Filters are stored on disk: these must never change between brook versions.
        assert_eq!(positions(b"apple", 128), (124, 43));
        assert_eq!(positions(b"kiwi", 2040), (697, 336));
        assert_eq!(positions(b"a", 2040), (827, 531));
    }
}
