//! Exponential backoff with full jitter, so a fleet of agents does not
//! reconnect to a restarted issuer in lockstep.

use std::time::Duration;

use rand::Rng;

/// Backoff state: doubles from `base` up to `max`; each wait is uniformly
/// random between half the current step and the step.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// A backoff starting at `base`, capped at `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            step: base,
        }
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        let jitter_ms =
            rand::rng().random_range(0..=u64::try_from(half.as_millis()).unwrap_or(u64::MAX));
        half + Duration::from_millis(jitter_ms)
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.step = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_jittered_and_capped() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut steps = vec![];
        for _ in 0..10 {
            steps.push(backoff.next_delay());
        }
        assert!(steps[0] >= Duration::from_millis(50) && steps[0] <= Duration::from_millis(100));
        assert!(steps.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(
            steps[9] >= Duration::from_secs(1),
            "capped step keeps at least half: {:?}",
            steps[9]
        );
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
