//! Bot checks for the public forms (sign-up, contact): Cloudflare Turnstile when it is
//! configured, a built-in proof of work otherwise (DESIGN.md, promise 6).
//!
//! [`BotCheck`] is the one front the forms use: [`BotCheck::widget`] says what the template must
//! render, [`BotCheck::verify`] checks what the browser sent back. Both back ends refuse when in
//! doubt: an unreachable, slow or confused verifier is a refusal, never a pass.
//!
//! # Proof of work
//!
//! The server signs a challenge; the browser (`static/pow.js`, WebCrypto) searches for a counter
//! such that `SHA-256(challenge ‖ ":" ‖ counter)` starts with `difficulty` zero bits, which takes
//! 2^difficulty hashes on average. That costs a person half a second once and costs a bot the
//! same for every submission, which is the point: it prices bulk sign-ups and contact spam
//! rather than proving humanity.
//!
//! The challenge is a compact, URL-safe string:
//!
//! ```text
//! pow1.<purpose>.<difficulty>.<issued_at>.<expires_at>.<nonce>.<mac>
//! pow1.signup.16.1767225600.1767225900.q5X0t1p7bL2Yx2bH9kQy3A.3uJ…(43 chars)
//! ```
//!
//! `issued_at` / `expires_at` are Unix seconds, `nonce` is 128 random bits and `mac` is
//! HMAC-SHA256 over everything before the last dot, both base64url without padding. The key is
//! 32 bytes given to [`PowIssuer::new`] (derive it from the master key so every server process
//! agrees). Nothing is stored when a challenge is issued, so rendering a form costs no write;
//! single use is enforced when a solution is accepted, by a [`ReplayGuard`] that remembers the
//! nonce until the challenge expires.
//!
//! Verification order: shape and length (cheap, before any hashing), signature in constant time,
//! then — only for authentic challenges — purpose, expiry (injected clock), the minimum
//! difficulty, the proof, and last the replay guard, so only a fully valid proof consumes a
//! challenge.
//!
//! Default difficulty: [`DEFAULT_POW_DIFFICULTY`] = 16 bits, i.e. 2^16 = 65,536 hashes expected.
//! Chromium's WebCrypto, batched as `pow.js` does, computed about 230k SHA-256 digests a second
//! on one core of a small 2-core VM (100k–130k with a build running beside it), so the expected
//! solve is 0.3–0.6 s; 60 solves in headless Chromium 156 there took 313 ms on average (median
//! 236 ms, slowest 1.7 s). The number of hashes is geometrically distributed: one solve in twenty
//! takes three times the mean or more. Each extra bit doubles the time.
//!
//! # Turnstile
//!
//! [`TurnstileVerifier`] posts the widget's token to Cloudflare's siteverify endpoint and accepts
//! only `success: true` with the expected hostname and action. Tokens are single use at
//! Cloudflare too, but the local [`ReplayGuard`] also refuses a token seen before, without a
//! network call, so concurrent duplicates on different workers don't race to Cloudflare.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::platform::clock::SharedClock;
use crate::platform::crypto::{random_bytes, sha256_hex};
use crate::platform::error::DomainError;
use crate::platform::secret::{Secret, ct_eq};

/// Form field the Turnstile widget fills with its token.
pub const TURNSTILE_FIELD: &str = "cf-turnstile-response";
/// Form field carrying the proof-of-work challenge back (the form's hidden input).
pub const POW_CHALLENGE_FIELD: &str = "pow_challenge";
/// Form field `pow.js` fills with the counter it found.
pub const POW_SOLUTION_FIELD: &str = "pow_solution";

/// The browser solver, to be served as `/static/pow.js` (the page loads it as a file: the CSP
/// allows no inline script).
pub const POW_JS: &str = include_str!("../../static/pow.js");

/// Leading zero bits required by default: 2^16 = 65,536 hashes expected, about half a second in
/// a browser (see the module documentation).
pub const DEFAULT_POW_DIFFICULTY: u8 = 16;
/// The hardest challenge the issuer will sign. 2^32 hashes is hours in a browser; anything
/// beyond it is a configuration mistake, not a defence.
pub const MAX_POW_DIFFICULTY: u8 = 32;
/// How long a challenge may be solved and submitted after it was issued.
pub const DEFAULT_POW_TTL: Duration = Duration::from_secs(5 * 60);

/// Cloudflare's siteverify host.
pub const DEFAULT_TURNSTILE_BASE_URL: &str = "https://challenges.cloudflare.com";
/// Total time allowed for one siteverify exchange.
pub const DEFAULT_TURNSTILE_TIMEOUT: Duration = Duration::from_secs(5);
/// Turnstile tokens are at most this long (Cloudflare's documented limit); longer input is
/// refused without calling Cloudflare. Counted in bytes: real tokens are ASCII.
pub const TURNSTILE_TOKEN_MAX_LEN: usize = 2048;
/// Turnstile tokens are valid for five minutes after they were generated, so remembering a
/// token for five minutes after we first saw it outlives it.
pub const TURNSTILE_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Entries the in-process replay guard keeps before it evicts the soonest-expiring one.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// Shown to the user for every refusal caused by what the browser sent. Deliberately the same
/// whatever went wrong: a bot learns nothing from it, and a person without JavaScript learns the
/// one thing they can fix.
pub const USER_MESSAGE: &str = "We couldn't confirm that this form was sent by a person. \
     Please make sure JavaScript is enabled, then try again.";
/// Shown when the verifier itself could not give an answer (Turnstile down or misconfigured).
pub const UNAVAILABLE_MESSAGE: &str = "We couldn't check this form just now. Please try again in a moment.";

const SITEVERIFY_PATH: &str = "/turnstile/v0/siteverify";
/// siteverify answers with a few hundred bytes; anything much larger is not siteverify.
const MAX_SITEVERIFY_RESPONSE: usize = 16 * 1024;
const POW_VERSION: &str = "pow1";
/// Longer than any challenge we issue (~110 characters); checked before any hashing.
const MAX_CHALLENGE_LEN: usize = 256;
/// `u64::MAX` has 20 decimal digits.
const MAX_SOLUTION_LEN: usize = 20;

/// The form a challenge or token is for. A proof for one form is refused on another, so a
/// solution farmed on the cheap contact form can't be spent on sign-up. It is also the Turnstile
/// `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Signup,
    Contact,
    /// The vulnerability report form (`/security/report`).
    SecurityReport,
}

impl Purpose {
    pub const ALL: [Purpose; 3] = [Purpose::Signup, Purpose::Contact, Purpose::SecurityReport];

