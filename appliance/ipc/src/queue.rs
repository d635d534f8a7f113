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
