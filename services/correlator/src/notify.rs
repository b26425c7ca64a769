//! When an incident's summary is due: Alertmanager's aggregation-group timing and its
//! notification dedup stage (`DedupStage.needsUpdate` in `notify/notify.go`), ported so that a
//! group of alerts is told about exactly when Alertmanager would tell its receiver.
//!
//! An incident is flushed first `group_wait` after it opened and then every `group_interval`.
//! At a flush the sets of firing and resolved alert fingerprints are compared with the log of
//! the last notification: a new firing alert, or (with `send_resolved`) a new resolved one,
//! notifies; everything resolving notifies when the last notification had firing alerts; an
//! unchanged group notifies again after `repeat_interval`.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The notification log entry of one incident (Alertmanager's `nflogpb.Entry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyLog {
    pub firing: BTreeSet<String>,
    pub resolved: BTreeSet<String>,
    pub at: DateTime<Utc>,
}

/// Whether a flush with these `firing` and `resolved` alerts notifies, given the last `entry`.
pub fn needs_update(
    entry: Option<&NotifyLog>,
    firing: &BTreeSet<String>,
    resolved: &BTreeSet<String>,
    repeat: Duration,
    send_resolved: bool,
    now: DateTime<Utc>,
) -> bool {
    // Never notified: notify right away, unless only resolved alerts are left.
    let Some(entry) = entry else {
        return !firing.is_empty();
    };
    // A firing alert the last notification did not have.
    if !firing.is_subset(&entry.firing) {
        return true;
    }
    // Everything resolved: notify (whatever send_resolved says, so the log is cleared) if the
    // last notification told of firing alerts; else they fired and resolved unseen.
    if firing.is_empty() {
        return !entry.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&entry.resolved) {
        return true;
    }
    // Nothing changed: only after the repeat interval.
    let repeat = chrono::Duration::from_std(repeat).unwrap_or(chrono::Duration::MAX);
    entry.at
        < now
            .checked_sub_signed(repeat)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(hashes: &[u64]) -> BTreeSet<String> {
        hashes.iter().map(|h| h.to_string()).collect()
    }

    fn entry(firing: &[u64], resolved: &[u64], at: DateTime<Utc>) -> NotifyLog {
        NotifyLog {
            firing: set(firing),
            resolved: set(resolved),
            at,
        }
    }

    /// Every case of Alertmanager's `TestDedupStageNeedsUpdate` table, in its order.
    #[test]
    fn dedup_stage_needs_update_table() {
        let now: DateTime<Utc> = "2024-05-14T09:00:00Z".parse().unwrap();
        let min = Duration::from_secs(60);
        let ago = |m: i64| now - chrono::Duration::minutes(m);
        struct Case {
            name: &'static str,
            entry: Option<NotifyLog>,
            firing: &'static [u64],
            resolved: &'static [u64],
            repeat: Duration,
            resolve: bool,
            res: bool,
        }
        let cases = [
            Case { name: "no matching nflog entry should update", entry: None, firing: &[2, 3, 4], resolved: &[], repeat: Duration::ZERO, resolve: false, res: true },
            Case { name: "no matching nflog entry shouldn't update if no alert fires", entry: None, firing: &[], resolved: &[2, 3, 4], repeat: Duration::ZERO, resolve: false, res: false },
            Case { name: "different sets of firing alerts should update", entry: Some(entry(&[1, 2, 3], &[], ago(0))), firing: &[2, 3, 4], resolved: &[], repeat: Duration::ZERO, resolve: false, res: true },
            Case { name: "zero timestamp in the nflog entry should always update", entry: Some(entry(&[1, 2, 3], &[], DateTime::<Utc>::MIN_UTC)), firing: &[1, 2, 3], resolved: &[], repeat: Duration::ZERO, resolve: false, res: true },
            Case { name: "identical sets of alerts shouldn't update before repeat_interval", entry: Some(entry(&[1, 2, 3], &[], ago(9))), firing: &[1, 2, 3], resolved: &[], repeat: 10 * min, resolve: false, res: false },
            Case { name: "identical sets of alerts should update after repeat_interval", entry: Some(entry(&[1, 2, 3], &[], ago(11))), firing: &[1, 2, 3], resolved: &[], repeat: 10 * min, resolve: false, res: true },
            Case { name: "different sets of resolved alerts without firing alerts shouldn't update after repeat_interval", entry: Some(entry(&[], &[1, 2, 3], ago(11))), firing: &[], resolved: &[3, 4, 5], repeat: 10 * min, resolve: true, res: false },
            Case { name: "different sets of resolved alerts shouldn't update when resolve is false", entry: Some(entry(&[1, 2], &[3], ago(9))), firing: &[1], resolved: &[2, 3], repeat: 10 * min, resolve: false, res: false },
            Case { name: "different sets of resolved alerts should update when resolve is true", entry: Some(entry(&[1, 2], &[3], ago(9))), firing: &[1], resolved: &[2, 3], repeat: 10 * min, resolve: true, res: true },
            Case { name: "empty set of firing alerts should update when resolve is false", entry: Some(entry(&[1, 2], &[3], ago(9))), firing: &[], resolved: &[1, 2, 3], repeat: 10 * min, resolve: false, res: true },
            Case { name: "empty set of firing alerts should update when resolve is true", entry: Some(entry(&[1, 2], &[3], ago(9))), firing: &[], resolved: &[1, 2, 3], repeat: 10 * min, resolve: true, res: true },
        ];
        for c in cases {
            let got = needs_update(
                c.entry.as_ref(),
                &set(c.firing),
                &set(c.resolved),
                c.repeat,
                c.resolve,
                now,
            );
            assert_eq!(got, c.res, "{}", c.name);
        }
    }

    /// The two outcomes `TestDedupStage` checks once the log is queried: an entry equal to
    /// the current alerts and fresh suppresses; one with different firing alerts passes them.
    #[test]
    fn dedup_stage_suppresses_a_fresh_identical_entry_and_passes_a_changed_one() {
        let now: DateTime<Utc> = "2024-05-14T09:00:00Z".parse().unwrap();
        let hour = Duration::from_secs(3600);
        let current = set(&[0, 1, 2]);
        let same = entry(&[0, 1, 2], &[], now);
        assert!(!needs_update(
            Some(&same),
            &current,
            &set(&[]),
            hour,
            false,
            now
        ));
        let changed = entry(&[1, 2, 3, 4], &[], now);
        assert!(needs_update(
            Some(&changed),
            &current,
            &set(&[]),
            hour,
            false,
            now
        ));
    }
}