    /// Also the Turnstile action, so it keeps to Turnstile's alphabet (`[A-Za-z0-9_-]`, at most
    /// 32 characters) and contains no `.` (the challenge separator).
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Signup => "signup",
            Purpose::Contact => "contact",
            Purpose::SecurityReport => "security_report",
        }
    }

    fn parse(s: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a bot check refused. Each cause is its own variant so logs and tests can tell them apart;
/// users only ever see [`BotCheckError::user_message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BotCheckError {
    /// The form carried no token / no solution (typically: JavaScript is off).
    #[error("the form carried no bot-check proof")]
    MissingProof,
    #[error("the proof-of-work challenge or solution is malformed")]
    Malformed,
    #[error("the proof-of-work challenge signature does not verify")]
    BadSignature,
    #[error("the proof-of-work challenge was issued for another form")]
    WrongPurpose,
    #[error("the proof-of-work challenge has expired")]
    Expired,
    #[error("the proof-of-work challenge asks for {claimed} bits, below the required {required}")]
    TooEasy { claimed: u8, required: u8 },
    #[error("the proof-of-work solution does not meet the difficulty")]
    WrongSolution,
    #[error("the challenge or token was already used")]
    Replayed,
    #[error("the Turnstile token is longer than {TURNSTILE_TOKEN_MAX_LEN} characters")]
    TokenTooLong,
    #[error("Turnstile refused the token: {codes:?}")]
    TurnstileRejected { codes: Vec<String> },
    #[error("Turnstile refused our secret key ({codes:?}): check bot_check.turnstile_secret_key")]
    TurnstileSecretRejected { codes: Vec<String> },
    #[error("the Turnstile token was issued for hostname {got:?}")]
    HostnameMismatch { got: Option<String> },
    #[error("the Turnstile token was issued for action {got:?}")]
    ActionMismatch { got: Option<String> },
    #[error("Turnstile siteverify did not answer in time")]
    Timeout,
    #[error("Turnstile siteverify is unreachable: {0}")]
    Unreachable(String),
    #[error("Turnstile siteverify request failed: {0}")]
    Transport(String),
    #[error("Turnstile siteverify answered HTTP {0}")]
    UpstreamStatus(u16),
    #[error("Turnstile siteverify answered something other than its JSON: {0}")]
    MalformedResponse(String),
}

impl BotCheckError {
    /// True when the verifier could not give an answer (outage or our misconfiguration), as
    /// opposed to a proof that was looked at and found wanting. Either way the form is refused.
    pub fn is_upstream_failure(&self) -> bool {
        matches!(
            self,
            BotCheckError::TurnstileSecretRejected { .. }
                | BotCheckError::Timeout
                | BotCheckError::Unreachable(_)
                | BotCheckError::Transport(_)
                | BotCheckError::UpstreamStatus(_)
                | BotCheckError::MalformedResponse(_)
        )
    }

    /// What the user is told: generic, never the cause.
    pub fn user_message(&self) -> &'static str {
        if self.is_upstream_failure() { UNAVAILABLE_MESSAGE } else { USER_MESSAGE }
    }
}

impl From<BotCheckError> for DomainError {
    fn from(e: BotCheckError) -> Self {
        if e.is_upstream_failure() {
            DomainError::Unavailable(UNAVAILABLE_MESSAGE.into())
        } else {
            DomainError::Malformed(USER_MESSAGE.into())
        }
    }
}

/// A setting that can't work; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bot_check.{setting}: {reason}")]
pub struct BotCheckConfigError {
    pub setting: &'static str,
    pub reason: String,
}

impl BotCheckConfigError {
    fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        Self { setting, reason: reason.into() }
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Bot-check settings (meant to live under `[bot_check]` in the configuration tree).
///
/// Turnstile is used when both keys are set; with neither, the built-in proof of work. One
/// without the other is refused at start rather than silently falling back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BotCheckConfig {
    /// Turnstile site key (public, rendered into the page).
    pub turnstile_site_key: Option<String>,
    /// Turnstile secret key, sent only to siteverify.
    pub turnstile_secret_key: Option<Secret>,
    /// Where siteverify lives; only tests change it. `https`, or `http` to a loopback address.
    pub turnstile_base_url: String,
    /// The hostname tokens must have been issued on. Unset: the host of `public_url`.
    pub turnstile_hostname: Option<String>,
    pub turnstile_timeout_ms: u64,
    /// Leading zero bits a proof of work needs (2^n hashes expected).
    pub pow_difficulty: u8,
    /// How long a challenge stays valid after the page was rendered.
    pub pow_ttl_secs: u64,
    /// Bound of the in-process replay guard (`MemoryReplayGuard::new(clock, replay_capacity)`),
    /// and of the in-process mirror of [`RedisReplayGuard`] when Redis is configured.
    pub replay_capacity: usize,
}

impl Default for BotCheckConfig {
    fn default() -> Self {
        Self {
            turnstile_site_key: None,
            turnstile_secret_key: None,
            turnstile_base_url: DEFAULT_TURNSTILE_BASE_URL.into(),
            turnstile_hostname: None,
            turnstile_timeout_ms: DEFAULT_TURNSTILE_TIMEOUT.as_millis() as u64,
            pow_difficulty: DEFAULT_POW_DIFFICULTY,
            pow_ttl_secs: DEFAULT_POW_TTL.as_secs(),
            replay_capacity: DEFAULT_REPLAY_CAPACITY,
        }
    }
}

/// Difficulty accepted from configuration: below 8 bits the check costs a bot nothing; above 24
/// (16.7 million hashes, minutes in a browser) real users would give up.
const CONFIG_DIFFICULTY: std::ops::RangeInclusive<u8> = 8..=24;

// ---------------------------------------------------------------------------------------------
// The unified front
// ---------------------------------------------------------------------------------------------

/// What a form template renders for the bot check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Widget {
    /// `<div class="cf-turnstile" data-sitekey="{site_key}" data-action="{action}">` plus
    /// Cloudflare's `api.js`; the widget adds the `cf-turnstile-response` field.
    Turnstile { site_key: String, action: &'static str },
    /// `<form … data-pow-challenge="{challenge}">` with
    /// `<input type="hidden" name="pow_challenge" value="{challenge}">` and
    /// `<input type="hidden" name="pow_solution" value="">`, plus `/static/pow.js`.
    ProofOfWork { challenge: String, difficulty: u8 },
}

/// The bot-check fields of a submitted form. Flatten it into a form struct
/// (`#[serde(flatten)]`) or build it from the parsed fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct BotCheckFields {
    #[serde(rename = "cf-turnstile-response", default)]
    pub turnstile_response: Option<String>,
    #[serde(default)]
    pub pow_challenge: Option<String>,
    #[serde(default)]
    pub pow_solution: Option<String>,
}

/// The bot check in force: Turnstile when configured, proof of work otherwise.
#[derive(Debug)]
pub enum BotCheck {
    Turnstile(TurnstileVerifier),
    ProofOfWork(PowIssuer),
}

