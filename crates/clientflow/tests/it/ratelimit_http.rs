//! Rate limits as the application applies them, through HTTP: which routes are limited (read
//! from the route table), exact counts at window edges with the app's manual clock, the
//! headers, 429 bodies on the web and the API, client addresses behind (and not behind)
//! trusted proxies, two server processes sharing one Redis, and Redis dying mid-test.

use std::collections::BTreeMap;
use std::time::Duration;

use clientflow::abuse::limits::{KeyBy, LimitConfig, PolicyId, RateLimitsConfig};
use clientflow::abuse::ratelimit::FailurePolicy;
use clientflow::access::route::{Access, Surface};
use clientflow::config::Config;
use clientflow::platform::clock::ManualClock;
use clientflow_test_support::TestApp;
use clientflow_test_support::browser::Browser;
use clientflow_test_support::redis::RedisServer;
use time::macros::datetime;

use crate::support::{api_key, header_list, routes_with_an_api_route};

/// Midnight: a multiple of every window used here, so the clock starts on window boundaries.
fn midnight() -> ManualClock {
    ManualClock::new(datetime!(2026-03-02 00:00 UTC))
}

fn set(c: &mut Config, id: PolicyId, limit: u64, window_secs: u64) {
    *c.rate_limits.get_mut(id) = LimitConfig::new(limit, window_secs);
}

/// One password-reset request for a fresh address: cheap (no password hash), limited per
/// address like every authentication form, and never locked by the per-account throttle.
async fn forgot(b: &mut Browser, n: &mut u32) -> reqwest::Response {
    *n += 1;
    let email = format!("nobody-{n}@example.com");
    b.submit("/forgot-password", "/forgot-password", &[("email", email.as_str())]).await
}

async fn statuses(b: &mut Browser, n: &mut u32, count: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..count {
        out.push(forgot(b, n).await.status().as_u16());
    }
    out
}

/// The routes with limits, as `METHOD path` → policy names in order.
fn limited_routes(routes: &[clientflow::access::route::RouteDef]) -> BTreeMap<String, Vec<&'static str>> {
    routes
        .iter()
        .filter(|r| !r.limits.is_empty())
        .map(|r| (format!("{} {}", r.method, r.path), r.limits.iter().map(|l| l.policy.name()).collect()))
        .collect()
}

