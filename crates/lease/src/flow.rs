//! The flow: one attempt to turn a link into a lease, as a state machine with the clock passed in.
//!
//! ```text
//!                 Factor ok, code 1 recorded                      Otp ok
//!  ┌─────────┐ ─────────────────────────────▶ ┌─────────┐ ─────────────────▶ ┌────────┐
//!  │ Visited │                                │ OtpSent │                    │ Leased │
//!  └─────────┘ ──────────────────────────────────────────────────────────▶ └────────┘
//!    │   ▲      Factor ok, no OTP channel       │  ▲  │
//!    └───┘ Factor wrong (counted per grant;     └──┘  │ 5th wrong code
//!          the grant locks at the limit)   Resend      ▼
//!                                          (code n    ┌──────┐
//!                                          recorded), │ Dead │
//!  Any event after `expires_at` (15 min):  Otp wrong  └──────┘
//!  flow_expired.
//! ```
//!
//! A send is recorded *before* its code is handed to the courier: the transition that sends
//! code `n` stores `sends = n` and the code's hash in the same compare-and-set, so of any number
//! of concurrent requests at most one sends each code, and however slow the courier is, at most
//! `otp_sends` codes, `otp_resend_interval` apart, can ever leave for one flow. A delivery that
//! then fails still counts (the message may have left). `FactorPassed` is only found in flows
//! stored before sends were recorded this way; a resend moves them on.
//!
//! [`Flow::step`] returns `Err` when the event changes nothing (wrong step, expired flow, resend
//! too soon); otherwise a [`Transition`]: the next flow, the [`Effect`]s the caller must carry
//! out in one transaction (count a failure, append audit events, send a code, issue a lease),
//! and, for a wrong factor or code, the refusal to answer once that is stored.

use linklease_grant::{ClientId, FlowId, GrantId, SecretHash, SecretKeys, SecretString};
use time::{Duration, OffsetDateTime};

use crate::limits::FlowLimits;
use crate::otp;

/// Who may continue a flow: the browser holding its cookie, or the partner client that opened it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// A browser, through the `__Host-ll_flow` cookie.
    Browser,
    /// A partner web app, through its client credentials.
    Partner(ClientId),
}

/// Where a flow stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The link was opened; the factor (or the Continue button) comes next.
    Visited,
    /// The factor passed and no code is recorded yet (flows stored by earlier versions only).
    FactorPassed,
    /// A code was recorded and handed to the courier, and awaits entry.
    OtpSent,
    /// A lease was issued; the flow is finished.
    Leased,
    /// Too many wrong codes.
    Dead,
}

impl Step {
    /// The steps of a flow that may still go on (not leased, not dead); whether it has
    /// expired is a matter of its clock, see [`Flow::is_open`].
    pub const OPEN: [Step; 3] = [Step::Visited, Step::FactorPassed, Step::OtpSent];

    /// The stable name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Visited => "visited",
            Step::FactorPassed => "factor_passed",
            Step::OtpSent => "otp_sent",
            Step::Leased => "leased",
            Step::Dead => "dead",
        }
    }

    /// Parses the stable name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Step::Visited,
            Step::FactorPassed,
            Step::OtpSent,
            Step::Leased,
            Step::Dead,
        ]
        .into_iter()
        .find(|step| step.as_str() == s)
    }
}

/// The code currently valid in a flow. A new code replaces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentOtp {
    /// Which send this was (1, 2, 3): part of the code's hash.
    pub send: u32,
    /// The keyed hash of the code.
    pub hash: SecretHash,
    /// When it was recorded, just before it went to the courier.
    pub sent_at: OffsetDateTime,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
    /// Wrong entries of this code so far.
    pub tries: u32,
}

/// One attempt to turn a link into a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Its id.
    pub id: FlowId,
    /// The grant it is for.
    pub grant: GrantId,
    /// Who may continue it.
    pub holder: Holder,
    /// When the link was opened.
    pub created_at: OffsetDateTime,
    /// When it stops, whatever its step.
    pub expires_at: OffsetDateTime,
    /// Where it stands.
    pub step: Step,
    /// Codes sent so far (each recorded before it went to the courier).
    pub sends: u32,
    /// The code now valid, if any.
    pub otp: Option<SentOtp>,
}

/// What happens to a flow.
#[derive(Debug)]
pub enum Event {
    /// The factor was checked (`matched` is always true for factor `none`: the Continue button).
    Factor {
        /// Whether it matched the grant's verifier.
        matched: bool,
        /// For a grant that sends codes: [`otp::hash`] of code number [`Flow::next_send`], made
        /// by the caller and sent only if the transition says [`Effect::SendOtp`]. `None`: the
        /// grant sends no code and the lease follows the factor.
        code: Option<SecretHash>,
    },
    /// The visitor asks for another code: [`otp::hash`] of code number [`Flow::next_send`].
    Resend {
        /// The new code's keyed hash.
        code: SecretHash,
    },
    /// A code was entered (see [`Flow::otp_matches`]).
    Otp {
        /// Whether it is the current, unexpired code.
        matched: bool,
    },
}

/// What the caller must do, in one transaction with storing the next flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Record `factor.passed`.
    FactorPassed,
    /// Count a factor failure on the grant (locking it at the limit) and record `factor.failed`.
    FactorFailed,
    /// Record `otp.sent` for code number `send` (counted against the grant's sends per hour),
    /// and once that is committed, hand the code to the courier.
    SendOtp {
        /// The code's number in this flow.
        send: u32,
    },
    /// Record `otp.passed`.
    OtpPassed,
    /// Count an OTP failure on the grant (locking it at the limit) and record `otp.failed`.
    OtpFailed,
    /// Issue a lease on the grant and record `lease.issued`.
    IssueLease,
}

