//! Passwords: argon2id hashing on a bounded pool, and the password policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::platform::secret::Secret;

/// OWASP / ASVS minimum for argon2id: 19 MiB, 2 passes, 1 lane.
pub const MEMORY_KIB: u32 = 19 * 1024;
pub const ITERATIONS: u32 = 2;
pub const PARALLELISM: u32 = 1;

pub const MIN_LENGTH: usize = 12;
/// Long passphrases are welcome; the bound only stops absurd inputs.
pub const MAX_LENGTH: usize = 256;

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[derive(Debug, thiserror::Error)]
#[error("too many sign-ins are being checked right now; try again in a moment")]
pub struct Busy;

/// Hashes and verifies passwords on the blocking pool, at most `concurrency` at a time, so a
/// storm of sign-in attempts can't take every core from the rest of the server. Callers
/// beyond `queue` waiting are turned away at once instead of piling up.
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
    /// Verified against when the account doesn't exist, so that an unknown email costs the
    /// same time as a wrong password.
    dummy: String,
    /// Argon2 computations finished (hashes and verifications, the dummy's included).
    runs: AtomicUsize,
}

impl PasswordHasher {
    pub fn new(concurrency: usize, queue: usize) -> Self {
        let concurrency = if concurrency == 0 {
            std::thread::available_parallelism().map(|n| n.get().saturating_sub(1)).unwrap_or(1).max(1)
        } else {
            concurrency
        };
        let dummy = hash_blocking(&crate::platform::crypto::random_token());
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            waiting: AtomicUsize::new(0),
            queue,
            dummy,
            runs: AtomicUsize::new(0),
        }
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Busy);
        }
        let permit = self.permits.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let permit = permit.map_err(|_| Busy)?;
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(|_| Busy)?;
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(result)
    }

    /// How many argon2 computations this hasher has finished: what the timing of a request
    /// that hashes is made of, so equal counts mean equal work.
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    pub async fn hash(&self, password: &Secret) -> Result<String, Busy> {
        let password = password.clone();
        self.run(move || hash_blocking(password.expose())).await
    }

    /// Verifies `password` against `stored`; with no stored hash, verifies against the dummy
    /// and answers false.
    pub async fn verify(&self, password: &Secret, stored: Option<&str>) -> Result<bool, Busy> {
        let (phc, real) = match stored {
            Some(h) => (h.to_string(), true),
            None => (self.dummy.clone(), false),
        };
        let password = password.clone();
        let ok = self
            .run(move || {
                PasswordHash::new(&phc)
                    .map(|parsed| argon2().verify_password(password.expose().as_bytes(), &parsed).is_ok())
                    .unwrap_or(false)
            })
            .await?;
        Ok(ok && real)
    }
}

fn hash_blocking(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing with valid parameters does not fail")
        .to_string()
}

/// NIST SP 800-63B / ASVS 6.2: length, no composition rules, not common, not derived from
/// the account or the product. The message says what to change.
pub fn check_policy(password: &str, email: &str, display_name: &str) -> Result<(), String> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return Err(format!("must be at least {MIN_LENGTH} characters (a few words make a good one)"));
    }
    if length > MAX_LENGTH {
        return Err(format!("must be at most {MAX_LENGTH} characters"));
    }
    let lowered = password.to_lowercase();
    let local = email.split('@').next().unwrap_or("").to_lowercase();
    let mut context: Vec<String> = vec!["clientflow".into(), "client flow".into(), "client-flow".into()];
    if local.chars().count() >= 4 {
        context.push(local.clone());
    }
    context.push(email.to_lowercase());
    for word in display_name.split_whitespace() {
        if word.chars().count() >= 4 {
            context.push(word.to_lowercase());
        }
    }
    for c in &context {
        if lowered.contains(c.as_str()) && c.chars().count() * 2 >= length {
            return Err("must not be based on your email address, your name or the product name".into());
        }
    }
    // zxcvbn's cost grows with length; the first 100 characters decide well enough.
    let sample: String = password.chars().take(100).collect();
    let inputs: Vec<&str> = context.iter().map(String::as_str).collect();
    let estimate = zxcvbn::zxcvbn(&sample, &inputs);
    if (estimate.score() as u8) < 3 {
        let hint = estimate.feedback().and_then(|f| f.warning()).map(|w| format!(" ({w})")).unwrap_or_default();
        return Err(format!("is too easy to guess{hint}; use a longer phrase of unrelated words"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_accepts_long_uncommon_passwords_without_composition_rules() {
        assert!(check_policy("correct horse battery staple", "ann@example.com", "Ann").is_ok());
        assert!(check_policy("purple elephants juggle quietly", "ann@example.com", "Ann").is_ok());
        // 64 characters and more are allowed.
        assert!(check_policy(&"tomato-umbrella-violin-glacier-".repeat(3), "a@example.com", "").is_ok());
    }

    #[test]
    fn policy_rejects_short_common_and_contextual_passwords() {
        assert!(check_policy("short", "a@example.com", "").unwrap_err().contains("at least 12"));
        assert!(check_policy("password1234", "a@example.com", "").unwrap_err().contains("too easy"));
        assert!(check_policy("qwertyuiop123", "a@example.com", "").unwrap_err().contains("too easy"));
        assert!(check_policy("annabelle.smith2024", "annabelle.smith@example.com", "").is_err());
        assert!(check_policy("clientflow2024!", "a@example.com", "").is_err());
        assert!(check_policy(&"x".repeat(300), "a@example.com", "").unwrap_err().contains("at most"));
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let h = PasswordHasher::new(1, 4);
        let pw = Secret::new("correct horse battery staple");
        let phc = h.hash(&pw).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify(&pw, Some(&phc)).await.unwrap());
        assert!(!h.verify(&Secret::new("wrong horse battery staple"), Some(&phc)).await.unwrap());
        // Unknown account: the dummy is checked, and the answer is no even for its password.
        assert!(!h.verify(&pw, None).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once() {
        let h = Arc::new(PasswordHasher::new(1, 1));
        let pw = Secret::new("correct horse battery staple");
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let h = h.clone();
            let pw = pw.clone();
            tasks.push(tokio::spawn(async move { h.hash(&pw).await.is_err() }));
        }
        let mut refused = 0;
        for t in tasks {
            if t.await.unwrap() {
                refused += 1;
            }
        }
        assert!(refused >= 1, "nothing was refused");
    }
}
