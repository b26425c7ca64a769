//! Which offsets may be committed: per partition, the contiguous prefix of records whose
//! publish JetStream has acknowledged.
//!
//! Many publishes are in flight at once and their acks come back in any order, but a Kafka
//! commit says "everything before this offset is done". So a record's offset counts only once
//! every record read before it on the same partition is acknowledged too; a crash then replays
//! from the first unacknowledged record, and the replays are dropped by JetStream's
//! `Nats-Msg-Id` deduplication. A partition taken away by a rebalance is forgotten with a new
//! epoch, so late acks from its old assignment cannot move a later assignment's offsets.

use std::collections::{HashMap, VecDeque};

/// A topic and partition.
pub type PartitionKey = (String, i32);

#[derive(Debug)]
struct PartitionState {
    epoch: u64,
    /// Offsets read and not yet part of the committable prefix, in read order, with whether
    /// each is acknowledged.
    pending: VecDeque<(i64, bool)>,
    /// The offset to commit (one past the last record of the acknowledged prefix).
    committable: Option<i64>,
    /// The offset last handed out for committing.
    committed: Option<i64>,
}

/// The read-but-uncommitted records of every assigned partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<PartitionKey, PartitionState>,
    next_epoch: u64,
}

impl OffsetTracker {
    /// Records that `offset` was read and its publish started; returns the epoch to quote in
    /// [`OffsetTracker::ack`].
    pub fn track(&mut self, topic: &str, partition: i32, offset: i64) -> u64 {
        let key = (topic.to_string(), partition);
        let next_epoch = &mut self.next_epoch;
        let state = self.partitions.entry(key).or_insert_with(|| {
            *next_epoch += 1;
            PartitionState {
                epoch: *next_epoch,
                pending: VecDeque::new(),
                committable: None,
                committed: None,
            }
        });
        state.pending.push_back((offset, false));
        state.epoch
    }

    /// Marks `offset` acknowledged. False when its partition has since been revoked (the ack
    /// belongs to an old assignment and moves nothing).
    pub fn ack(&mut self, topic: &str, partition: i32, offset: i64, epoch: u64) -> bool {
        let Some(state) = self.partitions.get_mut(&(topic.to_string(), partition)) else {
            return false;
        };
        if state.epoch != epoch {
            return false;
        }
        let Ok(at) = state.pending.binary_search_by_key(&offset, |(o, _)| *o) else {
            return false;
        };
        state.pending[at].1 = true;
        while let Some(&(o, true)) = state.pending.front() {
            state.committable = Some(o + 1);
            state.pending.pop_front();
        }
        true
    }

    /// The offsets that moved since the last call, as `(topic, partition, next offset)`, and
    /// notes them as committed.
    pub fn take_commits(&mut self) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        for ((topic, partition), state) in &mut self.partitions {
            if state.committable.is_some() && state.committable != state.committed {
                state.committed = state.committable;
                if let Some(next) = state.committable {
                    out.push((topic.clone(), *partition, next));
                }
            }
        }
        out.sort();
        out
    }

    /// Forgets a revoked partition; returns the offset still to commit for it, if any.
    pub fn revoke(&mut self, topic: &str, partition: i32) -> Option<i64> {
        let state = self.partitions.remove(&(topic.to_string(), partition))?;
        (state.committable != state.committed)
            .then_some(state.committable)
            .flatten()
    }

    /// Records read whose publish is not acknowledged yet.
    pub fn unacked(&self) -> usize {
        self.partitions
            .values()
            .map(|s| s.pending.iter().filter(|(_, acked)| !acked).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_contiguous_acked_prefix_is_committable() {
        let mut t = OffsetTracker::default();
        let e = t.track("a", 0, 10);
        t.track("a", 0, 11);
        t.track("a", 0, 13); // 12 was a compaction gap
        assert!(t.ack("a", 0, 11, e));
        assert!(t.ack("a", 0, 13, e));
        assert_eq!(t.take_commits(), vec![], "10 is still in flight");
        assert_eq!(t.unacked(), 1);
        assert!(t.ack("a", 0, 10, e));
        assert_eq!(t.take_commits(), vec![("a".into(), 0, 14)]);
        assert_eq!(t.take_commits(), vec![], "nothing moved since");
        assert_eq!(t.unacked(), 0);
    }

    #[test]
    fn partitions_advance_independently() {
        let mut t = OffsetTracker::default();
        let e0 = t.track("a", 0, 0);
        let e1 = t.track("a", 1, 5);
        t.track("a", 0, 1);
        t.ack("a", 1, 5, e1);
        t.ack("a", 0, 1, e0);
        assert_eq!(t.take_commits(), vec![("a".into(), 1, 6)]);
        t.ack("a", 0, 0, e0);
        assert_eq!(t.take_commits(), vec![("a".into(), 0, 2)]);
    }

    #[test]
    fn acks_from_a_revoked_assignment_move_nothing() {
        let mut t = OffsetTracker::default();
        let old = t.track("a", 0, 0);
        t.track("a", 0, 1);
        t.ack("a", 0, 0, old);
        assert_eq!(
            t.revoke("a", 0),
            Some(1),
            "the acked prefix is committed on revoke"
        );
        // Reassigned: reading resumes at the committed offset, under a new epoch.
        let new = t.track("a", 0, 1);
        assert_ne!(old, new);
        assert!(!t.ack("a", 0, 1, old), "a late ack of the old assignment");
        assert_eq!(t.take_commits(), vec![]);
        assert!(t.ack("a", 0, 1, new));
        assert_eq!(t.take_commits(), vec![("a".into(), 0, 2)]);
        assert_eq!(t.revoke("a", 0), None, "already committed");
        assert_eq!(t.revoke("b", 0), None);
    }
}
