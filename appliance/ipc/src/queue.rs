//! Bounded queues with a stated when-full policy, and acknowledged delivery.

use std::collections::VecDeque;

/// A bounded queue of outgoing messages. **When full, the newest message is dropped and
/// counted** (the sender never blocks: capture must keep reading the ring).
#[derive(Debug)]
pub struct Outbox<T> {
    queue: VecDeque<T>,
    capacity: usize,
    dropped: u64,
}

impl<T> Outbox<T> {
    pub fn new(capacity: usize) -> Outbox<T> {
        Outbox { queue: VecDeque::with_capacity(capacity.min(4096)), capacity: capacity.max(1), dropped: 0 }
    }

    /// Queues `message`; false (and counted) when the queue is full.
    pub fn push(&mut self, message: T) -> bool {
        if self.queue.len() >= self.capacity {
            self.dropped += 1;
            return false;
        }
        self.queue.push_back(message);
        true
    }

    pub fn front(&self) -> Option<&T> {
        self.queue.front()
    }

    pub fn pop(&mut self) -> Option<T> {
        self.queue.pop_front()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Acknowledged delivery: messages get increasing sequence numbers and stay in the
/// window until acknowledged; after a reconnect everything unacknowledged is sent again
/// (at-least-once), and the receiver drops what it has already seen by sequence number.
/// The window is bounded: when it is full the sender must wait (`can_send` is false),
/// which is the right policy for what must not be lost.
#[derive(Debug)]
pub struct AckWindow<T> {
    next_seq: u64,
    pending: VecDeque<(u64, T)>,
    capacity: usize,
}

impl<T: Clone> AckWindow<T> {
    pub fn new(capacity: usize) -> AckWindow<T> {
        AckWindow { next_seq: 1, pending: VecDeque::new(), capacity: capacity.max(1) }
    }

    pub fn can_send(&self) -> bool {
        self.pending.len() < self.capacity
    }

    /// Assigns the next sequence number; `None` when the window is full.
    pub fn send(&mut self, message: T) -> Option<(u64, T)> {
        if !self.can_send() {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back((seq, message.clone()));
        Some((seq, message))
    }

    /// Everything up to and including `seq` was received.
    pub fn ack(&mut self, seq: u64) {
        while self.pending.front().is_some_and(|(pending, _)| *pending <= seq) {
            self.pending.pop_front();
        }
    }

    /// What to send again after a reconnect, in order.
    pub fn unacknowledged(&self) -> impl Iterator<Item = &(u64, T)> {
        self.pending.iter()
    }
}

/// Receiver side of [`AckWindow`]: true when `seq` is new (deliver it), false for a
/// duplicate of something already delivered.
pub fn is_new(last_delivered: &mut u64, seq: u64) -> bool {
    if seq <= *last_delivered {
        return false;
    }
    *last_delivered = seq;
    true
}

/// What a [`GapQueue`] lost while it was full: how many items, by kind (for events: the
/// action), and the time span they cover (µs, as the items carry it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gap {
    pub lost_by_kind: std::collections::BTreeMap<String, u64>,
    pub first_us: u64,
    pub last_us: u64,
}

impl Gap {
    pub fn lost(&self) -> u64 {
        self.lost_by_kind.values().sum()
    }

    fn add(&mut self, kind: &str, at_us: u64) {
        if self.lost_by_kind.is_empty() {
            self.first_us = at_us;
            self.last_us = at_us;
        }
        self.first_us = self.first_us.min(at_us);
        self.last_us = self.last_us.max(at_us);
        *self.lost_by_kind.entry(kind.to_string()).or_default() += 1;
    }
}

/// An item of a [`GapQueue`]: what was pushed, or the record of what was lost at that
/// point of the sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queued<T> {
    Item(T),
    Gap(Gap),
}

/// A bounded queue (items and bytes) in front of something that may stop taking items
/// for a while (the log task away, its disk full). **When full, the newest item is
/// dropped and counted, by kind and time, into one open [`Gap`]**; as soon as there is
/// room again the gap takes its place in the sequence (exactly where the items were
/// lost), so the consumer can write one record saying what is missing there.
#[derive(Debug)]
pub struct GapQueue<T> {
    queue: VecDeque<(Queued<T>, usize)>,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
    open_gap: Option<Gap>,
    lost: u64,
}

impl<T> GapQueue<T> {
    pub fn new(max_items: usize, max_bytes: usize) -> GapQueue<T> {
        GapQueue { queue: VecDeque::new(), bytes: 0, max_items: max_items.max(2), max_bytes, open_gap: None, lost: 0 }
    }