/// Why an event was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The flow outlived its 15 minutes.
    #[error("this flow has expired; open the link again")]
    Expired,
    /// The flow died of too many wrong codes.
    #[error("too many wrong codes; open the link again")]
    Dead,
    /// The flow already issued its lease.
    #[error("this flow is finished")]
    Finished,
    /// The event does not fit the step (e.g. a code before the factor).
    #[error("this step is not expected now")]
    WrongStep,
    /// The factor did not match.
    #[error("the second factor does not match")]
    FactorMismatch,
    /// The code did not match.
    #[error("the code does not match")]
    OtpMismatch {
        /// Wrong entries left before the flow dies.
        tries_left: u32,
    },
    /// The code's 10 minutes are over; ask for another.
    #[error("the code has expired; ask for a new one")]
    OtpExpired,
    /// Another code was asked for too soon.
    #[error("wait before asking for another code")]
    ResendTooSoon {
        /// How long to wait.
        retry_after: Duration,
    },
    /// All sends of this flow are used.
    #[error("no more codes can be sent in this flow; open the link again")]
    SendsExhausted,
}

/// The outcome of an accepted event.
#[derive(Debug)]
pub struct Transition {
    /// The flow to store.
    pub flow: Flow,
    /// What to carry out with it.
    pub effects: Vec<Effect>,
    /// For a wrong factor or code: the answer to give once the flow and effects are stored.
    pub refusal: Option<FlowError>,
}

impl Flow {
    /// A flow opened at `now` by `holder`.
    pub fn open(
        id: FlowId,
        grant: GrantId,
        holder: Holder,
        now: OffsetDateTime,
        limits: &FlowLimits,
    ) -> Self {
        Self {
            id,
            grant,
            holder,
            created_at: now,
            expires_at: now + limits.flow_ttl,
            step: Step::Visited,
            sends: 0,
            otp: None,
        }
    }

    /// Whether the flow may still go on at `now`: not expired, leased or dead.
    pub fn is_open(&self, now: OffsetDateTime) -> bool {
        Step::OPEN.contains(&self.step) && now < self.expires_at
    }

    /// The number of the next code this flow would send.
    pub fn next_send(&self) -> u32 {
        self.sends + 1
    }

    /// Whether `presented` is the current code (expiry is checked by [`Flow::step`]).
    pub fn otp_matches(&self, keys: &SecretKeys, presented: &SecretString) -> bool {
        self.otp
            .as_ref()
            .is_some_and(|sent| otp::matches(keys, self.id.0, sent.send, &sent.hash, presented))
    }

    /// Records code number [`Flow::next_send`] as sent at `now` (it replaces any earlier code)
    /// and returns its number.
    fn record_send(&mut self, code: SecretHash, now: OffsetDateTime, limits: &FlowLimits) -> u32 {
        self.sends += 1;
        self.step = Step::OtpSent;
        self.otp = Some(SentOtp {
            send: self.sends,
            hash: code,
            sent_at: now,
            expires_at: now + limits.otp_ttl,
            tries: 0,
        });
        self.sends
    }

    /// Moves the flow by one event at `now`.
    pub fn step(
        &self,
        event: Event,
        now: OffsetDateTime,
        limits: &FlowLimits,
    ) -> Result<Transition, FlowError> {
        match self.step {
            Step::Dead => return Err(FlowError::Dead),
            Step::Leased => return Err(FlowError::Finished),
            _ if now >= self.expires_at => return Err(FlowError::Expired),
            _ => {}
        }
        let mut next = self.clone();
        let done = |flow, effects: Vec<Effect>, refusal| {
            Ok(Transition {
                flow,
                effects,
                refusal,
            })
        };
        match (self.step, event) {
            (Step::Visited, Event::Factor { matched: false, .. }) => done(
                next,
                vec![Effect::FactorFailed],
                Some(FlowError::FactorMismatch),
            ),
            (
                Step::Visited,
                Event::Factor {
                    matched: true,
                    code,
                },
            ) => match code {
                Some(code) => {
                    let send = next.record_send(code, now, limits);
                    done(
                        next,
                        vec![Effect::FactorPassed, Effect::SendOtp { send }],
                        None,
                    )
                }
                None => {
                    next.step = Step::Leased;
                    done(next, vec![Effect::FactorPassed, Effect::IssueLease], None)
                }
            },
            (Step::FactorPassed | Step::OtpSent, Event::Resend { code }) => {
                if self.sends >= limits.otp_sends {
                    return Err(FlowError::SendsExhausted);
                }
                if let Some(sent) = &self.otp {
                    let ready = sent.sent_at + limits.otp_resend_interval;
                    if now < ready {
                        return Err(FlowError::ResendTooSoon {
                            retry_after: ready - now,
                        });
                    }
                }
                let send = next.record_send(code, now, limits);
                done(next, vec![Effect::SendOtp { send }], None)
            }
            (Step::OtpSent, Event::Otp { matched }) => {
                let Some(sent) = next.otp.as_mut() else {
                    return Err(FlowError::WrongStep);
                };
                if now >= sent.expires_at {
                    return Err(FlowError::OtpExpired);
                }
                if matched {
                    next.step = Step::Leased;
                    next.otp = None;
                    return done(next, vec![Effect::OtpPassed, Effect::IssueLease], None);
                }
                sent.tries += 1;
                let tries_left = limits.otp_tries.saturating_sub(sent.tries);
                if tries_left == 0 {
                    next.step = Step::Dead;
                    next.otp = None;
                }
                done(
                    next,
                    vec![Effect::OtpFailed],
                    Some(FlowError::OtpMismatch { tries_left }),
                )
            }
            _ => Err(FlowError::WrongStep),
        }
    }
}
