//! A local OpenID Connect provider that speaks the real wire format, for end-to-end tests of
//! "Sign in with Google" without Google.
//!
//! Plain HTTP on `127.0.0.1`, port 0. It implements what a confidential web client using the
//! authorization-code flow with PKCE needs: discovery, a JWKS with one RSA key, `/authorize`
//! (auto-consent as the user set with [`FakeOidc::set_user`]) and `/token` (client
//! authentication by HTTP Basic or `client_secret_post`). ID tokens are RS256 JWTs.
//! [`FakeOidc::misbehave`] makes the provider issue tokens a correct client must reject.
//!
//! The RSA keys are generated once per process (2048-bit generation is slow in debug builds)
//! and shared by every instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use rand::rngs::OsRng;
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use url::Url;

/// The key ID of the provider's signing key (the forgery key claims the same one).
const KID: &str = "fake-oidc-rs256-1";
/// How long an authorization code stays valid.
const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// How long an ID token stays valid (`exp - iat`).
const ID_TOKEN_LIFETIME: u64 = 600;

/// The user the provider signs in (auto-consent) at `/authorize`.
#[derive(Clone, Debug)]
pub struct OidcUser {
    pub sub: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
}

/// Ways the provider can misbehave when issuing ID tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehavior {
    /// Behave correctly.
    None,
    /// Sign with a different RSA key that claims the same `kid`.
    ForgedSignature,
    /// `aud` (and `azp`) name another client.
    WrongAudience,
    /// `exp` is 10 minutes in the past.
    Expired,
    /// No `nonce` claim, even if the client sent one.
    OmitNonce,
    /// A `nonce` claim that differs from the one the client sent.
    WrongNonce,
    /// `iss` differs from the issuer in the discovery document.
    WrongIssuer,
}

/// A running fake OpenID Connect provider; the server stops when this is dropped.
pub struct FakeOidc {
    issuer: String,
    state: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Keys {
    /// The key published at `/jwks`.
    provider: RsaPrivateKey,
    /// A different key, used for [`Misbehavior::ForgedSignature`].
    forgery: RsaPrivateKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let generate = || RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA key generation");
        // Two cores are usually available; generate the two keys in parallel.
        let forgery = std::thread::spawn(generate);
        let provider = generate();
        Keys { provider, forgery: forgery.join().expect("forgery key thread") }
    })
}

struct Shared {
    issuer: String,
    client_id: String,
    client_secret: String,
    inner: Mutex<Inner>,
}

struct Inner {
    user: Option<OidcUser>,
    misbehavior: Misbehavior,
    codes: HashMap<String, Grant>,
    token_requests: Vec<HashMap<String, String>>,
}

/// What an authorization code is bound to.
struct Grant {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    scope: String,
    user: OidcUser,
    expires: Instant,
}

impl FakeOidc {
    /// Starts a provider on `127.0.0.1`, port 0, for one registered client.
    pub async fn start(client_id: &str, client_secret: &str) -> FakeOidc {
        // Key generation is CPU-bound and may take seconds in debug builds.
        tokio::task::spawn_blocking(keys).await.expect("key generation task");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake OIDC provider");
        let port = listener.local_addr().expect("local addr").port();
        let issuer = format!("http://127.0.0.1:{port}");
        let state = Arc::new(Shared {
            issuer: issuer.clone(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            inner: Mutex::new(Inner {
                user: None,
                misbehavior: Misbehavior::None,
                codes: HashMap::new(),
                token_requests: Vec::new(),
            }),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo).post(userinfo))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeOidc { issuer, state, task }
    }

    /// The issuer identifier, e.g. `http://127.0.0.1:PORT` (no trailing slash).
    pub fn issuer(&self) -> String {
        self.issuer.clone()
    }

    /// The user signed in by the next `/authorize` requests.
    pub fn set_user(&self, user: OidcUser) {
        self.state.lock().user = Some(user);
    }

    /// Applies to every ID token issued from now until `misbehave(Misbehavior::None)`.
    pub fn misbehave(&self, m: Misbehavior) {
        self.state.lock().misbehavior = m;
    }

    /// The form parameters of each `POST /token` so far, in order, plus the `Authorization`
    /// header (if any) under the key `"authorization"`.
    pub fn token_requests(&self) -> Vec<HashMap<String, String>> {
        self.state.lock().token_requests.clone()
    }
}

impl Drop for FakeOidc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type AppState = State<Arc<Shared>>;

async fn discovery(State(s): AppState) -> Response {
    let issuer = &s.issuer;
    axum::Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "grant_types_supported": ["authorization_code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "nonce", "azp", "at_hash",
            "email", "email_verified", "name"
        ],
    }))
    .into_response()
}