#[test]
fn the_route_table_says_which_routes_are_limited_and_how() {
    let routes = clientflow::routes::all();
    let expected: BTreeMap<String, Vec<&str>> = [
        ("POST /login", vec!["auth-ip", "auth-account"]),
        ("POST /login/two-factor", vec!["auth-ip", "second-factor"]),
        ("GET /login/google", vec!["auth-ip"]),
        ("GET /login/google/callback", vec!["auth-ip"]),
        ("POST /verify-email", vec!["auth-ip"]),
        ("POST /account/email/confirm", vec!["auth-ip"]),
        ("POST /signup", vec!["signup-ip", "auth-ip", "auth-account"]),
        ("POST /forgot-password", vec!["auth-ip", "auth-account"]),
        ("POST /reset-password", vec!["auth-ip", "auth-account"]),
        ("POST /invitations/accept", vec!["auth-ip", "auth-account"]),
        ("POST /contact/{slug}", vec!["contact-ip"]),
        ("POST /security/report", vec!["security-report-ip"]),
        ("GET /o/{org}/settings/billing", vec!["billing-org"]),
        ("POST /o/{org}/settings/billing/checkout", vec!["billing-org"]),
        ("POST /o/{org}/settings/billing/portal", vec!["billing-org"]),
        ("POST /o/{org}/settings/export", vec!["data-export"]),
        ("GET /exports/{org}/{export}", vec!["data-export"]),
        ("GET /u/{token}", vec!["unsubscribe-ip"]),
        ("POST /u/{token}", vec!["unsubscribe-ip"]),
        ("GET /u/{token}/preferences", vec!["unsubscribe-ip"]),
        ("POST /u/{token}/resubscribe", vec!["unsubscribe-ip"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let api: BTreeMap<String, Vec<&str>> = limited_routes(&routes)
        .into_iter()
        .filter(|(k, _)| k.split(' ').nth(1).is_some_and(|p| p.starts_with("/api/")))
        .collect();
    let mut without_api = limited_routes(&routes);
    without_api.retain(|k, _| !api.contains_key(k));
    assert_eq!(without_api, expected, "the limited web routes changed: update this list knowingly");

    for r in routes_with_an_api_route().iter() {
        let key = format!("{} {}", r.method, r.path);
        let names: Vec<&str> = r.limits.iter().map(|l| l.policy.name()).collect();
        // Every API route is limited per address, every API-key route per key.
        if r.surface == Surface::Api {
            assert!(names.contains(&"api-ip"), "{key}: {names:?}");
        }
        if matches!(r.access, Access::Api(_)) {
            assert!(names.contains(&"api-key"), "{key}: {names:?}");
        }
        // Keys come from the request's verified facts, and only the access can provide them.
        for l in &r.limits {
            let available = match l.key {
                KeyBy::ClientIp | KeyBy::FormEmail(_) | KeyBy::FormEmailPerDevice(_) | KeyBy::FormSecret(_) => true,
                KeyBy::SessionUser => {
                    matches!(r.access, Access::SignedIn | Access::SecondFactor | Access::AnySession | Access::Org(_))
                }
                KeyBy::ApiKey => matches!(r.access, Access::Api(_)),
                KeyBy::Organization => matches!(r.access, Access::Org(_) | Access::Api(_)),
            };
            assert!(available, "{key}: {:?} can't be keyed by {:?}", l.policy, l.key);
        }
    }

    // Authentication, second-factor and billing limits keep limiting when Redis fails;
    // the general ones fall back to per-process budgets.
    let config = RateLimitsConfig::default();
    for id in PolicyId::ALL {
        let closed =
            matches!(id, PolicyId::AuthIp | PolicyId::AuthAccount | PolicyId::SecondFactor | PolicyId::BillingOrg);
        let expected = if closed { FailurePolicy::FailClosedToLocal } else { FailurePolicy::DegradeToLocal };
        assert_eq!(clientflow::abuse::limits::on_backend_failure(id), expected, "{id:?}");
        assert!(config.get(id).limit > 0);
    }
    assert_eq!(config.api_key, LimitConfig::token_bucket(1000, 60), "1,000 requests a minute per API key");
    // Every public form the issue names has its policy, per client address.
    for (id, name) in [
        (PolicyId::SignupIp, "signup-ip"),
        (PolicyId::ContactIp, "contact-ip"),
        (PolicyId::UnsubscribeIp, "unsubscribe-ip"),
        (PolicyId::StatusSubscribeIp, "status-subscribe-ip"),
        (PolicyId::SecurityReportIp, "security-report-ip"),
    ] {
        assert_eq!(id.name(), name);
        assert!(config.get(id).limit <= 30, "{name}: a public form allows at most a person's pace");
    }
}

#[tokio::test]
async fn exact_counts_at_the_window_edges_through_http() {
    let app = TestApp::builder().manual_clock(midnight()).config(|c| set(c, PolicyId::AuthIp, 3, 60)).spawn().await;
    let mut b = app.browser();
    let mut n = 0;
    let advance_ms = |ms: i64| app.clock.advance(time::Duration::milliseconds(ms));

    // Window 0: exactly three.
    let res = forgot(&mut b, &mut n).await;
    assert_eq!(res.status(), 303);
    assert!(header_list(&res, "ratelimit-policy").contains(&"\"auth-ip\";q=3;w=60".to_string()));
    assert!(header_list(&res, "ratelimit").contains(&"\"auth-ip\";r=2;t=60".to_string()));
    assert!(res.headers().get("retry-after").is_none());
    assert_eq!(statuses(&mut b, &mut n, 2).await, [303, 303]);
    let res = forgot(&mut b, &mut n).await;
    assert_eq!(res.status(), 429);
    // Three still fully weighted at 60.000 s; at 60.001 s floor(3 × 59999/60000) = 2.
    assert_eq!(res.headers()["retry-after"], "61");
    assert!(header_list(&res, "ratelimit").contains(&"\"auth-ip\";r=0;t=61".to_string()));
    let page = res.text().await.unwrap();
    assert!(page.contains("Too many sign-in attempts from your network"), "{page}");
    assert!(page.contains("<html"), "the web gets a page");

    // The last millisecond of window 0 and the first of window 1: still closed.
    advance_ms(59_999);
    assert_eq!(statuses(&mut b, &mut n, 1).await, [429]);
    advance_ms(1);
    let res = forgot(&mut b, &mut n).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "1");
    // 60.001 s: one.
    advance_ms(1);
    assert_eq!(statuses(&mut b, &mut n, 2).await, [303, 429]);
    // 80.000 s: floor(3 × 40000/60000) = 2, plus the one admitted: full.
    advance_ms(19_999);
    assert_eq!(statuses(&mut b, &mut n, 1).await, [429]);
    // 80.001 s: floor(3 × 39999/60000) = 1: one more.
    advance_ms(1);
    assert_eq!(statuses(&mut b, &mut n, 2).await, [303, 429]);
    // 100.001 s: nothing of window 0 is left in the sliding window: one more (three in window 1).
    advance_ms(20_000);
    assert_eq!(statuses(&mut b, &mut n, 2).await, [303, 429]);
    // 180 s: windows 0 and 1 are both gone: three again.
    advance_ms(79_999);
    assert_eq!(statuses(&mut b, &mut n, 4).await, [303, 303, 303, 429]);
}

#[tokio::test]
async fn the_production_defaults_limit_sign_in_forms_per_address() {
    let app = TestApp::builder()
        .manual_clock(midnight())
        .config(|c| c.rate_limits = RateLimitsConfig::default())
        .spawn()
        .await;
    let mut b = app.browser();
    let mut n = 0;
    let allowed = statuses(&mut b, &mut n, 31).await;
    assert_eq!(allowed.iter().filter(|s| **s == 303).count(), 30, "{allowed:?}");
    assert_eq!(allowed[30], 429);
    // Unlimited pages carry no rate-limit headers; limited ones do, even when answering
    // something else than 429.
    let res = b.get("/login").await;
    assert!(res.headers().get("ratelimit-policy").is_none());
    let res = b.post_with("/login", &[("email", "x@example.com"), ("password", "y")], None, true).await;
    assert_eq!(res.status(), 429, "the address's budget is spent for every sign-in form");
    // The per-account budget: 20 requests naming one address per 15 minutes.
    app.clock.advance(time::Duration::minutes(15));
    let mut other = app.browser();
    let mut codes = Vec::new();
    for _ in 0..21 {
        let res = other.submit("/forgot-password", "/forgot-password", &[("email", "target@example.com")]).await;
        codes.push(res.status().as_u16());
    }
    assert_eq!(codes.iter().filter(|s| **s == 303).count(), 20, "{codes:?}");
    assert_eq!(codes[20], 429);
}

#[tokio::test]
async fn a_forged_forwarded_header_from_an_untrusted_peer_does_not_change_the_key() {
    let app = TestApp::builder().manual_clock(midnight()).config(|c| set(c, PolicyId::AuthIp, 2, 60)).spawn().await;
    let mut n = 0;
    // Each request claims to come from somewhere else; the peer (127.0.0.1) is not a trusted
    // proxy, so all of them count against 127.0.0.1.
    let mut codes = Vec::new();
    for forged in ["198.51.100.1", "198.51.100.2", "198.51.100.3", "2001:db8::1"] {
        let mut b = app.browser().from_address(forged);
        codes.push(forgot(&mut b, &mut n).await.status().as_u16());
    }
    assert_eq!(codes, [303, 303, 429, 429]);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let app = TestApp::builder()
        .manual_clock(midnight())
        .config(|c| {
            set(c, PolicyId::AuthIp, 2, 60);
            c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        })
        .spawn()
        .await;
    let mut n = 0;
    let mut first = app.browser().from_address("203.0.113.7");
    assert_eq!(statuses(&mut first, &mut n, 3).await, [303, 303, 429]);
    // Another client behind the same proxy is not affected...
    let mut second = app.browser().from_address("203.0.113.8");
    assert_eq!(statuses(&mut second, &mut n, 2).await, [303, 303]);
    // ...but the right-most untrusted hop decides: a client can't prepend its way out.
    let mut sneaky = app.browser().from_address("192.0.2.99, 203.0.113.7");
    assert_eq!(statuses(&mut sneaky, &mut n, 1).await, [429]);
    // IPv6 clients are counted by their /64, IPv4-mapped ones as IPv4.
    let mut v6 = app.browser().from_address("2001:db8:1:2::1");
    assert_eq!(statuses(&mut v6, &mut n, 1).await, [303]);
    let mut v6_other_host = app.browser().from_address("2001:db8:1:2:ffff::9");
    assert_eq!(statuses(&mut v6_other_host, &mut n, 2).await, [303, 429]);
    let mut mapped = app.browser().from_address("::ffff:203.0.113.8");
    assert_eq!(statuses(&mut mapped, &mut n, 1).await, [429]);
}

#[tokio::test]
async fn api_requests_are_limited_per_key_and_per_address_with_problem_json() {
    let app = TestApp::builder()
        .manual_clock(midnight())
        .config(|c| {
            set(c, PolicyId::ApiKey, 2, 60);
            set(c, PolicyId::ApiIp, 5, 60);
        })
        .routes(routes_with_an_api_route)
        .spawn()
        .await;
    let seeded = crate::support::seed_org(&app.app_db, "apiorg").await;
    let id: uuid::Uuid = seeded.id.to_string().parse().unwrap();
    let (a, b) = (api_key(&app, id, "a").await, api_key(&app, id, "b").await);
    let call = async |key: &str| {
        app.client.get(app.url("/api/v1/test/whoami")).bearer_auth(key).send().await.expect("request")
    };
    assert_eq!(call(&a).await.status(), 200);
    let res = call(&a).await;
    assert_eq!(res.status(), 200);
    let listed = header_list(&res, "ratelimit");
    assert!(listed.contains(&"\"api-ip\";r=3;t=60".to_string()), "{listed:?}");
    assert!(listed.contains(&"\"api-key\";r=0;t=60".to_string()), "{listed:?}");
    let res = call(&a).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(res.headers()["retry-after"], "61");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], 429);
    assert!(body["detail"].as_str().unwrap().contains("API key"), "{body}");
    // Another key of the same organization has its own budget...
    assert_eq!(call(&b).await.status(), 200);
    assert_eq!(call(&b).await.status(), 200);
    // ...and the address's budget (5) counts every request, the refused one included.
    let res = call(&b).await;
    assert_eq!(res.status(), 429);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("this address"), "{body}");
    // A made-up key is refused by the address limit before anything looks at it.
    let res = call("cf_live_made-up").await;
    assert_eq!(res.status(), 429);
}

