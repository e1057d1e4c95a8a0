//! Every limit of spec §6 as data: the defaults, and the hard caps an operator cannot exceed.

use time::Duration;

/// The limits a flow and its leases run under. [`FlowLimits::default`] is spec §6.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowLimits {
    /// How long a flow lives from the visit.
    pub flow_ttl: Duration,
    /// How long one OTP is valid.
    pub otp_ttl: Duration,
    /// Wrong tries per code before the flow dies.
    pub otp_tries: u32,
    /// Codes sent per flow, the first included.
    pub otp_sends: u32,
    /// Least time between two sends of one flow.
    pub otp_resend_interval: Duration,
    /// Failed factor attempts per grant (all flows) that lock it.
    pub factor_failures_to_lock: u32,
    /// Failed factor and OTP attempts together per grant that lock it.
    pub all_failures_to_lock: u32,
    /// No lease, refreshed or not, lives past this after it was issued.
    pub lease_absolute: Duration,
    /// Flows of one grant open at once (neither expired, dead nor leased), on all instances.
    pub open_flows_per_grant: u32,
    /// Codes sent for one grant, all its flows together, in any hour.
    pub sends_per_grant_per_hour: u32,
}

/// The window [`FlowLimits::sends_per_grant_per_hour`] counts over.
pub const SEND_WINDOW: Duration = Duration::hours(1);

impl Default for FlowLimits {
    fn default() -> Self {
        Self {
            flow_ttl: Duration::minutes(15),
            otp_ttl: Duration::minutes(10),
            otp_tries: 5,
            otp_sends: 3,
            otp_resend_interval: Duration::seconds(30),
            factor_failures_to_lock: linklease_grant::limits::FACTOR_FAILURES_TO_LOCK,
            all_failures_to_lock: linklease_grant::limits::ALL_FAILURES_TO_LOCK,
            lease_absolute: Duration::hours(1),
            open_flows_per_grant: 20,
            sends_per_grant_per_hour: 10,
        }
    }
}

impl FlowLimits {
    /// The loosest limits an operator may configure: a shorter or stricter setting is always
    /// allowed, a looser one is refused by [`FlowLimits::check`].
    pub fn hard_caps() -> Self {
        Self::default()
    }

    /// Refuses limits looser than spec §6 or too small to be usable, naming the first.
    pub fn check(&self) -> Result<(), &'static str> {
        let caps = Self::hard_caps();
        let within =
            |value: Duration, least: Duration, most: Duration| value >= least && value <= most;
        if !within(self.flow_ttl, Duration::minutes(1), caps.flow_ttl) {
            return Err("flow_ttl must be between 1 and 15 minutes");
        }
        if !within(self.otp_ttl, Duration::minutes(1), caps.otp_ttl) {
            return Err("otp_ttl must be between 1 and 10 minutes");
        }
        if !(1..=caps.otp_tries).contains(&self.otp_tries) {
            return Err("otp_tries must be between 1 and 5");
        }
        if !(1..=caps.otp_sends).contains(&self.otp_sends) {
            return Err("otp_sends must be between 1 and 3");
        }
        if self.otp_resend_interval < caps.otp_resend_interval
            || self.otp_resend_interval > Duration::minutes(5)
        {
            return Err("otp_resend_interval must be between 30 seconds and 5 minutes");
        }
        if !(1..=caps.factor_failures_to_lock).contains(&self.factor_failures_to_lock) {
            return Err("factor_failures_to_lock must be between 1 and 5");
        }
        if !(self.factor_failures_to_lock..=caps.all_failures_to_lock)
            .contains(&self.all_failures_to_lock)
        {
            return Err("all_failures_to_lock must be between factor_failures_to_lock and 10");
        }
        if !within(
            self.lease_absolute,
            Duration::minutes(1),
            caps.lease_absolute,
        ) {
            return Err("lease_absolute must be between 1 and 60 minutes");
        }
        if !(1..=caps.open_flows_per_grant).contains(&self.open_flows_per_grant) {
            return Err("open_flows_per_grant must be between 1 and 20");
        }
        if !(self.otp_sends..=caps.sends_per_grant_per_hour)
            .contains(&self.sends_per_grant_per_hour)
        {
            return Err("sends_per_grant_per_hour must be between otp_sends and 10");
        }
        Ok(())
    }

    /// Whether a grant with these failure counts must be locked now.
    pub fn locks(&self, factor_failures: u32, otp_failures: u32) -> bool {
        factor_failures >= self.factor_failures_to_lock
            || factor_failures.saturating_add(otp_failures) >= self.all_failures_to_lock
    }

    /// Factor attempts left before the grant locks.
    pub fn factor_attempts_left(&self, factor_failures: u32, otp_failures: u32) -> u32 {
        let by_factor = self.factor_failures_to_lock.saturating_sub(factor_failures);
        let by_all = self
            .all_failures_to_lock
            .saturating_sub(factor_failures.saturating_add(otp_failures));
        by_factor.min(by_all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_spec_6_and_pass_their_own_check() {
        let l = FlowLimits::default();
        assert_eq!(l.flow_ttl, Duration::minutes(15));
        assert_eq!(l.otp_ttl, Duration::minutes(10));
        assert_eq!((l.otp_tries, l.otp_sends), (5, 3));
        assert_eq!(l.otp_resend_interval, Duration::seconds(30));
        assert_eq!((l.factor_failures_to_lock, l.all_failures_to_lock), (5, 10));
        assert_eq!(l.lease_absolute, Duration::hours(1));
        assert_eq!(l.check(), Ok(()));
    }

    #[test]
    fn looser_than_the_caps_is_refused_stricter_is_fine() {
        let looser: [fn(&mut FlowLimits); 7] = [
            |l| l.flow_ttl = Duration::minutes(16),
            |l| l.otp_ttl = Duration::minutes(11),
            |l| l.otp_tries = 6,
            |l| l.otp_sends = 4,
            |l| l.otp_resend_interval = Duration::seconds(29),
            |l| l.all_failures_to_lock = 11,
            |l| l.lease_absolute = Duration::minutes(61),
        ];
        for change in looser {
            let mut l = FlowLimits::default();
            change(&mut l);
            assert!(l.check().is_err(), "{l:?}");
        }
        let stricter = FlowLimits {
            otp_tries: 3,
            factor_failures_to_lock: 3,
            all_failures_to_lock: 6,
            ..FlowLimits::default()
        };
        assert_eq!(stricter.check(), Ok(()));
    }

    #[test]
    fn lock_rules() {
        let l = FlowLimits::default();
        // (factor failures, otp failures, locks, factor attempts left)
        let table = [
            (0, 0, false, 5),
            (4, 0, false, 1),
            (5, 0, true, 0),
            (4, 5, false, 1),
            (4, 6, true, 0),
            (0, 9, false, 1),
            (0, 10, true, 0),
            (2, 7, false, 1),
        ];
        for (f, o, locks, left) in table {
            assert_eq!(l.locks(f, o), locks, "{f} {o}");
            assert_eq!(l.factor_attempts_left(f, o), left, "{f} {o}");
        }
    }
}