impl BotCheck {
    /// Builds the check from configuration.
    ///
    /// `pow_key` signs proof-of-work challenges (derive it from the master key with its own
    /// label); `public_hostname` is the host of `public_url`, the hostname Turnstile tokens must
    /// carry unless `turnstile_hostname` says otherwise.
    pub fn from_config(
        config: &BotCheckConfig,
        pow_key: [u8; 32],
        public_hostname: &str,
        clock: SharedClock,
        replay: Arc<dyn ReplayGuard>,
    ) -> Result<Self, BotCheckConfigError> {
        let site_key = config.turnstile_site_key.as_ref().filter(|k| !k.trim().is_empty());
        let secret_key = config.turnstile_secret_key.as_ref().filter(|k| !k.expose().trim().is_empty());
        match (site_key, secret_key) {
            (Some(site_key), Some(secret_key)) => {
                if !(100..=60_000).contains(&config.turnstile_timeout_ms) {
                    return Err(BotCheckConfigError::new("turnstile_timeout_ms", "must be between 100 and 60000"));
                }
                let settings = TurnstileSettings {
                    site_key: site_key.clone(),
                    secret_key: secret_key.clone(),
                    base_url: config.turnstile_base_url.clone(),
                    expected_hostname: config.turnstile_hostname.clone().unwrap_or_else(|| public_hostname.to_string()),
                    timeout: Duration::from_millis(config.turnstile_timeout_ms),
                };
                Ok(BotCheck::Turnstile(TurnstileVerifier::new(settings, clock, replay)?))
            }
            (None, None) => {
                if !CONFIG_DIFFICULTY.contains(&config.pow_difficulty) {
                    return Err(BotCheckConfigError::new(
                        "pow_difficulty",
                        format!(
                            "must be between {} and {} (bits; 2^n hashes per solve)",
                            CONFIG_DIFFICULTY.start(),
                            CONFIG_DIFFICULTY.end()
                        ),
                    ));
                }
                if !(30..=3600).contains(&config.pow_ttl_secs) {
                    return Err(BotCheckConfigError::new("pow_ttl_secs", "must be between 30 and 3600"));
                }
                let settings =
                    PowSettings { difficulty: config.pow_difficulty, ttl: Duration::from_secs(config.pow_ttl_secs) };
                Ok(BotCheck::ProofOfWork(PowIssuer::new(pow_key, settings, clock, replay)?))
            }
            (Some(_), None) => Err(BotCheckConfigError::new(
                "turnstile_secret_key",
                "is required when turnstile_site_key is set (set both to use Turnstile, or \
                 neither for the built-in proof of work)",
            )),
            (None, Some(_)) => Err(BotCheckConfigError::new(
                "turnstile_site_key",
                "is required when turnstile_secret_key is set (set both to use Turnstile, or \
                 neither for the built-in proof of work)",
            )),
        }
    }

    /// What the form for `purpose` must render. For proof of work this issues a fresh
    /// challenge, so call it on every render (a re-rendered form after an error included).
    pub fn widget(&self, purpose: Purpose) -> Widget {
        match self {
            BotCheck::Turnstile(t) => {
                Widget::Turnstile { site_key: t.site_key().to_string(), action: purpose.as_str() }
            }
            BotCheck::ProofOfWork(p) => p.widget(purpose),
        }
    }

    /// Checks the bot-check fields of a form submitted for `purpose`. A proof of the other
    /// kind than the one configured counts as no proof.
    pub async fn verify(
        &self,
        fields: &BotCheckFields,
        remote_ip: IpAddr,
        purpose: Purpose,
    ) -> Result<(), BotCheckError> {
        fn non_empty(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|s| !s.is_empty())
        }
        match self {
            BotCheck::Turnstile(t) => {
                let token = non_empty(&fields.turnstile_response).ok_or(BotCheckError::MissingProof)?;
                t.verify(token, remote_ip, purpose.as_str()).await
            }
            BotCheck::ProofOfWork(p) => {
                let (Some(challenge), Some(solution)) =
                    (non_empty(&fields.pow_challenge), non_empty(&fields.pow_solution))
                else {
                    return Err(BotCheckError::MissingProof);
                };
                p.verify(challenge, solution, purpose).await
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Replay guard
// ---------------------------------------------------------------------------------------------

/// Remembers which challenges and tokens were already accepted.
///
/// `first_use` answers true exactly once per `id` while `expires_at` is in the future, and
/// remembers the id until then. Callers refuse expired proofs before asking, so an id need not
/// outlive its expiry. An implementation that can't answer (its store is down) must answer
/// false: a bot check fails closed.
pub trait ReplayGuard: Send + Sync + 'static {
    fn first_use<'a>(&'a self, id: &'a str, expires_at: OffsetDateTime) -> BoxFuture<'a, bool>;
}

/// In-process replay guard for a single node: bounded and expiring.
///
/// When full (after dropping expired entries) it evicts the entry that expires soonest rather
/// than refusing newcomers. Refusing would let anyone who fills it lock every user out of
/// sign-up; evicting only lets someone who has just pushed `capacity` fresh, fully paid-for
/// proofs through reuse one old proof, which saves them a negligible fraction of that work.
pub struct MemoryReplayGuard {
    clock: SharedClock,
    capacity: usize,
    state: Mutex<GuardState>,
}

#[derive(Default)]
struct GuardState {
    by_id: HashMap<String, OffsetDateTime>,
    by_expiry: BTreeSet<(OffsetDateTime, String)>,
}

impl MemoryReplayGuard {
    pub fn new(clock: SharedClock, capacity: usize) -> Self {
        Self { clock, capacity: capacity.max(1), state: Mutex::new(GuardState::default()) }
    }

    /// Ids currently remembered (expired ones may linger until the next call).
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GuardState> {
        // A panic while holding the lock can't leave the two maps inconsistent in a way that
        // lets a replay through (insertions go to both before anything can panic), so a
        // poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_and_insert(&self, id: &str, expires_at: OffsetDateTime) -> bool {
        let now = self.clock.now();
        let mut state = self.lock();
        while let Some(first) = state.by_expiry.first() {
            if first.0 > now {
                break;
            }
            if let Some((_, old)) = state.by_expiry.pop_first() {
                state.by_id.remove(&old);
            }
        }
        if state.by_id.contains_key(id) {
            return false;
        }
        if expires_at <= now {
            return true;
        }
        while state.by_id.len() >= self.capacity {
            match state.by_expiry.pop_first() {
                Some((_, old)) => {
                    state.by_id.remove(&old);
                }
                None => break,
            }
        }
        state.by_id.insert(id.to_string(), expires_at);
        state.by_expiry.insert((expires_at, id.to_string()));
        true
    }
}

impl ReplayGuard for MemoryReplayGuard {
    fn first_use<'a>(&'a self, id: &'a str, expires_at: OffsetDateTime) -> BoxFuture<'a, bool> {
        let first = self.check_and_insert(id, expires_at);
        Box::pin(async move { first })
    }
}

impl fmt::Debug for MemoryReplayGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReplayGuard").field("capacity", &self.capacity).field("len", &self.len()).finish()
    }
}

/// Replay guard shared by every server process through Redis (used when `redis.url` is set),
/// so a proof accepted by one process is refused by all the others.
///
/// Each id is also remembered in an in-process [`MemoryReplayGuard`], which answers first. When
/// Redis fails, that local answer stands: replays are then refused per process rather than
/// across processes, until Redis answers again. Refusing every proof instead would close
/// sign-up and the contact forms for the length of a Redis outage, which costs real people more
/// than it costs a bot that has paid for one proof per process. (This is the one deliberate
/// exception to "a guard that can't answer says no": it can still answer for this process.)
pub struct RedisReplayGuard {
    conn: redis::aio::ConnectionManager,
    timeout: Duration,
    clock: SharedClock,
    local: MemoryReplayGuard,
    degraded: std::sync::atomic::AtomicBool,
}