#[tokio::test]
async fn the_second_factor_is_limited_per_user() {
    let app =
        TestApp::builder().manual_clock(midnight()).config(|c| set(c, PolicyId::SecondFactor, 2, 900)).spawn().await;
    let mut a = crate::support::accounts::sign_up(&app, "twofa@example.com").await;
    crate::support::accounts::enable_totp(&app, &mut a).await;
    let mut b = app.browser();
    let res =
        crate::support::accounts::sign_in(&app, &mut b, "twofa@example.com", crate::support::accounts::PASSWORD).await;
    assert_eq!(clientflow_test_support::browser::location(&res), "/login/two-factor");
    let mut codes = Vec::new();
    for _ in 0..3 {
        let res = b.submit("/login/two-factor", "/login/two-factor", &[("code", "000000")]).await;
        codes.push(res.status().as_u16());
    }
    assert_eq!(codes, [401, 401, 429]);
}

#[tokio::test]
async fn billing_actions_are_limited_per_organization() {
    use clientflow::abuse::limits::BILLING_PER_ORG;
    use clientflow::access::role::Permission;
    let app = TestApp::builder()
        .manual_clock(midnight())
        .config(|c| set(c, PolicyId::BillingOrg, 2, 3600))
        .routes(|| {
            let mut routes = clientflow::routes::all();
            routes.push(
                clientflow::route!(
                    POST "/o/{org}/billing/test",
                    Surface::Web,
                    Access::Org(Permission::BillingManage),
                    || async { "changed" }
                )
                .limited(&[BILLING_PER_ORG]),
            );
            routes
        })
        .spawn()
        .await;
    let mut owner = crate::support::accounts::sign_up(&app, "payer@example.com").await;
    let one = crate::support::orgs::create_org(&mut owner, "Payer One").await;
    let two = crate::support::orgs::create_org(&mut owner, "Payer Two").await;
    let mut post = async |slug: &str| {
        let token = crate::support::orgs::session_token(&mut owner).await;
        owner.post_with(&format!("/o/{slug}/billing/test"), &[], Some(&token), true).await.status().as_u16()
    };
    assert_eq!([post(&one).await, post(&one).await, post(&one).await], [200, 200, 429]);
    assert_eq!(post(&two).await, 200, "each organization has its own budget");
}

