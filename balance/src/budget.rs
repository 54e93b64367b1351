//! The retry budget: a token bucket that bounds retries to a share of
//! calls, so that retries cannot amplify an outage.
//!
//! # The model
//!
//! Every call that starts deposits `percent / 100` of a token; every retry
//! that may add load on a server withdraws one whole token, and is not made
//! when there is none. The bucket holds at most `burst` tokens and starts
//! full. Over any stretch of `n` calls, at most `burst + n × percent / 100`
//! of them are retried: with the default 20 % and a burst of 100, a dead
//! instance's in-flight calls are all retried at once, while a cluster-wide
//! outage costs at most 20 % extra load once the burst is spent.
//!
//! Retries of calls that never left the client (no connection, refused
//! connect) add no load to any server; they are bounded by the call's
//! attempts, not by the budget.

/// Tokens are counted in hundredths, so that a call's deposit is whole.
const SCALE: u64 = 100;

/// The most `percent` accepted: 10 retries per call.
pub const MAX_PERCENT: u32 = 1000;

/// The default share of calls that may be retried: 20 %.
pub const DEFAULT_PERCENT: u32 = 20;

/// The default burst of retries above the share: 100.
pub const DEFAULT_BURST: u32 = 100;

/// A token bucket of retries; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryBudget {
    deposit: u64,
    max: u64,
    balance: u64,
}

impl RetryBudget {
    /// A full bucket of `burst` tokens (at most `u32::MAX`) that gains
    /// `percent` hundredths of a token per call (clamped to
    /// [`MAX_PERCENT`]). The bucket never holds more than `burst`, so a
    /// burst of 0 allows no retry at all.
    pub fn new(percent: u32, burst: u32) -> Self {
        let max = u64::from(burst) * SCALE;
        RetryBudget {
            deposit: u64::from(percent.min(MAX_PERCENT)),
            max,
            balance: max,
        }
    }

    /// A bucket that never allows a retry that may add load.
    pub fn none() -> Self {
        Self::new(0, 0)
    }

    /// One call started.
    #[inline]
    pub fn deposit(&mut self) {
        self.balance = self.balance.saturating_add(self.deposit).min(self.max);
    }

    /// Takes a token for one retry; false if there is none.
    pub fn withdraw(&mut self) -> bool {
        match self.balance.checked_sub(SCALE) {
            Some(left) => {
                self.balance = left;
                true
            }
            None => false,
        }
    }

    /// Whole retries the bucket allows right now.
    pub fn available(&self) -> u64 {
        self.balance / SCALE
    }
}

impl Default for RetryBudget {
    /// [`DEFAULT_PERCENT`] of calls, [`DEFAULT_BURST`] at once.
    fn default() -> Self {
        Self::new(DEFAULT_PERCENT, DEFAULT_BURST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_is_spent_then_refused() {
        let mut budget = RetryBudget::new(0, 2);
        assert_eq!(budget.available(), 2);
        assert!(budget.withdraw());
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
        assert_eq!(budget.available(), 0);
    }

    #[test]
    fn calls_refill_it_at_the_percentage() {
        let mut budget = RetryBudget::new(20, 10);
        while budget.withdraw() {}
        // 4 calls are 80 hundredths: not yet a token; the 5th makes one.
        for _ in 0..4 {
            budget.deposit();
        }
        assert!(!budget.withdraw());
        budget.deposit();
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
    }

    #[test]
    fn retries_over_many_calls_stay_within_burst_plus_share() {
        let mut budget = RetryBudget::new(10, 5);
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit();
            // Every call fails and asks for a retry.
            if budget.withdraw() {
                retries += 1;
            }
        }
        // 5 from the burst and 100 from 1000 calls × 10 %, less the first
        // call's deposit, which fell on a full bucket.
        assert_eq!(retries, 104);
    }

    #[test]
    fn the_bucket_never_exceeds_its_burst_below_at_and_above() {
        let mut budget = RetryBudget::new(100, 3);
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!(budget.available(), 3);
        let mut zero = RetryBudget::new(MAX_PERCENT + 1, 0);
        zero.deposit();
        assert_eq!(zero.available(), 0, "a zero burst holds nothing");
        assert_eq!(
            RetryBudget::new(u32::MAX, u32::MAX).deposit,
            u64::from(MAX_PERCENT)
        );
        assert!(!RetryBudget::none().clone().withdraw());
    }
}