/// Prefix of the replay guard's Redis keys (the rate limiter's are `cf:rl:`).
pub const REPLAY_KEY_PREFIX: &str = "cf:bc:";

impl RedisReplayGuard {
    /// Connects (waiting at most `timeout` per command, `connect_timeout` for the first
    /// connection).
    pub async fn connect(
        url: &str,
        clock: SharedClock,
        capacity: usize,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(0);
        let conn =
            tokio::time::timeout(connect_timeout, redis::aio::ConnectionManager::new_with_config(client, config))
                .await
                .map_err(|_| "timed out connecting to Redis".to_string())?
                .map_err(|e| format!("connecting to Redis: {e}"))?;
        Ok(Self {
            conn,
            timeout,
            local: MemoryReplayGuard::new(clock.clone(), capacity),
            clock,
            degraded: std::sync::atomic::AtomicBool::new(false),
        })
    }

    async fn first_use_shared(&self, id: &str, expires_at: OffsetDateTime) -> bool {
        if !self.local.check_and_insert(id, expires_at) {
            return false;
        }
        let ttl_ms = (expires_at - self.clock.now()).whole_milliseconds().max(1);
        let key = format!("{REPLAY_KEY_PREFIX}{}", sha256_hex(id.as_bytes()));
        let mut conn = self.conn.clone();
        let set = async move {
            redis::cmd("SET")
                .arg(key)
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(i64::try_from(ttl_ms).unwrap_or(i64::MAX))
                .query_async::<Option<String>>(&mut conn)
                .await
        };
        let answer = tokio::time::timeout(self.timeout, set).await;
        use std::sync::atomic::Ordering;
        match answer {
            Ok(Ok(stored)) => {
                if self.degraded.swap(false, Ordering::AcqRel) {
                    tracing::warn!("bot-check replay guard: Redis answers again");
                }
                stored.is_some()
            }
            Ok(Err(_)) | Err(_) => {
                if !self.degraded.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        "bot-check replay guard: Redis failed; replays are refused per process until it answers"
                    );
                }
                true
            }
        }
    }
}

impl ReplayGuard for RedisReplayGuard {
    fn first_use<'a>(&'a self, id: &'a str, expires_at: OffsetDateTime) -> BoxFuture<'a, bool> {
        Box::pin(self.first_use_shared(id, expires_at))
    }
}

impl fmt::Debug for RedisReplayGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReplayGuard").field("local", &self.local).finish_non_exhaustive()
    }
}

/// Checks a configuration the way [`BotCheck::from_config`] will, without keys or a clock (for
/// validating the configuration at start, before anything else is set up).
/// Cloudflare Turnstile as a sub-processor, for the registry (`disclosure::subprocessors`):
/// on when both Turnstile keys are set (as [`BotCheck::from_config`] decides). The built-in
/// proof of work runs in the visitor's browser and on this server and involves no one else.
pub fn sub_processor(config: &BotCheckConfig) -> crate::platform::subprocessor::SubProcessor {
    let set = |k: Option<&str>| k.is_some_and(|k| !k.trim().is_empty());
    crate::platform::subprocessor::SubProcessor {
        id: "turnstile",
        name: "Cloudflare Turnstile",
        enabled: set(config.turnstile_site_key.as_deref())
            && set(config.turnstile_secret_key.as_ref().map(|s| s.expose())),
        setting: "bot_check.turnstile_site_key and bot_check.turnstile_secret_key",
        purpose: "Tells people from bots on the public forms (sign-up, contact, vulnerability reports).",
        receives: &[
            "the visitor's browser loads Cloudflare's widget script, which sees the visitor's IP address and browser",
            "the widget's one-time token, the visitor's IP address and the form's name, sent by this server to siteverify",
        ],
        region: "Cloudflare's global network".into(),
    }
}

pub fn validate_config(config: &BotCheckConfig) -> Result<(), BotCheckConfigError> {
    let clock: SharedClock = Arc::new(crate::platform::clock::SystemClock);
    let guard: Arc<dyn ReplayGuard> = Arc::new(MemoryReplayGuard::new(clock.clone(), 1));
    BotCheck::from_config(config, [0; 32], "localhost", clock, guard).map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// Proof of work
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowSettings {
    /// Minimum leading zero bits: challenges are issued with at least this, and solutions to
    /// challenges signed with less are refused.
    pub difficulty: u8,
    pub ttl: Duration,
}

impl Default for PowSettings {
    fn default() -> Self {
        Self { difficulty: DEFAULT_POW_DIFFICULTY, ttl: DEFAULT_POW_TTL }
    }
}

/// Issues and verifies signed proof-of-work challenges.
pub struct PowIssuer {
    /// HMAC-SHA256 keyed once; cloned per use.
    mac: Hmac<Sha256>,
    settings: PowSettings,
    clock: SharedClock,
    replay: Arc<dyn ReplayGuard>,
}

impl fmt::Debug for PowIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowIssuer").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// The authenticated fields of a challenge.
struct Challenge<'a> {
    purpose: &'a str,
    difficulty: u8,
    issued_at: i64,
    expires_at: i64,
    nonce: &'a str,
}

