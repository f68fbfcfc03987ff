//! Google's OpenID Connect client: the provider's metadata (discovered, cached an hour), the
//! authorization URL with PKCE and nonce, and the code exchange that checks the ID token
//! (`openidconnect`). The sign-in flows that use it are `identity::google`.

use std::time::{Duration as StdDuration, Instant};

use openidconnect::core::{CoreClient, CoreProviderMetadata, CoreResponseType};
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope,
};
use tokio::sync::RwLock;

use crate::platform::error::{DomainError, DomainResult};

pub const DEFAULT_ISSUER: &str = "https://accounts.google.com";
const METADATA_TTL: StdDuration = StdDuration::from_secs(3600);

pub struct GoogleSignIn {
    client_id: ClientId,
    client_secret: ClientSecret,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    http: openidconnect::reqwest::Client,
    metadata: RwLock<Option<(Instant, CoreProviderMetadata)>>,
}

/// What the provider vouched for.
#[derive(Debug, Clone)]
pub struct VerifiedIdentity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
}

impl GoogleSignIn {
    pub fn from_config(google: &super::config::GoogleConfig, public_url: &str) -> anyhow::Result<Option<Self>> {
        let (Some(id), Some(secret)) = (&google.client_id, &google.client_secret) else {
            return Ok(None);
        };
        let issuer = google.issuer_url.clone().unwrap_or_else(|| DEFAULT_ISSUER.to_string());
        let http = openidconnect::reqwest::Client::builder()
            // Following redirects would open the server to SSRF through a hostile provider.
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(StdDuration::from_secs(10))
            .build()?;
        Ok(Some(Self {
            client_id: ClientId::new(id.clone()),
            client_secret: ClientSecret::new(secret.expose().to_string()),
            issuer: IssuerUrl::new(issuer)?,
            redirect: RedirectUrl::new(format!("{public_url}/login/google/callback"))?,
            http,
            metadata: RwLock::new(None),
        }))
    }

    async fn metadata(&self, refresh: bool) -> DomainResult<CoreProviderMetadata> {
        if !refresh
            && let Some((at, m)) = self.metadata.read().await.as_ref()
            && at.elapsed() < METADATA_TTL
        {
            return Ok(m.clone());
        }
        let m = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http).await.map_err(|e| {
            tracing::warn!(error = %e, "OpenID discovery failed");
            DomainError::Unavailable("Google sign-in is unavailable right now. Try again, or use your password.".into())
        })?;
        *self.metadata.write().await = Some((Instant::now(), m.clone()));
        Ok(m)
    }

    fn client(
        &self,
        metadata: CoreProviderMetadata,
    ) -> CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        CoreClient::from_provider_metadata(metadata, self.client_id.clone(), Some(self.client_secret.clone()))
            .set_redirect_uri(self.redirect.clone())
    }

    /// The authorization URL plus what must be remembered: (url, state, nonce, verifier).
    pub async fn begin(&self) -> DomainResult<(String, String, String, String)> {
        let client = self.client(self.metadata(false).await?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok((url.to_string(), state.secret().clone(), nonce.secret().clone(), verifier.secret().clone()))
    }

    /// Exchanges the code (with the PKCE verifier) and verifies the ID token.
    pub async fn finish(&self, code: &str, nonce: &str, verifier: &str) -> DomainResult<VerifiedIdentity> {
        let refused = |what: &str, e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "Google sign-in refused: {what}");
            DomainError::Forbidden("Google sign-in failed. Try again, or use your password.".into())
        };
        let client = self.client(self.metadata(false).await?);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| refused("no token endpoint", &e))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
            .request_async(&self.http)
            .await
            .map_err(|e| refused("code exchange", &e))?;
        let id_token = response.extra_fields().id_token().ok_or_else(|| refused("no ID token", &"missing"))?;
        let verifier = client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &Nonce::new(nonce.to_string()))
            .map_err(|e| refused("ID token verification", &e))?;
        Ok(VerifiedIdentity {
            issuer: claims.issuer().to_string(),
            subject: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()),
            email_verified: claims.email_verified().unwrap_or(false),
            name: claims.name().and_then(|n| n.get(None)).map(|n| n.to_string()),
        })
    }
}
