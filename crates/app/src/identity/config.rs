//! The identity area's configuration sections: `[identity]` and `[google]`.

use serde::{Deserialize, Serialize};

use crate::platform::secret::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// A session unused for this long ends (ASVS 3.3.2 level 2: 30 minutes).
    pub session_idle_minutes: u32,
    /// A session ends this long after sign-in, however active (ASVS 3.3.2 level 2: 12 hours).
    pub session_absolute_hours: u32,
    /// Failed password (or second-factor) attempts allowed per window before the lock.
    pub lockout_threshold: u32,
    pub lockout_window_minutes: u32,
    pub lockout_minutes: u32,
    /// Concurrent password hashes (argon2id is deliberately expensive). 0: one less than the
    /// number of CPUs, at least one.
    pub hashing_concurrency: usize,
    /// Sign-ins waiting for a hashing slot beyond this number are answered 503 at once.
    pub hashing_queue: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleConfig {
    /// OAuth client id; Google sign-in is off while unset.
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    /// The OpenID issuer (discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer_url: Option<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            session_idle_minutes: 30,
            session_absolute_hours: 12,
            lockout_threshold: 5,
            lockout_window_minutes: 15,
            lockout_minutes: 15,
            hashing_concurrency: 0,
            hashing_queue: 64,
        }
    }
}