async fn jwks() -> Response {
    let key = keys().provider.to_public_key();
    axum::Json(json!({
        "keys": [{
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": KID,
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        }]
    }))
    .into_response()
}

async fn userinfo() -> Response {
    (StatusCode::NOT_FOUND, "userinfo is not implemented\n").into_response()
}

fn bad_request(reason: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response()
}

/// Parses `application/x-www-form-urlencoded` text, refusing repeated parameters
/// (RFC 6749 §3.1 and §3.2: parameters must not be included more than once).
fn parse_form(text: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(text.as_bytes()) {
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("parameter `{k}` repeated"));
        }
    }
    Ok(out)
}

/// RFC 7636 §4.1/§4.2: 43–128 characters of `[A-Za-z0-9-._~]`.
fn is_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

async fn authorize(State(s): AppState, RawQuery(query): RawQuery) -> Response {
    let params = match parse_form(query.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return bad_request(&e),
    };
    let param = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());

    match param("client_id") {
        None => return bad_request("missing client_id"),
        Some(id) if id != s.client_id => return bad_request("unknown client_id"),
        Some(_) => {}
    }
    let Some(redirect_uri) = param("redirect_uri") else {
        return bad_request("missing redirect_uri");
    };
    let mut location = match Url::parse(redirect_uri) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => u,
        _ => return bad_request("redirect_uri must be an absolute http or https URL"),
    };
    if location.fragment().is_some() {
        return bad_request("redirect_uri must not contain a fragment");
    }
    match param("response_type") {
        None => return bad_request("missing response_type"),
        Some("code") => {}
        Some(_) => return bad_request("unsupported response_type (only `code`)"),
    }
    let Some(state) = param("state") else {
        return bad_request("missing state");
    };
    let scope = param("scope").unwrap_or("");
    if !scope.split(' ').any(|s| s == "openid") {
        return bad_request("scope must contain `openid`");
    }
    let Some(code_challenge) = param("code_challenge") else {
        return bad_request("missing code_challenge (PKCE is required)");
    };
    if param("code_challenge_method") != Some("S256") {
        return bad_request("code_challenge_method must be S256");
    }
    if code_challenge.len() != 43 || !is_pkce_string(code_challenge) {
        return bad_request("malformed code_challenge");
    }
    let nonce = param("nonce").map(str::to_owned);

    let code = random_token();
    {
        let mut inner = s.lock();
        let Some(user) = inner.user.clone() else {
            return bad_request("no user is signed in at the fake provider (call set_user)");
        };
        let now = Instant::now();
        inner.codes.retain(|_, g| g.expires > now);
        inner.codes.insert(
            code.clone(),
            Grant {
                client_id: s.client_id.clone(),
                redirect_uri: redirect_uri.to_owned(),
                code_challenge: code_challenge.to_owned(),
                nonce,
                scope: scope.to_owned(),
                user,
                expires: now + CODE_LIFETIME,
            },
        );
    }
    location.query_pairs_mut().append_pair("code", &code).append_pair("state", state);
    let mut response = StatusCode::FOUND.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_str(location.as_str()).expect("URL is a valid header value"));
    response
}

/// An RFC 6749 §5.2 error response.
fn token_error(error: &str, description: &str) -> Response {
    let status = if error == "invalid_client" { StatusCode::UNAUTHORIZED } else { StatusCode::BAD_REQUEST };
    let mut response =
        (status, axum::Json(json!({ "error": error, "error_description": description }))).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"fake-oidc\""));
    }
    response
}