impl PowIssuer {
    pub fn new(
        key: [u8; 32],
        settings: PowSettings,
        clock: SharedClock,
        replay: Arc<dyn ReplayGuard>,
    ) -> Result<Self, BotCheckConfigError> {
        if settings.difficulty == 0 || settings.difficulty > MAX_POW_DIFFICULTY {
            return Err(BotCheckConfigError::new(
                "pow_difficulty",
                format!("must be between 1 and {MAX_POW_DIFFICULTY}"),
            ));
        }
        if settings.ttl < Duration::from_secs(1) {
            return Err(BotCheckConfigError::new("pow_ttl_secs", "must be at least one second"));
        }
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&key)
            .map_err(|e| BotCheckConfigError::new("pow key", e.to_string()))?;
        Ok(Self { mac, settings, clock, replay })
    }

    /// The minimum (and default) difficulty in bits.
    pub fn difficulty(&self) -> u8 {
        self.settings.difficulty
    }

    /// A fresh challenge at the configured difficulty.
    pub fn issue(&self, purpose: Purpose) -> String {
        self.issue_with_difficulty(purpose, self.settings.difficulty)
    }

    /// A fresh challenge at `difficulty` bits, raised to the configured minimum and capped at
    /// [`MAX_POW_DIFFICULTY`] (for raising the price under attack, never for lowering it).
    pub fn issue_with_difficulty(&self, purpose: Purpose, difficulty: u8) -> String {
        let difficulty = difficulty.clamp(self.settings.difficulty, MAX_POW_DIFFICULTY);
        let issued_at = self.clock.now().unix_timestamp();
        let ttl = i64::try_from(self.settings.ttl.as_secs()).unwrap_or(i64::MAX);
        let expires_at = issued_at.saturating_add(ttl);
        let nonce = URL_SAFE_NO_PAD.encode(random_bytes::<16>());
        let body = format!("{POW_VERSION}.{}.{difficulty}.{issued_at}.{expires_at}.{nonce}", purpose.as_str());
        let mac = self.sign(&body);
        format!("{body}.{mac}")
    }

    /// The widget for a form: a fresh challenge.
    pub fn widget(&self, purpose: Purpose) -> Widget {
        let challenge = self.issue(purpose);
        Widget::ProofOfWork { challenge, difficulty: self.settings.difficulty }
    }

    fn sign(&self, body: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(body.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Checks a solution for a challenge submitted with the form for `purpose`, and consumes the
    /// challenge if it is accepted.
    pub async fn verify(&self, challenge: &str, solution: &str, purpose: Purpose) -> Result<(), BotCheckError> {
        if challenge.is_empty() || solution.is_empty() {
            return Err(BotCheckError::MissingProof);
        }
        let fields = self.authenticate(challenge)?;
        if fields.purpose != purpose.as_str() {
            return Err(BotCheckError::WrongPurpose);
        }
        let now = self.clock.now();
        let expires_at =
            OffsetDateTime::from_unix_timestamp(fields.expires_at).map_err(|_| BotCheckError::Malformed)?;
        if now >= expires_at {
            return Err(BotCheckError::Expired);
        }
        if fields.difficulty < self.settings.difficulty {
            return Err(BotCheckError::TooEasy { claimed: fields.difficulty, required: self.settings.difficulty });
        }
        let counter = parse_solution(solution).ok_or(BotCheckError::Malformed)?;
        if leading_zero_bits(&pow_digest(challenge, counter)) < u32::from(fields.difficulty) {
            return Err(BotCheckError::WrongSolution);
        }
        let id = format!("pow:{}", fields.nonce);
        if !self.replay.first_use(&id, expires_at).await {
            return Err(BotCheckError::Replayed);
        }
        Ok(())
    }

    /// Checks the shape and the signature, then parses the signed fields. Nothing from the
    /// challenge is interpreted before its signature has been verified.
    fn authenticate<'a>(&self, challenge: &'a str) -> Result<Challenge<'a>, BotCheckError> {
        if challenge.len() > MAX_CHALLENGE_LEN || !challenge.is_ascii() {
            return Err(BotCheckError::Malformed);
        }
        let (body, mac) = challenge.rsplit_once('.').ok_or(BotCheckError::Malformed)?;
        let parts: Vec<&str> = body.split('.').collect();
        if parts.len() != 6 || parts[0] != POW_VERSION {
            return Err(BotCheckError::Malformed);
        }
        if !ct_eq(self.sign(body).as_bytes(), mac.as_bytes()) {
            return Err(BotCheckError::BadSignature);
        }
        let number = |s: &str| -> Result<i64, BotCheckError> {
            if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BotCheckError::Malformed);
            }
            s.parse().map_err(|_| BotCheckError::Malformed)
        };
        let difficulty = u8::try_from(number(parts[2])?)
            .ok()
            .filter(|d| (1..=MAX_POW_DIFFICULTY).contains(d))
            .ok_or(BotCheckError::Malformed)?;
        let fields = Challenge {
            purpose: parts[1],
            difficulty,
            issued_at: number(parts[3])?,
            expires_at: number(parts[4])?,
            nonce: parts[5],
        };
        if Purpose::parse(fields.purpose).is_none() || fields.expires_at <= fields.issued_at || fields.nonce.is_empty()
        {
            return Err(BotCheckError::Malformed);
        }
        Ok(fields)
    }
}

/// A solution is the decimal counter, as `pow.js` writes it: digits only.
fn parse_solution(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > MAX_SOLUTION_LEN || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `SHA-256(challenge ‖ ":" ‖ decimal counter)`, the hash the proof is about.
pub fn pow_digest(challenge: &str, counter: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(challenge.as_bytes());
    h.update(b":");
    h.update(counter.to_string().as_bytes());
    h.finalize().into()
}

/// Number of leading zero bits of a digest.
pub fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in digest {
        if *byte == 0 {
            bits += 8;
        } else {
            return bits + byte.leading_zeros();
        }
    }
    bits
}

/// Finds the smallest counter solving `challenge` at the difficulty written in it, as the
/// browser would. For tests and tools; `None` if the challenge has no readable difficulty.
pub fn solve_pow(challenge: &str) -> Option<u64> {
    let difficulty: u32 = challenge.split('.').nth(2)?.parse().ok()?;
    if difficulty == 0 || difficulty > u32::from(MAX_POW_DIFFICULTY) {
        return None;
    }
    (0..=u64::MAX).find(|c| leading_zero_bits(&pow_digest(challenge, *c)) >= difficulty)
}

// ---------------------------------------------------------------------------------------------
// Turnstile
// ---------------------------------------------------------------------------------------------

/// Settings of [`TurnstileVerifier`].
#[derive(Debug, Clone)]
pub struct TurnstileSettings {
    pub site_key: String,
    pub secret_key: Secret,
    /// Default [`DEFAULT_TURNSTILE_BASE_URL`]; `https`, or `http` to a loopback address (tests).
    pub base_url: String,
    /// The hostname of our site, which Cloudflare reports as where the widget was solved.
    pub expected_hostname: String,
    /// Total time for one siteverify exchange.
    pub timeout: Duration,
}

impl TurnstileSettings {
    pub fn new(site_key: impl Into<String>, secret_key: Secret, expected_hostname: impl Into<String>) -> Self {
        Self {
            site_key: site_key.into(),
            secret_key,
            base_url: DEFAULT_TURNSTILE_BASE_URL.into(),
            expected_hostname: expected_hostname.into(),
            timeout: DEFAULT_TURNSTILE_TIMEOUT,
        }
    }
}

/// What siteverify said about an accepted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnstileVerdict {
    /// When the challenge was solved (ISO 8601, as Cloudflare sent it).
    pub challenge_ts: Option<String>,
    pub hostname: String,
    pub action: String,
    /// The `data-cdata` the page gave the widget, if any.
    pub cdata: Option<String>,
}

/// siteverify's JSON answer. Every field but `success` may be absent on failures.
#[derive(Debug, Deserialize)]
struct SiteverifyResponse {
    success: bool,
    #[serde(default, rename = "error-codes")]
    error_codes: Vec<String>,
    #[serde(default)]
    challenge_ts: Option<String>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    cdata: Option<String>,
}

/// Verifies Turnstile tokens with Cloudflare's siteverify API.
pub struct TurnstileVerifier {
    http: reqwest::Client,
    siteverify_url: String,
    site_key: String,
    secret_key: Secret,
    expected_hostname: String,
    timeout: Duration,
    clock: SharedClock,
    replay: Arc<dyn ReplayGuard>,
}

