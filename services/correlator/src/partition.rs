//! Keying alerts onto partitions: the same partition key (tenant and group, see `rules`)
//! always lands on the same partition, so one owner holds all the state needed to group them.
//!
//! FNV-1a is stable across builds and platforms (unlike `std`'s hasher), which matters
//! because every replica and every restart must agree.

use mcplane_shared::alerts::fingerprint::fnv1a64;

/// The partition of `tenant`'s alerts about `service`, in `0..partitions`.
pub fn partition_of(tenant: &str, service: &str, partitions: u32) -> u32 {
    partition_of_key(&format!("{tenant}\n{service}"), partitions)
}

/// The partition of a partition key, in `0..partitions`.
pub fn partition_of_key(key: &str, partitions: u32) -> u32 {
    (fnv1a64(key.as_bytes()) % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_partition_and_keys_spread() {
        assert_eq!(
            partition_of("acme", "checkout", 8),
            partition_of("acme", "checkout", 8)
        );
        let used: std::collections::BTreeSet<u32> = (0..64)
            .map(|i| partition_of("acme", &format!("svc-{i}"), 8))
            .collect();
        assert!(used.len() >= 6, "{used:?}");
        assert!(used.iter().all(|p| *p < 8));
        assert_eq!(partition_of("acme", "checkout", 1), 0);
    }

    #[test]
    fn the_separator_keeps_tenant_and_service_apart() {
        // "ab" + "c" and "a" + "bc" must not collide by construction.
        let a = fnv1a64(b"ab\nc");
        let b = fnv1a64(b"a\nbc");
        assert_ne!(a, b);
    }
}
