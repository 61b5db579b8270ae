//! Run statistics with fixed-size histograms (no allocation while recording).

use diffbc_protocol::LinkCounters;
use std::time::Duration;

/// Microsecond histogram: 1 µs buckets up to 20 ms, and the exact maximum.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u32]>,
    over: u64,
    max_us: u64,
    n: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Histogram(n={}, p50={}µs, p99={}µs, max={}µs)",
            self.n,
            self.quantile_us(0.5),
            self.quantile_us(0.99),
            self.max_us
        )
    }
}

const BUCKETS: usize = 20_000;

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// Empty.
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            over: 0,
            max_us: 0,
            n: 0,
        }
    }

    /// Add one value.
    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.n += 1;
        self.max_us = self.max_us.max(us);
        match self.counts.get_mut(us as usize) {
            Some(c) => *c += 1,
            None => self.over += 1,
        }
    }

    /// Add every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += *b;
        }
        self.over += other.over;
        self.max_us = self.max_us.max(other.max_us);
        self.n += other.n;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Largest value (µs).
    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The `q` quantile in µs (values past 20 ms report the maximum).
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let rank = ((self.n as f64 * q).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (us, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return us as u64;
            }
        }
        self.max_us
    }
}

/// What one run of the control loop did.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Ticks executed.
    pub ticks: u64,
    /// Ticks where the controller missed its deadline (last safe command held).
    pub missed_deadlines: u64,
    /// Actions refused by the safety layer (NaN, wrong size); never sent.
    pub rejected_actions: u64,
    /// Joint targets clamped to limits.
    pub clamped_limit: u64,
    /// Joint targets clamped to the per-tick step.
    pub clamped_step: u64,
    /// Frames written.
    pub frames_sent: u64,
    /// Frames decoded.
    pub frames_received: u64,
    /// Frames that failed to decode (CRC, framing, payload).
    pub frames_bad: u64,
    /// Reconnections after the port vanished.
    pub reconnects: u64,
    /// Lateness of each tick against its schedule.
    pub jitter: Histogram,
    /// Command written → telemetry acknowledging it.
    pub rtt: Histogram,
}

impl RunStats {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add another run's figures (several episodes as one set).
    pub fn merge(&mut self, other: &RunStats) {
        self.ticks += other.ticks;
        self.missed_deadlines += other.missed_deadlines;
        self.rejected_actions += other.rejected_actions;
        self.clamped_limit += other.clamped_limit;
        self.clamped_step += other.clamped_step;
        self.frames_sent += other.frames_sent;
        self.frames_received += other.frames_received;
        self.frames_bad += other.frames_bad;
        self.reconnects += other.reconnects;
        self.jitter.merge(&other.jitter);
        self.rtt.merge(&other.rtt);
    }

    /// A Markdown table of the figures.
    pub fn markdown(&self) -> String {
        format!(
            "| ticks | missed | rejected | clamped (limit / step) | sent | received | bad | reconnects | jitter p50 / p99 / max µs | ack p50 / p99 µs (read once per tick) |\n\
             |---|---|---|---|---|---|---|---|---|---|\n\
             | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} / {} / {} | {} / {} |\n",
            self.ticks,
            self.missed_deadlines,
            self.rejected_actions,
            self.clamped_limit,
            self.clamped_step,
            self.frames_sent,
            self.frames_received,
            self.frames_bad,
            self.reconnects,
            self.jitter.quantile_us(0.5),
            self.jitter.quantile_us(0.99),
            self.jitter.max_us(),
            self.rtt.quantile_us(0.5),
            self.rtt.quantile_us(0.99),
        )
    }
}

/// What reached the device, in its own words: the commands the host sent
/// since the last handshake against the [`LinkCounters`] the device reported
/// in telemetry after the run's stop frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Commands the host wrote since the last handshake.
    pub sent: u32,
    /// The last of them.
    pub last_sent_seq: u32,
    /// The device's counters.
    pub device: LinkCounters,
    /// The last command the device applied (telemetry's `last_command_seq`).
    pub last_applied_seq: u32,
}

impl Delivery {
    /// Every command sent arrived, none skipped, none out of order.
    pub fn complete_in_order(&self) -> bool {
        self.device.commands == self.sent && self.device.skipped == 0 && self.device.stale == 0
    }

    /// Commands sent that the device never counted.
    pub fn lost(&self) -> u32 {
        self.sent.saturating_sub(self.device.commands)
    }
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.device;
        write!(
            f,
            "delivery (the device's counters): {} of {} commands arrived, {} skipped, {} stale, {} bad frames at the device; last applied seq {} (last sent {}): {}",
            d.commands,
            self.sent,
            d.skipped,
            d.stale,
            d.bad_frames,
            self.last_applied_seq,
            self.last_sent_seq,
            if self.complete_in_order() {
                "every command arrived, in order"
            } else {
                "COMMANDS LOST OR OUT OF ORDER"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_exact_to_the_microsecond() {
        let mut h = Histogram::new();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        h.record(Duration::from_millis(50));
        assert_eq!(h.quantile_us(0.5), 51);
        assert_eq!(h.quantile_us(0.99), 100);
        assert_eq!(h.quantile_us(1.0), 50_000);
        assert_eq!(h.max_us(), 50_000);
        assert_eq!(h.count(), 101);
    }

    #[test]
    fn delivery_is_complete_only_when_the_device_counted_every_command_in_order() {
        let ok = Delivery {
            sent: 100,
            last_sent_seq: 100,
            device: LinkCounters {
                commands: 100,
                ..LinkCounters::default()
            },
            last_applied_seq: 100,
        };
        assert!(ok.complete_in_order());
        assert!(
            ok.to_string().ends_with("every command arrived, in order"),
            "{ok}"
        );
        let lost = Delivery {
            device: LinkCounters {
                commands: 99,
                skipped: 1,
                ..LinkCounters::default()
            },
            ..ok
        };
        assert!(!lost.complete_in_order());
        assert_eq!(lost.lost(), 1);
        let reordered = Delivery {
            device: LinkCounters {
                commands: 100,
                stale: 1,
                ..LinkCounters::default()
            },
            ..ok
        };
        assert!(!reordered.complete_in_order());
        assert!(
            reordered.to_string().contains("OUT OF ORDER"),
            "{reordered}"
        );
    }
}
