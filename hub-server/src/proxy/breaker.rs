//! A circuit breaker: after `failures` consecutive failed calls it opens and refuses calls for
//! `cooldown`; then it half-opens and lets **one** trial call through. The trial's success
//! closes it, its failure opens it for another cooldown.
//!
//! Pure state: the caller passes the time, so the breaker is tested without sleeping.

use std::time::Duration;

use tokio::time::Instant;

/// Why a call may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed.
    Normal,
    /// The breaker is half-open and this is its one trial call.
    Trial,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

/// The breaker of one endpoint.
#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    cooldown: Duration,
    state: State,
}

impl Breaker {
    /// A closed breaker that opens after `failures` consecutive failures (at least 1).
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        Breaker {
            failures: failures.max(1),
            cooldown,
            state: State::Closed { failures: 0 },
        }
    }

    /// Asks to make a call at `now`; `None` = refused (open, or a trial already running).
    pub fn admit(&mut self, now: Instant) -> Option<Admission> {
        match self.state {
            State::Closed { .. } => Some(Admission::Normal),
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen {
                    trial_in_flight: true,
                };
                Some(Admission::Trial)
            }
            State::HalfOpen {
                trial_in_flight: false,
            } => {
                self.state = State::HalfOpen {
                    trial_in_flight: true,
                };
                Some(Admission::Trial)
            }
            State::Open { .. } | State::HalfOpen { .. } => None,
        }
    }

    /// An admitted call did not happen (no free slot): a trial may be tried again.
    pub fn abandon(&mut self, admission: Admission) {
        if admission == Admission::Trial {
            if let State::HalfOpen { .. } = self.state {
                self.state = State::HalfOpen {
                    trial_in_flight: false,
                };
            }
        }
    }

    /// An admitted call succeeded.
    pub fn success(&mut self, admission: Admission) {
        match (self.state, admission) {
            (State::Closed { .. }, _) | (State::HalfOpen { .. }, Admission::Trial) => {
                self.state = State::Closed { failures: 0 }
            }
            // A call from before the breaker opened says little about now.
            _ => {}
        }
    }

    /// An admitted call failed at `now`.
    pub fn failure(&mut self, admission: Admission, now: Instant) {
        match (self.state, admission) {
            (State::Closed { failures }, _) => {
                let failures = failures.saturating_add(1);
                self.state = if failures >= self.failures {
                    State::Open {
                        until: now + self.cooldown,
                    }
                } else {
                    State::Closed { failures }
                };
            }
            (State::HalfOpen { .. }, Admission::Trial) => {
                self.state = State::Open {
                    until: now + self.cooldown,
                }
            }
            _ => {}
        }
    }

    /// Whether calls are being refused (open or half-open).
    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(5);

    fn fail(b: &mut Breaker, now: Instant) {
        let a = b.admit(now).expect("admitted");
        b.failure(a, now);
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let now = Instant::now();
        let mut b = Breaker::new(3, COOLDOWN);
        fail(&mut b, now);
        fail(&mut b, now);
        let a = b.admit(now).unwrap();
        b.success(a);
        fail(&mut b, now);
        fail(&mut b, now);
        assert!(!b.is_open(), "a success resets the count");
        fail(&mut b, now);
        assert!(b.is_open());
        assert_eq!(b.admit(now), None);
        assert_eq!(b.admit(now + COOLDOWN - Duration::from_millis(1)), None);
    }

    #[test]
    fn half_open_lets_one_trial_through_and_its_result_decides() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, COOLDOWN);
        fail(&mut b, t0);
        let t1 = t0 + COOLDOWN;
        assert_eq!(b.admit(t1), Some(Admission::Trial));
        assert_eq!(b.admit(t1), None, "one trial at a time");
        b.failure(Admission::Trial, t1);
        assert_eq!(b.admit(t1 + Duration::from_secs(1)), None, "open again");
        let t2 = t1 + COOLDOWN;
        assert_eq!(b.admit(t2), Some(Admission::Trial));
        b.success(Admission::Trial);
        assert!(!b.is_open());
        assert_eq!(b.admit(t2), Some(Admission::Normal));
    }

    #[test]
    fn an_abandoned_trial_can_be_retried_and_late_calls_do_not_decide() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, COOLDOWN);
        let late = b.admit(t0).unwrap();
        fail(&mut b, t0);
        b.success(late);
        assert!(
            b.is_open(),
            "a call admitted before the opening does not close it"
        );
        let t1 = t0 + COOLDOWN;
        let trial = b.admit(t1).unwrap();
        b.abandon(trial);
        assert_eq!(b.admit(t1), Some(Admission::Trial));
    }

    #[tokio::test(start_paused = true)]
    async fn cooldown_runs_on_the_tokio_clock() {
        let mut b = Breaker::new(2, COOLDOWN);
        fail(&mut b, Instant::now());
        fail(&mut b, Instant::now());
        assert_eq!(b.admit(Instant::now()), None);
        tokio::time::sleep(COOLDOWN).await;
        assert_eq!(b.admit(Instant::now()), Some(Admission::Trial));
    }
}