    /// Queues `item` (`bytes` long, of `kind`, at `at_us`), or counts it into the open gap.
    pub fn push(&mut self, item: T, bytes: usize, kind: &str, at_us: u64) {
        // An open gap closes only when the item after it fits too (one gap per outage).
        let slots = 1 + usize::from(self.open_gap.is_some());
        if self.queue.len() + slots <= self.max_items && self.bytes.saturating_add(bytes) <= self.max_bytes {
            if let Some(gap) = self.open_gap.take() {
                self.queue.push_back((Queued::Gap(gap), 0));
            }
            self.bytes += bytes;
            self.queue.push_back((Queued::Item(item), bytes));
            return;
        }
        self.lost += 1;
        self.open_gap.get_or_insert_with(Gap::default).add(kind, at_us);
    }

    /// The oldest item; once everything queued is taken, the open gap (if any) closes
    /// and comes out last.
    pub fn pop(&mut self) -> Option<Queued<T>> {
        match self.queue.pop_front() {
            Some((queued, bytes)) => {
                self.bytes -= bytes;
                Some(queued)
            }
            None => self.open_gap.take().map(Queued::Gap),
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.open_gap.is_none()
    }

    /// Items lost since the start (all gaps, open or not).
    pub fn lost(&self) -> u64 {
        self.lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_drops_the_newest_when_full_and_counts() {
        let mut outbox = Outbox::new(2);
        assert!(outbox.push(1));
        assert!(outbox.push(2));
        assert!(!outbox.push(3));
        assert_eq!((outbox.len(), outbox.dropped()), (2, 1));
        assert_eq!(outbox.pop(), Some(1));
        assert!(outbox.push(4));
        assert_eq!(outbox.pop(), Some(2));
        assert_eq!(outbox.pop(), Some(4));
    }

    #[test]
    fn a_full_gap_queue_counts_what_it_loses_into_one_gap_in_its_place() {
        let mut queue = GapQueue::new(3, 1000);
        for (index, kind) in ["block", "observe", "observe", "alert", "observe", "block"].into_iter().enumerate() {
            queue.push(index, 10, kind, 100 + index as u64);
        }
        assert_eq!((queue.len(), queue.lost()), (3, 3));
        assert_eq!(queue.pop(), Some(Queued::Item(0)));
        // Room for one: not for the gap and the next item, which joins the gap.
        queue.push(6, 10, "observe", 106);
        assert_eq!(queue.pop(), Some(Queued::Item(1)));
        // Room again: the gap takes its place before what comes next.
        queue.push(7, 10, "observe", 107);
        let rest: Vec<Queued<usize>> = std::iter::from_fn(|| queue.pop()).collect();
        let gap = Gap { lost_by_kind: [("alert".to_string(), 1), ("block".to_string(), 1), ("observe".to_string(), 2)].into(), first_us: 103, last_us: 106 };
        assert_eq!(rest, vec![Queued::Item(2), Queued::Gap(gap.clone()), Queued::Item(7)]);
        assert_eq!((gap.lost(), queue.lost()), (4, 4));
        assert!(queue.is_empty());
    }

    #[test]
    fn a_gap_queue_is_bounded_by_bytes_and_an_open_gap_comes_out_once_drained() {
        let mut queue = GapQueue::new(100, 25);
        for index in 0..4u64 {
            queue.push(index, 10, "observe", index);
        }
        assert_eq!((queue.len(), queue.lost()), (2, 2));
        let drained: Vec<Queued<u64>> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(drained.len(), 3, "two items, then the gap");
        assert!(matches!(&drained[2], Queued::Gap(gap) if gap.lost() == 2 && (gap.first_us, gap.last_us) == (2, 3)));
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn ack_window_resends_until_acknowledged_and_receiver_dedups() {
        let mut window = AckWindow::new(2);
        let first = window.send("a").expect("room");
        let second = window.send("b").expect("room");
        assert!(window.send("c").is_none(), "full window: the sender waits");
        window.ack(first.0);
        let resend: Vec<u64> = window.unacknowledged().map(|(seq, _)| *seq).collect();
        assert_eq!(resend, vec![second.0]);
        let mut last = 0;
        assert!(is_new(&mut last, first.0));
        assert!(is_new(&mut last, second.0));
        assert!(!is_new(&mut last, second.0), "a re-sent duplicate is dropped");
    }
}