async fn redis_app(redis: &RedisServer, clock: ManualClock, tweak: impl FnOnce(&mut Config) + 'static) -> TestApp {
    let url = redis.url();
    TestApp::builder()
        .manual_clock(clock)
        .routes(routes_with_an_api_route)
        .config(move |c| {
            c.redis.url = Some(clientflow::platform::secret::Secret::new(url));
            // A busy test machine must not look like an outage; a killed Redis answers at once.
            c.rate_limits.redis_timeout_ms = 5000;
            c.rate_limits.redis_retry_ms = 0;
            tweak(c);
        })
        .spawn()
        .await
}

#[tokio::test]
async fn two_server_processes_sharing_redis_enforce_one_budget() {
    let redis = RedisServer::start().await;
    let clock = midnight();
    // One master key, as two processes of one installation have: each accepts the other's
    // proof-of-work challenges, and the replay guard in Redis is what stops reuse.
    const MASTER: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let shared = |c: &mut Config| {
        set(c, PolicyId::AuthIp, 4, 60);
        c.secrets.master_key = Some(clientflow::platform::secret::Secret::new(MASTER));
    };
    let first = redis_app(&redis, clock.clone(), shared).await;
    let second = redis_app(&redis, clock.clone(), shared).await;
    let (mut a, mut b) = (first.browser(), second.browser());
    let mut n = 0;
    let mut admitted = [0, 0];
    for i in 0..10 {
        let browser = if i % 2 == 0 { &mut a } else { &mut b };
        if forgot(browser, &mut n).await.status() == 303 {
            admitted[i % 2] += 1;
        }
    }
    assert_eq!(admitted, [2, 2], "one budget of 4, taken in turns");
    for app in [&first, &second] {
        let body: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
        assert_eq!(body["checks"]["rate_limiter"], "redis");
    }

    // A proof of work accepted by one process is refused by the other.
    let (_, page) = a.page("/signup").await;
    let (challenge, solution) = clientflow_test_support::browser::pow_fields(&page).expect("a challenge");
    let token = a.token();
    let fields = |email: &'static str| {
        vec![
            ("email", email),
            ("password", crate::support::accounts::PASSWORD),
            ("pow_challenge", challenge.as_str()),
            ("pow_solution", solution.as_str()),
        ]
    };
    clock.advance(time::Duration::minutes(2));
    let res = a.post_with("/signup", &fields("first@example.com"), Some(&token), true).await;
    assert_eq!(res.status(), 303);
    b.page("/signup").await;
    let token = b.token();
    let res = b.post_with("/signup", &fields("second@example.com"), Some(&token), true).await;
    assert_eq!(res.status(), 400, "replayed on the other process");
    // Not for want of agreeing on keys: a fresh challenge of the first process is good on the
    // second.
    let (_, page) = a.page("/signup").await;
    let (fresh, fresh_solution) = clientflow_test_support::browser::pow_fields(&page).expect("a challenge");
    let proof = [
        ("email", "third@example.com"),
        ("password", crate::support::accounts::PASSWORD),
        ("pow_challenge", fresh.as_str()),
        ("pow_solution", fresh_solution.as_str()),
    ];
    assert_eq!(b.post_with("/signup", &proof, Some(&token), true).await.status(), 303);
}