/// Decodes `Authorization: Basic` per RFC 6749 §2.3.1 (each part form-url-encoded, then the
/// pair base64-encoded).
fn decode_basic(value: &str) -> Option<(String, String)> {
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> String {
        url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

async fn token(State(s): AppState, headers: HeaderMap, body: String) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let parsed = parse_form(&body);
    {
        let mut record: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        if let Some(a) = &authorization {
            record.insert("authorization".to_owned(), a.clone());
        }
        s.lock().token_requests.push(record);
    }

    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !is_form {
        return token_error("invalid_request", "body must be application/x-www-form-urlencoded");
    }
    let params = match parsed {
        Ok(p) => p,
        Err(e) => return token_error("invalid_request", &e),
    };
    let param = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());

    // Client authentication (RFC 6749 §2.3.1): exactly one method.
    let (client_id, client_secret) = match &authorization {
        Some(value) => {
            if params.contains_key("client_secret") {
                return token_error("invalid_request", "more than one client authentication method");
            }
            let Some((id, secret)) = decode_basic(value) else {
                return token_error("invalid_client", "malformed Basic credentials");
            };
            if param("client_id").is_some_and(|body_id| body_id != id) {
                return token_error("invalid_request", "client_id differs from the Basic user");
            }
            (id, secret)
        }
        None => match (param("client_id"), param("client_secret")) {
            (Some(id), Some(secret)) => (id.to_owned(), secret.to_owned()),
            _ => return token_error("invalid_client", "client authentication required"),
        },
    };
    if client_id != s.client_id || client_secret != s.client_secret {
        return token_error("invalid_client", "unknown client or wrong secret");
    }

    match param("grant_type") {
        None => return token_error("invalid_request", "missing grant_type"),
        Some("authorization_code") => {}
        Some(_) => return token_error("unsupported_grant_type", "only authorization_code"),
    }
    let Some(code) = param("code") else {
        return token_error("invalid_request", "missing code");
    };
    let Some(redirect_uri) = param("redirect_uri") else {
        return token_error("invalid_request", "missing redirect_uri");
    };

    // Presenting a code consumes it, whatever happens next.
    let (grant, misbehavior) = {
        let mut inner = s.lock();
        let grant = inner.codes.remove(code);
        (grant, inner.misbehavior)
    };
    let Some(grant) = grant else {
        return token_error("invalid_grant", "unknown, used or expired code");
    };
    if grant.expires <= Instant::now() {
        return token_error("invalid_grant", "code expired");
    }
    if grant.client_id != client_id {
        return token_error("invalid_grant", "code was issued to another client");
    }
    if grant.redirect_uri != redirect_uri {
        return token_error("invalid_grant", "redirect_uri differs from /authorize");
    }
    let verifier = param("code_verifier").unwrap_or("");
    if !is_pkce_string(verifier) || URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != grant.code_challenge
    {
        return token_error("invalid_grant", "code_verifier does not match code_challenge");
    }

    let access_token = random_token();
    let id_token = id_token(&s, &grant, &access_token, misbehavior);
    let mut response = axum::Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 3600,
        "id_token": id_token,
        "scope": grant.scope,
    }))
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn id_token(s: &Shared, grant: &Grant, access_token: &str, m: Misbehavior) -> String {
    let now = unix_now();
    let (iat, exp) = match m {
        Misbehavior::Expired => (now - 600 - ID_TOKEN_LIFETIME, now - 600),
        _ => (now, now + ID_TOKEN_LIFETIME),
    };
    let iss = match m {
        Misbehavior::WrongIssuer => format!("{}/not-the-issuer", s.issuer),
        _ => s.issuer.clone(),
    };
    let aud = match m {
        Misbehavior::WrongAudience => format!("not-{}", grant.client_id),
        _ => grant.client_id.clone(),
    };
    let nonce = match m {
        Misbehavior::OmitNonce => None,
        Misbehavior::WrongNonce => Some(random_token()),
        _ => grant.nonce.clone(),
    };
    // at_hash (OpenID Connect Core §3.1.3.6): left half of SHA-256 of the access token.
    let digest = Sha256::digest(access_token.as_bytes());
    let at_hash = URL_SAFE_NO_PAD.encode(&digest[..16]);

    let mut claims = json!({
        "iss": iss,
        "sub": grant.user.sub,
        "aud": aud,
        "azp": aud,
        "exp": exp,
        "iat": iat,
        "at_hash": at_hash,
        "email": grant.user.email,
        "email_verified": grant.user.email_verified,
        "name": grant.user.name,
    });
    if let (Some(n), Value::Object(map)) = (nonce, &mut claims) {
        map.insert("nonce".to_owned(), Value::String(n));
    }
    let header = json!({ "alg": "RS256", "typ": "JWT", "kid": KID });
    let signing_input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let key = match m {
        Misbehavior::ForgedSignature => &keys().forgery,
        _ => &keys().provider,
    };
    let signature = SigningKey::<Sha256>::new(key.clone()).sign(signing_input.as_bytes()).to_bytes();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreErrorResponseType, CoreProviderMetadata};
    use openidconnect::{
        AccessTokenHash, AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
        EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
        PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, TokenResponse,
    };

    const CLIENT_ID: &str = "clientflow-test.apps.example";
    // Characters that must be form-url-encoded inside HTTP Basic (RFC 6749 §2.3.1).
    const CLIENT_SECRET: &str = "s3cret with space:colon+plus%&=";
    const REDIRECT: &str = "http://127.0.0.1:9/auth/google/callback";

    /// What `CoreClient::from_provider_metadata(..).set_redirect_uri(..)` returns.
    type DiscoveredClient =
        CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

    fn user() -> OidcUser {
        OidcUser {
            sub: "1234567890".into(),
            email: "ada@example.com".into(),
            email_verified: true,
            name: "Ada Lovelace".into(),
        }
    }

    fn http_client() -> reqwest::Client {
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("reqwest client")
    }

    async fn setup() -> (FakeOidc, DiscoveredClient, reqwest::Client) {
        let provider = FakeOidc::start(CLIENT_ID, CLIENT_SECRET).await;
        provider.set_user(user());
        let http = http_client();
        let metadata =
            CoreProviderMetadata::discover_async(IssuerUrl::new(provider.issuer()).expect("issuer URL"), &http)
                .await
                .expect("discovery");
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(CLIENT_ID.into()),
            Some(ClientSecret::new(CLIENT_SECRET.into())),
        )
        .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).expect("redirect URL"));
        (provider, client, http)
    }

    /// One sign-in as the application would hold it between the redirect and the callback.
    struct Login {
        code: AuthorizationCode,
        verifier: PkceCodeVerifier,
        nonce: Nonce,
    }

    /// Builds the authorization URL, GETs it (no redirects) and takes the code from the
    /// `Location` header, checking that the state comes back.
    async fn authorize(client: &DiscoveredClient, http: &reqwest::Client) -> Login {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, csrf, nonce) = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        let response = http.get(url.as_str()).send().await.expect("GET /authorize");
        assert_eq!(response.status(), reqwest::StatusCode::FOUND);
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .expect("Location header")
            .to_str()
            .expect("ASCII Location");
        let location = Url::parse(location).expect("Location is a URL");
        assert!(location.as_str().starts_with(REDIRECT), "{location}");
        let pairs: HashMap<String, String> = location.query_pairs().into_owned().collect();
        assert_eq!(pairs.get("state"), Some(csrf.secret()));
        Login { code: AuthorizationCode::new(pairs["code"].clone()), verifier, nonce }
    }

    #[tokio::test]
    async fn openidconnect_sign_in_round_trip() {
        let (provider, client, http) = setup().await;
        let login = authorize(&client, &http).await;
        let response = client
            .exchange_code(login.code.clone())
            .expect("token endpoint discovered")
            .set_pkce_verifier(login.verifier)
            .request_async(&http)
            .await
            .expect("token exchange");
        let id_token = response.id_token().expect("an ID token");
        let verifier = client.id_token_verifier();
        let claims = id_token.claims(&verifier, &login.nonce).expect("a valid ID token");
        assert_eq!(claims.subject().as_str(), "1234567890");
        assert_eq!(claims.issuer().as_str(), provider.issuer());
        assert_eq!(claims.email().map(|e| e.as_str()), Some("ada@example.com"));
        assert_eq!(claims.email_verified(), Some(true));
        assert_eq!(claims.name().and_then(|n| n.get(None)).map(|n| n.as_str()), Some("Ada Lovelace"));
        assert_eq!(claims.authorized_party().map(|a| a.as_str()), Some(CLIENT_ID));
        let expected_hash = AccessTokenHash::from_token(
            response.access_token(),
            id_token.signing_alg().expect("alg"),
            id_token.signing_key(&verifier).expect("key"),
        )
        .expect("at_hash");
        assert_eq!(claims.access_token_hash(), Some(&expected_hash));
        assert_eq!(response.scopes().map(|s| s.len()), Some(3), "openid email profile");

        // openidconnect authenticates with HTTP Basic, each part form-url-encoded first.
        let requests = provider.token_requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(decode_basic(&request["authorization"]), Some((CLIENT_ID.to_owned(), CLIENT_SECRET.to_owned())));
        assert!(!request.contains_key("client_secret"));
        assert_eq!(request["grant_type"], "authorization_code");
        assert_eq!(request["redirect_uri"], REDIRECT);

        // A code is single-use.
        let again = client
            .exchange_code(login.code)
            .expect("token endpoint discovered")
            .set_pkce_verifier(PkceCodeVerifier::new(request["code_verifier"].clone()))
            .request_async(&http)
            .await;
        assert_invalid_grant(again);

        // The PKCE verifier must match the challenge.
        let login = authorize(&client, &http).await;
        let (_, other_verifier) = PkceCodeChallenge::new_random_sha256();
        let wrong = client
            .exchange_code(login.code)
            .expect("token endpoint discovered")
            .set_pkce_verifier(other_verifier)
            .request_async(&http)
            .await;
        assert_invalid_grant(wrong);

        // client_secret_post works too.
        let login = authorize(&client, &http).await;
        let response = client
            .clone()
            .set_auth_type(AuthType::RequestBody)
            .exchange_code(login.code)
            .expect("token endpoint discovered")
            .set_pkce_verifier(login.verifier)
            .request_async(&http)
            .await
            .expect("token exchange with client_secret_post");
        let claims =
            response.id_token().expect("an ID token").claims(&verifier, &login.nonce).expect("a valid ID token");
        assert_eq!(claims.subject().as_str(), "1234567890");
        let last = provider.token_requests().pop().expect("a request");
        assert_eq!(last["client_secret"], CLIENT_SECRET);
        assert!(!last.contains_key("authorization"));
    }

    fn assert_invalid_grant<T: std::fmt::Debug, RE: std::error::Error>(
        result: Result<T, RequestTokenError<RE, openidconnect::StandardErrorResponse<CoreErrorResponseType>>>,
    ) {
        match result {
            Err(RequestTokenError::ServerResponse(e)) => {
                assert_eq!(*e.error(), CoreErrorResponseType::InvalidGrant, "{e:?}")
            }
            other => panic!("expected invalid_grant, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn every_misbehavior_fails_verification() {
        let (provider, client, http) = setup().await;
        let verifier = client.id_token_verifier();
        let cases = [
            Misbehavior::ForgedSignature,
            Misbehavior::WrongAudience,
            Misbehavior::Expired,
            Misbehavior::WrongNonce,
            Misbehavior::OmitNonce,
            Misbehavior::WrongIssuer,
            Misbehavior::None,
        ];
        for m in cases {
            provider.misbehave(m);
            let login = authorize(&client, &http).await;
            let response = client
                .exchange_code(login.code)
                .expect("token endpoint discovered")
                .set_pkce_verifier(login.verifier)
                .request_async(&http)
                .await
                .expect("token exchange");
            let result = response
                .id_token()
                .expect("an ID token")
                .claims(&verifier, &login.nonce)
                .map(|c| c.subject().to_string());
            match (m, result) {
                (Misbehavior::None, Ok(sub)) => assert_eq!(sub, "1234567890"),
                (Misbehavior::ForgedSignature, Err(ClaimsVerificationError::SignatureVerification(_)))
                | (Misbehavior::WrongAudience, Err(ClaimsVerificationError::InvalidAudience(_)))
                | (Misbehavior::Expired, Err(ClaimsVerificationError::Expired(_)))
                | (Misbehavior::WrongNonce | Misbehavior::OmitNonce, Err(ClaimsVerificationError::InvalidNonce(_)))
                | (Misbehavior::WrongIssuer, Err(ClaimsVerificationError::InvalidIssuer(_))) => {}
                (m, other) => panic!("{m:?}: unexpected verification result {other:?}"),
            }
        }
    }

    fn authorize_url(issuer: &str, extra: &[(&str, &str)], skip: &[&str]) -> String {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(b"v".repeat(43)));
        let mut url = Url::parse(&format!("{issuer}/authorize")).expect("URL");
        {
            let mut q = url.query_pairs_mut();
            let base = [
                ("response_type", "code"),
                ("client_id", CLIENT_ID),
                ("redirect_uri", REDIRECT),
                ("state", "st&te=1"),
                ("scope", "openid email"),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ];
            for (k, v) in base {
                if !skip.contains(&k) && !extra.iter().any(|(ek, _)| *ek == k) {
                    q.append_pair(k, v);
                }
            }
            for (k, v) in extra {
                q.append_pair(k, v);
            }
        }
        url.into()
    }

    #[tokio::test]
    async fn authorize_and_token_endpoints_refuse_bad_requests() {
        let provider = FakeOidc::start(CLIENT_ID, CLIENT_SECRET).await;
        let issuer = provider.issuer();
        let http = http_client();
        let get = |url: String| {
            let http = http.clone();
            async move { http.get(url).send().await.expect("GET") }
        };

        // No user signed in yet.
        let r = get(authorize_url(&issuer, &[], &[])).await;
        assert_eq!(r.status(), 400);
        provider.set_user(user());

        for (extra, skip) in [
            (&[("client_id", "someone-else")][..], &[][..]),
            (&[("response_type", "token")][..], &[][..]),
            (&[("scope", "email")][..], &[][..]),
            (&[("code_challenge_method", "plain")][..], &[][..]),
            (&[][..], &["code_challenge"][..]),
            (&[][..], &["code_challenge_method"][..]),
            (&[][..], &["state"][..]),
            (&[][..], &["redirect_uri"][..]),
            (&[("redirect_uri", "ftp://example.com/cb")][..], &[][..]),
        ] {
            let r = get(authorize_url(&issuer, extra, skip)).await;
            assert_eq!(r.status(), 400, "{extra:?} {skip:?}");
            assert!(!r.text().await.expect("body").is_empty());
        }

        // A redirect URI with a query gets the code appended with `&`, properly encoded.
        let r =
            get(authorize_url(&issuer, &[("redirect_uri", "https://app.example/cb?x=1"), ("nonce", "n-0")], &[])).await;
        assert_eq!(r.status(), 302);
        let location = r.headers()["location"].to_str().expect("ASCII").to_owned();
        assert!(location.starts_with("https://app.example/cb?x=1&code="), "{location}");
        assert!(location.ends_with("&state=st%26te%3D1"), "{location}");
        let code = Url::parse(&location)
            .expect("URL")
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("code");

        let post = |form: Vec<(&'static str, String)>, basic: Option<(&str, &str)>| {
            let mut req = http.post(format!("{issuer}/token")).form(&form);
            if let Some((id, secret)) = basic {
                req = req.basic_auth(id, Some(secret));
            }
            async move {
                let r = req.send().await.expect("POST /token");
                let status = r.status().as_u16();
                let body: Value = r.json().await.expect("JSON body");
                (status, body["error"].as_str().unwrap_or("").to_owned())
            }
        };
        let form = |redirect: &str, verifier: &str| {
            vec![
                ("grant_type", "authorization_code".to_owned()),
                ("code", code.clone()),
                ("redirect_uri", redirect.to_owned()),
                ("code_verifier", verifier.to_owned()),
            ]
        };
        let verifier = "v".repeat(43);
        let good_redirect = "https://app.example/cb?x=1";
        // "wrong" and the client ID need no escaping, so reqwest's plain Basic is RFC-correct.
        assert_eq!(
            post(form(good_redirect, &verifier), Some((CLIENT_ID, "wrong"))).await,
            (401, "invalid_client".to_owned())
        );
        assert_eq!(post(form(good_redirect, &verifier), None).await, (401, "invalid_client".to_owned()));
        let mut with_secret = form(good_redirect, &verifier);
        with_secret.push(("client_id", CLIENT_ID.to_owned()));
        with_secret.push(("client_secret", CLIENT_SECRET.to_owned()));
        let mut unsupported = with_secret.clone();
        unsupported[0].1 = "password".to_owned();
        assert_eq!(post(unsupported, None).await, (400, "unsupported_grant_type".to_owned()));
        let mut missing_code = with_secret.clone();
        missing_code.remove(1);
        assert_eq!(post(missing_code, None).await, (400, "invalid_request".to_owned()));
        // A mismatched redirect_uri burns the code.
        let mut wrong_redirect = with_secret.clone();
        wrong_redirect[2].1 = "https://app.example/cb".to_owned();
        assert_eq!(post(wrong_redirect, None).await, (400, "invalid_grant".to_owned()));
        assert_eq!(post(with_secret, None).await, (400, "invalid_grant".to_owned()));

        // Discovery and JWKS.
        let doc: Value = http
            .get(format!("{issuer}/.well-known/openid-configuration"))
            .send()
            .await
            .expect("GET discovery")
            .json()
            .await
            .expect("JSON");
        assert_eq!(doc["issuer"], issuer.as_str());
        assert_eq!(doc["jwks_uri"], format!("{issuer}/jwks"));
        let jwks: Value =
            http.get(format!("{issuer}/jwks")).send().await.expect("GET jwks").json().await.expect("JSON");
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["kid"], KID);
        assert_eq!(key["e"], "AQAB");
        assert_eq!(URL_SAFE_NO_PAD.decode(key["n"].as_str().expect("n")).expect("base64url").len(), 256);
        let r = get(format!("{issuer}/userinfo")).await;
        assert_eq!(r.status(), 404);
    }
}
