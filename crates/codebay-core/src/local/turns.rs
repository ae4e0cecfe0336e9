//! First come, first served: runs of one context go in the order they were *called*,
//! not the order their tasks happen to be polled on a multi-threaded runtime. A turn
//! is taken synchronously, when `runCode` is called; the run waits for it.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::sync::Notify;

#[derive(Default)]
pub struct TurnQueue {
    state: Mutex<QueueState>,
    changed: Notify,
}

#[derive(Default)]
struct QueueState {
    next: u64,
    serving: u64,
    /// Turns given up before they came (a dropped call): skipped when reached.
    abandoned: BTreeSet<u64>,
}

/// A place in the queue. Dropping it, whether it ran or not, lets the next one go.
pub struct Turn<'q> {
    queue: &'q TurnQueue,
    ticket: u64,
}

impl TurnQueue {
    pub fn take(&self) -> u64 {
        let mut state = self.state.lock().expect("turn lock");
        state.next += 1;
        state.next - 1
    }

    /// Waits until `ticket` is served; the returned turn ends it when dropped.
    pub async fn wait(&self, ticket: u64) -> Turn<'_> {
        let turn = Turn {
            queue: self,
            ticket,
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a release between the two is not missed.
            notified.as_mut().enable();
            if self.state.lock().expect("turn lock").serving == ticket {
                return turn;
            }
            notified.await;
        }
    }

    /// Whether `ticket` has its turn now (nothing before it is waiting or running).
    pub fn is_serving(&self, ticket: u64) -> bool {
        self.state.lock().expect("turn lock").serving == ticket
    }

    /// For a ticket whose call is dropped before its turn came.
    pub fn abandon(&self, ticket: u64) {
        let mut state = self.state.lock().expect("turn lock");
        if state.serving == ticket {
            drop(state);
            self.release(ticket);
        } else if ticket > state.serving {
            state.abandoned.insert(ticket);
        }
    }

    fn release(&self, ticket: u64) {
        let mut state = self.state.lock().expect("turn lock");
        if state.serving != ticket {
            return;
        }
        state.serving += 1;
        while {
            let serving = state.serving;
            state.abandoned.remove(&serving)
        } {
            state.serving += 1;
        }
        drop(state);
        self.changed.notify_waiters();
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.queue.release(self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn turns_go_in_the_order_they_were_taken() {
        let queue = Arc::new(TurnQueue::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let tickets: Vec<u64> = (0..50).map(|_| queue.take()).collect();
        let mut tasks = Vec::new();
        // Spawned in reverse: the runtime polls them in no particular order.
        for &ticket in tickets.iter().rev() {
            let (queue, order) = (queue.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = queue.wait(ticket).await;
                order.lock().unwrap().push(ticket);
                tokio::task::yield_now().await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), tickets);
    }

    #[tokio::test]
    async fn an_abandoned_ticket_does_not_block_the_next() {
        let queue = TurnQueue::default();
        let (first, second, third) = (queue.take(), queue.take(), queue.take());
        assert!(queue.is_serving(first) && !queue.is_serving(third));
        queue.abandon(second);
        drop(queue.wait(first).await);
        let turn = tokio::time::timeout(std::time::Duration::from_secs(1), queue.wait(third)).await;
        assert!(turn.is_ok(), "the third waited on the dropped second");
    }
}
