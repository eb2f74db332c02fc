//! Timing and the SSE body of a streamed answer.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Bytes;
use futures::Stream;
use tokio::time::{Instant, Sleep, sleep_until};

use super::wire::{DONE, MALFORMED};

/// The server's request counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) faulted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) cancelled: AtomicU64,
}

/// How a generation request ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Faulted,
    Rejected,
}

/// Counts one received request under exactly one outcome. Dropped unsettled (the client
/// went away, or the server shut down under it), it counts as cancelled.
pub(crate) struct Ticket {
    counters: Arc<Counters>,
    settled: bool,
}

impl Ticket {
    /// Counts a request as received.
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        counters.received.fetch_add(1, Ordering::SeqCst);
        Self { counters, settled: false }
    }

    /// Counts the request's outcome (once; later calls do nothing).
    pub(crate) fn settle(&mut self, outcome: Outcome) {
        if self.settled {
            return;
        }
        self.settled = true;
        let c = match outcome {
            Outcome::Completed => &self.counters.completed,
            Outcome::Faulted => &self.counters.faulted,
            Outcome::Rejected => &self.counters.rejected,
        };
        c.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled {
            self.counters.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// When things are due: the latencies, the stall window, the busy-wait margin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub(crate) ttft: Duration,
    pub(crate) itl: Duration,
    pub(crate) spin: Duration,
    /// The stall window `[start, end)`.
    pub(crate) stall: Option<(Instant, Instant)>,
}

impl Clock {
    /// Where a due time lands given the stall: inside the window it moves to the window's end.
    pub(crate) fn release(&self, due: Instant) -> Instant {
        match self.stall {
            Some((start, end)) if start <= due && due < end => end,
            _ => due,
        }
    }

    /// When token `i` (from 0) of a request that arrived at `arrival` is due, before the stall
    /// is applied: `arrival + ttft + i·itl`, computed from the arrival each time so that
    /// nothing drifts.
    pub(crate) fn token_due(&self, arrival: Instant, i: usize) -> Instant {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        // The config's bounds (10 min latencies, 10^6 tokens) keep this far from overflow.
        let offset = self.ttft.saturating_add(self.itl.saturating_mul(i));
        arrival.checked_add(offset).unwrap_or(arrival)
    }

    /// Waits until `due` (after the stall is applied), polled by hand: the last `spin` before
    /// it re-polls the task at once instead of sleeping. `sleep` is reused across calls.
    pub(crate) fn poll_until(
        &self,
        due: Instant,
        sleep: &mut Option<Pin<Box<Sleep>>>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let due = self.release(due);
        let now = Instant::now();
        if due <= now {
            return Poll::Ready(());
        }
        if due - now > self.spin {
            let target = due - self.spin;
            match sleep {
                Some(s) => {
                    if s.deadline() != target {
                        s.as_mut().reset(target);
                    }
                }
                None => *sleep = Some(Box::pin(sleep_until(target))),
            }
            if let Some(s) = sleep {
                ready!(s.as_mut().poll(cx));
            }
            if self.spin.is_zero() || Instant::now() >= due {
                return Poll::Ready(());
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Waits until `due` (after the stall is applied).
    pub(crate) async fn wait_until(&self, due: Instant) {
        let mut sleep = None;
        std::future::poll_fn(|cx| self.poll_until(due, &mut sleep, cx)).await;
    }
}

/// Where a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Token event `next` is to be sent when due.
    Token,
    /// The malformed line is to be sent (after token 0).
    Malformed,
    /// The usage event is to be sent.
    Usage,
    /// `[DONE]` is to be sent.
    Done,
    /// Nothing more.
    Finished,
}

/// The body of one streamed answer: each event a body chunk of its own, released when due.
pub(crate) struct TokenStream {
    clock: Clock,
    arrival: Instant,
    tokens: usize,
    next: usize,
    stage: Stage,
    /// Events sent so far (token events and the usage event).
    events: usize,
    /// `truncate` fault: end (without `[DONE]`) after this many events.
    truncate_after: Option<usize>,
    /// `malformed_sse` fault: a bad line after the first event.
    malformed: bool,
    first: Bytes,
    middle: Bytes,
    last: Bytes,
    usage: Option<Bytes>,
    sleep: Option<Pin<Box<Sleep>>>,
    ticket: Ticket,
}

/// The preformatted events of a stream.
pub(crate) struct Events {
    /// Token event 0 (the chat role rides on it).
    pub(crate) first: Bytes,
    /// Every token event between the first and the last.
    pub(crate) middle: Bytes,
    /// The last token event, with `finish_reason` (the only one if there is one token).
    pub(crate) last: Bytes,
    /// The usage event, when asked for.
    pub(crate) usage: Option<Bytes>,
}

/// The fault a stream carries, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamFault {
    None,
    Malformed,
    Truncate(usize),
}

impl TokenStream {
    /// A stream of `tokens` (at least 1) token events for a request that arrived at `arrival`.
    pub(crate) fn new(
        clock: Clock,
        arrival: Instant,
        tokens: usize,
        events: Events,
        fault: StreamFault,
        ticket: Ticket,
    ) -> Self {
        Self {
            clock,
            arrival,
            tokens,
            next: 0,
            stage: Stage::Token,
            events: 0,
            truncate_after: match fault {
                StreamFault::Truncate(n) => Some(n),
                _ => None,
            },
            malformed: fault == StreamFault::Malformed,
            first: events.first,
            middle: events.middle,
            last: events.last,
            usage: events.usage,
            sleep: None,
            ticket,
        }
    }

    /// The stage after the last token event, or after the malformed line.
    fn after_token(&self) -> Stage {
        if self.next < self.tokens {
            Stage::Token
        } else if self.usage.is_some() {
            Stage::Usage
        } else {
            Stage::Done
        }
    }

    /// True (and the stream finished) once a `truncate` fault's event budget is spent.
    fn truncated(&mut self) -> bool {
        if self.truncate_after.is_some_and(|n| self.events >= n) {
            self.stage = Stage::Finished;
            true
        } else {
            false
        }
    }
}

impl Stream for TokenStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.stage {
            Stage::Token => {
                if this.truncated() {
                    return Poll::Ready(None);
                }
                let due = this.clock.token_due(this.arrival, this.next);
                ready!(this.clock.poll_until(due, &mut this.sleep, cx));
                let k = this.next;
                this.next += 1;
                this.events += 1;
                let bytes = if k + 1 == this.tokens {
                    this.last.clone()
                } else if k == 0 {
                    this.first.clone()
                } else {
                    this.middle.clone()
                };
                this.stage =
                    if this.malformed && k == 0 { Stage::Malformed } else { this.after_token() };
                Poll::Ready(Some(Ok(bytes)))
            }
            Stage::Malformed => {
                this.stage = this.after_token();
                Poll::Ready(Some(Ok(Bytes::from_static(MALFORMED))))
            }
            Stage::Usage => {
                if this.truncated() {
                    return Poll::Ready(None);
                }
                this.events += 1;
                this.stage = Stage::Done;
                Poll::Ready(this.usage.clone().map(Ok))
            }
            Stage::Done => {
                this.stage = Stage::Finished;
                if this.truncate_after.is_some() {
                    return Poll::Ready(None);
                }
                // A faulted (malformed) stream was settled when the fault was chosen.
                this.ticket.settle(Outcome::Completed);
                Poll::Ready(Some(Ok(Bytes::from_static(DONE))))
            }
            Stage::Finished => Poll::Ready(None),
        }
    }
}