#[tokio::test]
async fn redis_dying_keeps_authentication_limited_and_degrades_the_api_to_in_process() {
    let mut redis = RedisServer::start().await;
    let port = redis.port();
    let app = redis_app(&redis, midnight(), |c| {
        set(c, PolicyId::AuthIp, 5, 60);
        set(c, PolicyId::ApiKey, 3, 60);
    })
    .await;
    let seeded = crate::support::seed_org(&app.app_db, "outage").await;
    let key = api_key(&app, seeded.id.to_string().parse().unwrap(), "outage").await;
    let api = async || app.client.get(app.url("/api/v1/test/whoami")).bearer_auth(&key).send().await.expect("request");
    let mut b = app.browser();
    let mut n = 0;
    assert_eq!(statuses(&mut b, &mut n, 3).await, [303, 303, 303]);
    assert_eq!([api().await.status(), api().await.status()], [200, 200]);
    let body: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(body["checks"]["rate_limiter"], "redis");

    redis.kill();
    // Authentication continues from the counts Redis last reported: two more, then 429 —
    // never unlimited, never a 500.
    assert_eq!(statuses(&mut b, &mut n, 4).await, [303, 303, 429, 429]);
    // The API key's budget starts afresh in this process (3), and is still enforced.
    let codes: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(api().await.status().as_u16());
        }
        v
    };
    assert_eq!(codes, [200, 200, 200, 429]);
    // Visible to operations: ready (a degraded limiter still limits), but saying so.
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["checks"]["rate_limiter"].as_str().unwrap().starts_with("degraded"), "{body}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("clientflow_rate_limiter_degraded 1"), "{metrics}");
    assert!(
        metrics.contains(r#"clientflow_rate_limit_decisions_total{policy="auth-ip",outcome="limited"} 2"#),
        "{metrics}"
    );

    // Redis comes back (empty): the probe notices, and the counts seen during the outage came
    // back with the decisions.
    let _revived = RedisServer::start_on(port).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let body: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
        if body["checks"]["rate_limiter"] == "redis" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still degraded: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("clientflow_rate_limiter_degraded 0"), "{metrics}");
    assert_eq!(statuses(&mut b, &mut n, 1).await, [429], "the restart reset nothing");
}