impl fmt::Debug for TurnstileVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnstileVerifier")
            .field("siteverify_url", &self.siteverify_url)
            .field("site_key", &self.site_key)
            .field("expected_hostname", &self.expected_hostname)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TurnstileVerifier {
    pub fn new(
        settings: TurnstileSettings,
        clock: SharedClock,
        replay: Arc<dyn ReplayGuard>,
    ) -> Result<Self, BotCheckConfigError> {
        let base = url::Url::parse(&settings.base_url)
            .map_err(|e| BotCheckConfigError::new("turnstile_base_url", e.to_string()))?;
        let loopback = match base.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        // The secret key travels in the request body: only over TLS, except to a local fake.
        if !(base.scheme() == "https" || (base.scheme() == "http" && loopback)) {
            return Err(BotCheckConfigError::new(
                "turnstile_base_url",
                "must be an https:// URL (plain http only to a loopback address)",
            ));
        }
        if base.query().is_some() || base.fragment().is_some() || !base.username().is_empty() {
            return Err(BotCheckConfigError::new(
                "turnstile_base_url",
                "must not carry credentials, a query or a fragment",
            ));
        }
        if settings.site_key.trim().is_empty() || settings.secret_key.expose().trim().is_empty() {
            return Err(BotCheckConfigError::new(
                "turnstile_site_key",
                "Turnstile needs both a site key and a secret key",
            ));
        }
        let expected_hostname = settings.expected_hostname.trim().to_ascii_lowercase();
        if expected_hostname.is_empty() {
            return Err(BotCheckConfigError::new("turnstile_hostname", "the expected hostname is empty"));
        }
        let http = reqwest::Client::builder()
            // A redirect is not siteverify's answer; following one would also hand the secret
            // to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .build()
            .map_err(|e| BotCheckConfigError::new("turnstile_base_url", e.to_string()))?;
        let siteverify_url = format!("{}{SITEVERIFY_PATH}", base.as_str().trim_end_matches('/'));
        Ok(Self {
            http,
            siteverify_url,
            site_key: settings.site_key,
            secret_key: settings.secret_key,
            expected_hostname,
            timeout: settings.timeout,
            clock,
            replay,
        })
    }

    /// The public site key the widget is rendered with.
    pub fn site_key(&self) -> &str {
        &self.site_key
    }

    /// Accepts `token` only if siteverify says it is valid, was solved on our hostname for
    /// `expected_action`, and it wasn't seen before.
    pub async fn verify(&self, token: &str, remote_ip: IpAddr, expected_action: &str) -> Result<(), BotCheckError> {
        self.verify_token(token, remote_ip, expected_action).await.map(|_| ())
    }

    /// [`TurnstileVerifier::verify`], returning what siteverify reported.
    pub async fn verify_token(
        &self,
        token: &str,
        remote_ip: IpAddr,
        expected_action: &str,
    ) -> Result<TurnstileVerdict, BotCheckError> {
        if token.is_empty() {
            return Err(BotCheckError::MissingProof);
        }
        if token.len() > TURNSTILE_TOKEN_MAX_LEN {
            return Err(BotCheckError::TokenTooLong);
        }
        // Remembered by digest: the guard never holds a usable token, and every id is short.
        let id = format!("turnstile:{}", sha256_hex(token.as_bytes()));
        let remember_until = self.clock.now() + TURNSTILE_TOKEN_LIFETIME;
        if !self.replay.first_use(&id, remember_until).await {
            return Err(BotCheckError::Replayed);
        }
        let answer = match tokio::time::timeout(self.timeout, self.siteverify(token, remote_ip)).await {
            Ok(answer) => answer,
            Err(_) => Err(BotCheckError::Timeout),
        };
        let answer = answer.inspect_err(|e| {
            tracing::warn!(error = %e, "Turnstile siteverify gave no usable answer; refusing");
        })?;
        if !answer.success {
            let codes = answer.error_codes;
            if codes.iter().any(|c| c == "invalid-input-secret" || c == "missing-input-secret") {
                let e = BotCheckError::TurnstileSecretRejected { codes };
                tracing::error!(error = %e, "Turnstile rejected the secret key");
                return Err(e);
            }
            return Err(BotCheckError::TurnstileRejected { codes });
        }
        let hostname = match answer.hostname {
            Some(h) if h.eq_ignore_ascii_case(&self.expected_hostname) => h,
            got => return Err(BotCheckError::HostnameMismatch { got }),
        };
        let action = match answer.action {
            Some(a) if a == expected_action => a,
            got => return Err(BotCheckError::ActionMismatch { got }),
        };
        Ok(TurnstileVerdict { challenge_ts: answer.challenge_ts, hostname, action, cdata: answer.cdata })
    }

    async fn siteverify(&self, token: &str, remote_ip: IpAddr) -> Result<SiteverifyResponse, BotCheckError> {
        let remote_ip = remote_ip.to_string();
        // A fresh key per verification: we never retry, but Cloudflare's idempotency key lets an
        // operator correlate a request with its logs.
        let idempotency_key = uuid::Uuid::new_v4().to_string();
        let form = [
            ("secret", self.secret_key.expose()),
            ("response", token),
            ("remoteip", remote_ip.as_str()),
            ("idempotency_key", idempotency_key.as_str()),
        ];
        let mut res = self.http.post(&self.siteverify_url).form(&form).send().await.map_err(transport_error)?;
        if res.status().as_u16() != 200 {
            return Err(BotCheckError::UpstreamStatus(res.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > MAX_SITEVERIFY_RESPONSE {
                return Err(BotCheckError::MalformedResponse("the response is too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| BotCheckError::MalformedResponse(e.to_string()))
    }
}

fn transport_error(e: reqwest::Error) -> BotCheckError {
    if e.is_timeout() {
        BotCheckError::Timeout
    } else if e.is_connect() {
        BotCheckError::Unreachable(e.without_url().to_string())
    } else {
        BotCheckError::Transport(e.without_url().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::clock::ManualClock;
    use time::macros::datetime;

    const KEY: [u8; 32] = [7; 32];
    /// Small enough to solve instantly in a debug build, big enough that a random counter
    /// rarely passes by accident.
    const TEST_DIFFICULTY: u8 = 10;

    struct Fixture {
        clock: ManualClock,
        guard: Arc<MemoryReplayGuard>,
        issuer: PowIssuer,
    }

    fn fixture() -> Fixture {
        fixture_with(KEY, TEST_DIFFICULTY)
    }

    fn fixture_with(key: [u8; 32], difficulty: u8) -> Fixture {
        let clock = ManualClock::new(datetime!(2026-01-01 00:00 UTC));
        let shared: SharedClock = Arc::new(clock.clone());
        let guard = Arc::new(MemoryReplayGuard::new(shared.clone(), 1000));
        let issuer = PowIssuer::new(key, PowSettings { difficulty, ttl: DEFAULT_POW_TTL }, shared, guard.clone())
            .expect("issuer");
        Fixture { clock, guard, issuer }
    }

    /// A counter that does *not* meet the challenge's difficulty.
    fn non_solution(challenge: &str, difficulty: u8) -> u64 {
        (0..)
            .find(|c| leading_zero_bits(&pow_digest(challenge, *c)) < u32::from(difficulty))
            .expect("some counter fails")
    }

    #[test]
    fn leading_zero_bits_counts_across_bytes() {
        assert_eq!(leading_zero_bits(&[0x80]), 0);
        assert_eq!(leading_zero_bits(&[0x01]), 7);
        assert_eq!(leading_zero_bits(&[0x00, 0x00, 0x10]), 19);
        assert_eq!(leading_zero_bits(&[0x00, 0x00]), 16);
    }

    #[test]
    fn digest_is_sha256_of_challenge_colon_decimal_counter() {
        // The browser computes exactly this; pin it with an independent computation.
        let expected: [u8; 32] = Sha256::digest(b"abc:42").into();
        assert_eq!(pow_digest("abc", 42), expected);
    }

    #[test]
    fn challenge_is_compact_url_safe_and_carries_its_fields() {
        let f = fixture();
        let c = f.issuer.issue(Purpose::Signup);
        assert!(c.len() < 130, "{c}");
        assert!(c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'), "{c}");
        let parts: Vec<&str> = c.split('.').collect();
        assert_eq!(parts.len(), 7);
        assert_eq!(parts[0], "pow1");
        assert_eq!(parts[1], "signup");
        assert_eq!(parts[2], TEST_DIFFICULTY.to_string());
        let issued: i64 = parts[3].parse().unwrap();
        let expires: i64 = parts[4].parse().unwrap();
        assert_eq!(issued, datetime!(2026-01-01 00:00 UTC).unix_timestamp());
        assert_eq!(expires - issued, 300);
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[5]).unwrap().len(), 16);
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[6]).unwrap().len(), 32);
        assert_ne!(c, f.issuer.issue(Purpose::Signup), "nonces differ");
    }

    #[tokio::test]
    async fn valid_solution_is_accepted_once() {
        let f = fixture();
        let c = f.issuer.issue(Purpose::Signup);
        let s = solve_pow(&c).unwrap().to_string();
        f.issuer.verify(&c, &s, Purpose::Signup).await.unwrap();
        assert_eq!(f.issuer.verify(&c, &s, Purpose::Signup).await, Err(BotCheckError::Replayed));
        // Another solution to the same challenge is still the same challenge.
        let other = (solve_pow(&c).unwrap() + 1..)
            .find(|n| leading_zero_bits(&pow_digest(&c, *n)) >= u32::from(TEST_DIFFICULTY))
            .unwrap();
        assert_eq!(f.issuer.verify(&c, &other.to_string(), Purpose::Signup).await, Err(BotCheckError::Replayed));
    }

    #[tokio::test]
    async fn wrong_solution_is_refused_and_does_not_burn_the_challenge() {
        let f = fixture();
        let c = f.issuer.issue(Purpose::Contact);
        let bad = non_solution(&c, TEST_DIFFICULTY).to_string();
        assert_eq!(f.issuer.verify(&c, &bad, Purpose::Contact).await, Err(BotCheckError::WrongSolution));
        for garbage in ["", "-1", "+5", "1e3", " 7", "0x10", "123456789012345678901"] {
            let r = f.issuer.verify(&c, garbage, Purpose::Contact).await;
            assert!(
                matches!(r, Err(BotCheckError::Malformed) | Err(BotCheckError::MissingProof)),
                "{garbage:?}: {r:?}"
            );
        }
        let good = solve_pow(&c).unwrap().to_string();
        f.issuer.verify(&c, &good, Purpose::Contact).await.unwrap();
    }

    #[tokio::test]
    async fn expired_challenge_is_refused() {
        let f = fixture();
        let c = f.issuer.issue(Purpose::Signup);
        let s = solve_pow(&c).unwrap().to_string();
        f.clock.advance(time::Duration::seconds(299));
        let c2 = f.issuer.issue(Purpose::Signup);
        f.clock.advance(time::Duration::seconds(1));
        assert_eq!(f.issuer.verify(&c, &s, Purpose::Signup).await, Err(BotCheckError::Expired));
        // One issued later is still good.
        let s2 = solve_pow(&c2).unwrap().to_string();
        f.issuer.verify(&c2, &s2, Purpose::Signup).await.unwrap();
    }

    #[tokio::test]
    async fn tampered_challenge_fails_the_signature() {
        let f = fixture();
        let c = f.issuer.issue(Purpose::Signup);
        let parts: Vec<&str> = c.split('.').collect();
        let mut tampered = Vec::new();
        // Every field, changed in a way that keeps the shape valid.
        for (i, replacement) in [(1, "contact"), (3, "1767225000"), (4, "1999999999"), (5, "AAAAAAAAAAAAAAAAAAAAAA")] {
            let mut p = parts.clone();
            p[i] = replacement;
            tampered.push(p.join("."));
        }
        let mut flipped_mac = parts.clone();
        let mac = parts[6].replace(&parts[6][..1], if &parts[6][..1] == "A" { "B" } else { "A" });
        flipped_mac[6] = &mac;
        tampered.push(flipped_mac.join("."));
        // Signed by another key.
        let other = fixture_with([8; 32], TEST_DIFFICULTY);
        tampered.push(other.issuer.issue(Purpose::Signup));
        for t in tampered {
            let s = solve_pow(&t).unwrap().to_string();
            assert_eq!(f.issuer.verify(&t, &s, Purpose::Signup).await, Err(BotCheckError::BadSignature), "{t}");
        }
        for junk in ["pow1", "pow2.signup.10.1.2.n.m", "a.b.c", &"x".repeat(300), "é.é"] {
            assert_eq!(f.issuer.verify(junk, "1", Purpose::Signup).await, Err(BotCheckError::Malformed), "{junk}");
        }
    }

    #[tokio::test]
    async fn challenge_for_another_form_is_refused() {
        let f = fixture();
        let c = f.issuer.issue(Purpose::Contact);
        let s = solve_pow(&c).unwrap().to_string();
        assert_eq!(f.issuer.verify(&c, &s, Purpose::Signup).await, Err(BotCheckError::WrongPurpose));
        f.issuer.verify(&c, &s, Purpose::Contact).await.unwrap();
    }

    #[tokio::test]
    async fn too_low_difficulty_is_refused() {
        // Lowering the difficulty in the string breaks the signature…
        let f = fixture();
        let c = f.issuer.issue(Purpose::Signup);
        let lowered = c.replacen(&format!(".{TEST_DIFFICULTY}."), ".1.", 1);
        assert_ne!(lowered, c);
        let s = solve_pow(&lowered).unwrap().to_string();
        assert_eq!(f.issuer.verify(&lowered, &s, Purpose::Signup).await, Err(BotCheckError::BadSignature));
        // …and an authentic challenge signed at a lower difficulty (an older configuration, or
        // another issuer sharing the key) is refused by an issuer that now requires more.
        let easy = fixture_with(KEY, 4);
        let weak = easy.issuer.issue(Purpose::Signup);
        let s = solve_pow(&weak).unwrap().to_string();
        assert_eq!(
            f.issuer.verify(&weak, &s, Purpose::Signup).await,
            Err(BotCheckError::TooEasy { claimed: 4, required: TEST_DIFFICULTY })
        );
        // A raised difficulty is honoured, and checked against what the challenge says.
        let hard = f.issuer.issue_with_difficulty(Purpose::Signup, 12);
        assert!(hard.contains(".12."));
        let weak_solution = non_solution(&hard, 12).to_string();
        assert_eq!(f.issuer.verify(&hard, &weak_solution, Purpose::Signup).await, Err(BotCheckError::WrongSolution));
        let s = solve_pow(&hard).unwrap().to_string();
        f.issuer.verify(&hard, &s, Purpose::Signup).await.unwrap();
        // Asking for less than the minimum issues the minimum.
        assert!(f.issuer.issue_with_difficulty(Purpose::Signup, 1).contains(&format!(".{TEST_DIFFICULTY}.")));
    }

    #[tokio::test]
    async fn replay_guard_forgets_expired_entries_and_stays_bounded() {
        let clock = ManualClock::new(datetime!(2026-01-01 00:00 UTC));
        let guard = MemoryReplayGuard::new(Arc::new(clock.clone()), 3);
        let t0 = clock.now_utc();
        let in_ = |s: i64| t0 + time::Duration::seconds(s);
        assert!(guard.first_use("a", in_(10)).await);
        assert!(!guard.first_use("a", in_(10)).await);
        assert!(guard.first_use("b", in_(20)).await);
        assert!(guard.first_use("c", in_(30)).await);
        assert_eq!(guard.len(), 3);
        // Full: the soonest-expiring entry ("a") makes room.
        assert!(guard.first_use("d", in_(40)).await);
        assert_eq!(guard.len(), 3);
        assert!(!guard.first_use("c", in_(30)).await);
        assert!(!guard.first_use("d", in_(40)).await);
        // Expired entries are dropped.
        clock.advance(time::Duration::seconds(35));
        assert!(guard.first_use("e", in_(50)).await);
        assert_eq!(guard.len(), 2, "b and c expired");
        assert!(!guard.first_use("d", in_(40)).await);
        // Something already expired is not remembered.
        assert!(guard.first_use("old", in_(1)).await);
        assert_eq!(guard.len(), 2);
    }

    #[tokio::test]
    async fn front_refuses_missing_fields_with_a_javascript_hint() {
        let f = fixture();
        let check = BotCheck::ProofOfWork(f.issuer);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let Widget::ProofOfWork { challenge, difficulty } = check.widget(Purpose::Signup) else {
            panic!("proof-of-work widget expected");
        };
        assert_eq!(difficulty, TEST_DIFFICULTY);
        // What a browser without JavaScript sends: the hidden challenge, an empty solution.
        let no_js = BotCheckFields {
            pow_challenge: Some(challenge.clone()),
            pow_solution: Some(String::new()),
            ..Default::default()
        };
        let err = check.verify(&no_js, ip, Purpose::Signup).await.unwrap_err();
        assert_eq!(err, BotCheckError::MissingProof);
        assert!(err.user_message().contains("JavaScript"));
        // A Turnstile token is no proof when proof of work is configured.
        let turnstile = BotCheckFields { turnstile_response: Some("XXXX.DUMMY.TOKEN".into()), ..Default::default() };
        assert_eq!(check.verify(&turnstile, ip, Purpose::Signup).await, Err(BotCheckError::MissingProof));
        let solved = BotCheckFields { pow_solution: Some(solve_pow(&challenge).unwrap().to_string()), ..no_js };
        check.verify(&solved, ip, Purpose::Signup).await.unwrap();
        assert_eq!(f.guard.len(), 1);
    }

    #[test]
    fn fields_deserialize_from_a_form() {
        let fields: BotCheckFields = serde_json::from_value(serde_json::json!({
            "cf-turnstile-response": "tok",
            "pow_challenge": "c",
        }))
        .unwrap();
        assert_eq!(fields.turnstile_response.as_deref(), Some("tok"));
        assert_eq!(fields.pow_challenge.as_deref(), Some("c"));
        assert_eq!(fields.pow_solution, None);
    }

    #[test]
    fn configuration_picks_the_back_end_and_refuses_half_settings() {
        let clock: SharedClock = Arc::new(ManualClock::new(datetime!(2026-01-01 00:00 UTC)));
        let guard: Arc<dyn ReplayGuard> = Arc::new(MemoryReplayGuard::new(clock.clone(), 10));
        let build = |c: &BotCheckConfig| BotCheck::from_config(c, KEY, "app.example.com", clock.clone(), guard.clone());
        let default = BotCheckConfig::default();
        assert!(matches!(build(&default), Ok(BotCheck::ProofOfWork(_))));

        let turnstile = BotCheckConfig {
            turnstile_site_key: Some("0x4AAAAAAA".into()),
            turnstile_secret_key: Some(Secret::new("0x4AAAAAAA-secret")),
            ..BotCheckConfig::default()
        };
        let Ok(BotCheck::Turnstile(t)) = build(&turnstile) else {
            panic!("Turnstile expected");
        };
        assert_eq!(t.expected_hostname, "app.example.com");
        assert_eq!(t.siteverify_url, "https://challenges.cloudflare.com/turnstile/v0/siteverify");
        assert!(!format!("{t:?}").contains("secret"));

        let half = BotCheckConfig { turnstile_secret_key: None, ..turnstile.clone() };
        assert_eq!(build(&half).unwrap_err().setting, "turnstile_secret_key");
        let half = BotCheckConfig { turnstile_site_key: Some(" ".into()), ..turnstile.clone() };
        assert_eq!(build(&half).unwrap_err().setting, "turnstile_site_key");
        let plain_http =
            BotCheckConfig { turnstile_base_url: "http://challenges.cloudflare.com".into(), ..turnstile.clone() };
        assert_eq!(build(&plain_http).unwrap_err().setting, "turnstile_base_url");
        let local = BotCheckConfig { turnstile_base_url: "http://127.0.0.1:9/".into(), ..turnstile };
        assert!(build(&local).is_ok());

        for bad in [0, 7, 25, 255] {
            let c = BotCheckConfig { pow_difficulty: bad, ..BotCheckConfig::default() };
            assert_eq!(build(&c).unwrap_err().setting, "pow_difficulty", "{bad}");
        }
        let c = BotCheckConfig { pow_ttl_secs: 5, ..BotCheckConfig::default() };
        assert_eq!(build(&c).unwrap_err().setting, "pow_ttl_secs");

        let parsed: BotCheckConfig = serde_json::from_value(serde_json::json!({ "pow_difficulty": 18 })).unwrap();
        assert_eq!(parsed.pow_difficulty, 18);
        assert_eq!(parsed.turnstile_base_url, DEFAULT_TURNSTILE_BASE_URL);
        assert!(serde_json::from_value::<BotCheckConfig>(serde_json::json!({ "typo": 1 })).is_err());
    }

    #[test]
    fn user_messages_are_generic() {
        for e in [
            BotCheckError::WrongSolution,
            BotCheckError::HostnameMismatch { got: Some("evil.example".into()) },
            BotCheckError::TurnstileRejected { codes: vec!["invalid-input-response".into()] },
        ] {
            assert_eq!(e.user_message(), USER_MESSAGE);
            assert!(matches!(DomainError::from(e), DomainError::Malformed(_)));
        }
        for e in [
            BotCheckError::Timeout,
            BotCheckError::UpstreamStatus(502),
            BotCheckError::TurnstileSecretRejected { codes: vec![] },
        ] {
            assert_eq!(e.user_message(), UNAVAILABLE_MESSAGE);
            assert!(matches!(DomainError::from(e), DomainError::Unavailable(_)));
        }
    }
}