/// A body that sends `bytes` and then fails, so the server aborts the connection before the
/// body's end (a non-streamed `truncate` fault).
pub(crate) struct CutBody {
    bytes: Option<Bytes>,
    /// Whether the body has returned `Pending` once after its bytes. hyper writes out what it
    /// holds only when the body has nothing ready; failing at once would lose the bytes (and
    /// the headers) along with the connection.
    paused: bool,
}

impl CutBody {
    /// Sends `bytes`, then aborts.
    pub(crate) fn new(bytes: Bytes) -> Self {
        Self { bytes: Some(bytes), paused: false }
    }
}

impl Stream for CutBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(b) = this.bytes.take() {
            return Poll::Ready(Some(Ok(b)));
        }
        if !this.paused {
            this.paused = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "injected truncate fault",
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(stall: Option<(Instant, Instant)>) -> Clock {
        Clock {
            ttft: Duration::from_millis(20),
            itl: Duration::from_micros(2500),
            spin: Duration::ZERO,
            stall,
        }
    }

    #[test]
    fn due_times_come_from_the_arrival() {
        let t0 = Instant::now();
        let c = clock(None);
        assert_eq!(c.token_due(t0, 0), t0 + Duration::from_millis(20));
        assert_eq!(c.token_due(t0, 1000), t0 + Duration::from_micros(20_000 + 2_500_000));
    }

    #[test]
    fn the_stall_holds_what_falls_inside_it() {
        let t0 = Instant::now();
        let (start, end) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2));
        let c = clock(Some((start, end)));
        assert_eq!(c.release(t0), t0);
        assert_eq!(c.release(start), end);
        assert_eq!(c.release(end - Duration::from_nanos(1)), end);
        assert_eq!(c.release(end), end);
        assert_eq!(c.release(end + Duration::from_millis(1)), end + Duration::from_millis(1));
    }

    #[tokio::test]
    async fn stream_events_follow_the_fault() {
        async fn collect(fault: StreamFault, tokens: usize, usage: bool) -> Vec<Bytes> {
            let events = Events {
                first: Bytes::from_static(b"F"),
                middle: Bytes::from_static(b"M"),
                last: Bytes::from_static(b"L"),
                usage: usage.then(|| Bytes::from_static(b"U")),
            };
            let ticket = Ticket::new(Arc::default());
            let s = TokenStream::new(clock(None), Instant::now(), tokens, events, fault, ticket);
            futures::StreamExt::collect::<Vec<_>>(s)
                .await
                .into_iter()
                .map(|r| r.unwrap_or_else(|e| match e {}))
                .collect()
        }
        let b = |s: &'static [u8]| Bytes::from_static(s);
        let done = b(DONE);
        assert_eq!(collect(StreamFault::None, 1, false).await, [b(b"L"), done.clone()]);
        assert_eq!(
            collect(StreamFault::None, 3, true).await,
            [b(b"F"), b(b"M"), b(b"L"), b(b"U"), done.clone()]
        );
        assert_eq!(
            collect(StreamFault::Malformed, 2, false).await,
            [b(b"F"), b(MALFORMED), b(b"L"), done]
        );
        assert_eq!(collect(StreamFault::Truncate(2), 3, true).await, [b(b"F"), b(b"M")]);
        assert_eq!(collect(StreamFault::Truncate(9), 2, true).await, [b(b"F"), b(b"L"), b(b"U")]);
        assert_eq!(collect(StreamFault::Truncate(0), 2, false).await, Vec::<Bytes>::new());
    }
}