/// A Redis that answers `PING` but refuses writes (out of memory under `noeviction`) is a
/// failing Redis: decisions fall back to the in-process store and keep limiting, and
/// `/readyz` and the degraded gauge say so until Redis accepts writes again.
#[tokio::test]
async fn redis_refusing_writes_is_reported_as_degraded() {
    let redis = RedisServer::start().await;
    let app = redis_app(&redis, midnight(), |c| set(c, PolicyId::ApiKey, 3, 60)).await;
    let seeded = crate::support::seed_org(&app.app_db, "oom").await;
    let key = api_key(&app, seeded.id.to_string().parse().unwrap(), "oom").await;
    let api = async || app.client.get(app.url("/api/v1/test/whoami")).bearer_auth(&key).send().await.expect("request");
    assert_eq!(api().await.status(), 200);
    let body: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(body["checks"]["rate_limiter"], "redis");

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let config_set = async |conn: &mut redis::aio::MultiplexedConnection, name: &str, value: &str| {
        let () = redis::cmd("CONFIG").arg("SET").arg(name).arg(value).query_async(conn).await.unwrap();
    };
    config_set(&mut conn, "maxmemory-policy", "noeviction").await;
    config_set(&mut conn, "maxmemory", "1").await;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG", "Redis still answers PING");

    // Decisions fall back and still limit (the API key's budget starts afresh in process).
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(api().await.status().as_u16());
    }
    assert_eq!(codes, [200, 200, 200, 429]);
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200, "a degraded limiter still limits: ready");
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["checks"]["rate_limiter"].as_str().unwrap().starts_with("degraded"), "{body}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("clientflow_rate_limiter_degraded 1"), "{metrics}");

    // Writes accepted again: the probe notices.
    config_set(&mut conn, "maxmemory", "0").await;
    let body: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(body["checks"]["rate_limiter"], "redis", "{body}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("clientflow_rate_limiter_degraded 0"), "{metrics}");
}

