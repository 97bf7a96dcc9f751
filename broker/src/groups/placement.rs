//! Where a group lives: the partition of `__consumer_offsets` that holds its records, by
//! Kafka's own rule (`Utils.abs(groupId.hashCode()) % partitionCount`), so a group's records
//! sit in the partition an operator who knows Kafka expects. The shard owning that partition
//! (recorded in the metadata image) is the group's coordinator.
//!
//! Never: depends on anything but the group id and the partition count (every shard must
//! compute the same answer).

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Java's `String.hashCode()`: `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16 code units, in
/// wrapping 32-bit arithmetic.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// Kafka's `Utils.abs`: `Math.abs` except that `i32::MIN` maps to 0 (not to itself).
fn kafka_abs(n: i32) -> i32 {
    if n == i32::MIN { 0 } else { n.abs() }
}

/// The `__consumer_offsets` partition of `group_id` among `partitions` partitions.
pub fn partition_for(group_id: &str, partitions: usize) -> i32 {
    let n = i32::try_from(partitions.max(1)).unwrap_or(i32::MAX);
    kafka_abs(java_string_hash(group_id)) % n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_java() {
        // Values from Java's "...".hashCode().
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("console-consumer-12345"), 158_455_506);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        // A non-BMP character counts as two UTF-16 units, as in Java.
        assert_eq!(java_string_hash("😀"), 1_772_899);
    }

    #[test]
    fn partition_is_kafkas() {
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        assert_eq!(partition_for("console-consumer-12345", 50), 6);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("anything", 1), 0);
        assert_eq!(kafka_abs(i32::MIN), 0);
    }
}