/// The per-account sign-in budget gives a device of its own only to a device the account
/// really signed in from: forged device cookies all share the address's budget, while the
/// owner's own device keeps signing in.
#[tokio::test]
async fn forged_device_cookies_buy_no_sign_in_budget() {
    let app = TestApp::builder()
        .manual_clock(midnight())
        .config(|c| {
            set(c, PolicyId::AuthAccount, 3, 900);
            set(c, PolicyId::AuthIp, 1000, 60);
        })
        .spawn()
        .await;
    let mut owner = crate::support::accounts::sign_up(&app, "dev@example.com").await;
    // Signed out, the browser keeps its device cookie.
    owner.page("/app").await;
    let t = owner.token();
    owner.post_with("/logout", &[], Some(&t), true).await;
    let attempt = async |cookie: &str| {
        app.client
            .post(app.url("/login"))
            .header("cookie", format!("{}={cookie}", clientflow::identity::session::DEVICE_COOKIE))
            .form(&[("email", "dev@example.com"), ("password", "guess guess guess")])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let mut codes = Vec::new();
    for n in 0..5 {
        codes.push(attempt(&format!("forged-device-{n:040}")).await);
    }
    // The sign-up named the address once; two more (refused by the CSRF check, which runs
    // after the limiter), then nothing, whatever cookie comes along.
    assert_eq!(codes, [403, 403, 429, 429, 429]);
    // The owner's real device has its own budget.
    let res =
        crate::support::accounts::sign_in(&app, &mut owner, "dev@example.com", crate::support::accounts::PASSWORD)
            .await;
    assert_eq!(res.status(), 303);
}

/// A policy configured as a token bucket lets a burst through, then a steady trickle: here 3
/// tokens refilled at 3 per 3 s, one a second.
#[tokio::test]
async fn a_token_bucket_policy_allows_a_burst_then_a_steady_rate() {
    let app = TestApp::builder()
        .manual_clock(midnight())
        .config(|c| {
            *c.rate_limits.get_mut(PolicyId::ApiKey) = LimitConfig::token_bucket(3, 3);
            set(c, PolicyId::ApiIp, 1000, 60);
        })
        .routes(routes_with_an_api_route)
        .spawn()
        .await;
    let seeded = crate::support::seed_org(&app.app_db, "bucket").await;
    let key = api_key(&app, seeded.id.to_string().parse().unwrap(), "burst").await;
    let call = async || app.client.get(app.url("/api/v1/test/whoami")).bearer_auth(&key).send().await.unwrap();
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(call().await.status().as_u16());
    }
    assert_eq!(codes, [200, 200, 200, 429]);
    // Half a second refills half a token: still nothing.
    app.clock.advance(time::Duration::milliseconds(500));
    assert_eq!(call().await.status(), 429);
    // A whole token: exactly one request.
    app.clock.advance(time::Duration::milliseconds(500));
    let res = call().await;
    assert_eq!(res.status(), 200);
    assert!(header_list(&res, "ratelimit-policy").contains(&"\"api-key\";q=3;w=3".to_string()));
    assert_eq!(call().await.status(), 429);
    // A quiet spell refills the whole bucket, and no more than it.
    app.clock.advance(time::Duration::seconds(60));
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(call().await.status().as_u16());
    }
    assert_eq!(codes, [200, 200, 200, 429]);
}
