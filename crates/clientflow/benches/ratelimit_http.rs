//! What a rate limit costs a request: the same route served with no limit (the reference),
//! with one limiter decision on the in-process store, and with one decision on a real local
//! `redis-server` (plain, and with the fail-closed mirror that authentication policies use),
//! measured in the same run and printed as a ratio to the reference.
//!
//! Two views of the same requests:
//! - through the router: the application's whole middleware stack and route guard, called
//!   in memory (no socket, no TLS), so the figure is the server-side cost of a request;
//! - over HTTPS: a keep-alive TLS connection to the server on loopback, as a client sees it.
//!
//! Requests are sequential (one caller); client addresses rotate over 1024 values and the limits
//! are never reached, so every decision takes the admitting path. Each figure is the best of
//! several rounds, since the machine may be busy. Needs PostgreSQL like the tests (for the app
//! state) and `redis-server` for the Redis rows. Run: `cargo bench --bench ratelimit_http`.

#![allow(clippy::print_stdout)] // a benchmark reports on standard output

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use clientflow::abuse::limits::{API_PER_IP, AUTH_PER_IP, LimitConfig, PolicyId};
use clientflow::access::route::{Access, RouteDef, Surface};
use clientflow::route;
use clientflow_test_support::TestApp;
use clientflow_test_support::redis::{self as test_redis, RedisServer};
use tower::ServiceExt;

const ROUNDS: usize = 5;
const ADDRESSES: u32 = 1024;

/// The same handler three times: without a limit, with one general-policy decision (per
/// address, degrading to in-process on a Redis failure) and with one authentication-policy
/// decision (per address, mirrored in process so it fails closed).
fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/bench/plain", Surface::Web, Access::Public, || async { "ok" }),
        route!(GET "/bench/limited", Surface::Web, Access::Public, || async { "ok" }).limited(&[API_PER_IP]),
        route!(GET "/bench/mirrored", Surface::Web, Access::Public, || async { "ok" }).limited(&[AUTH_PER_IP]),
    ]
}

async fn app(redis: Option<&RedisServer>) -> TestApp {
    let url = redis.map(|r| r.url());
    TestApp::builder()
        .routes(routes)
        .config(move |c| {
            for id in [PolicyId::ApiIp, PolicyId::AuthIp] {
                *c.rate_limits.get_mut(id) = LimitConfig::new(1_000_000_000, 60);
            }
            if let Some(url) = url {
                c.redis.url = Some(clientflow::platform::secret::Secret::new(url));
                c.rate_limits.redis_timeout_ms = 5000;
            }
        })
        .spawn()
        .await
}

fn peer(i: usize) -> SocketAddr {
    let n = (i as u32) % ADDRESSES;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100 + (n / 256) as u8, (n % 256) as u8)), 40_000)
}

/// Microseconds per request through the router, best of `ROUNDS`.
async fn through_router(router: &Router, path: &str, n: usize) -> f64 {
    let call = async |i: usize| {
        let mut req = Request::get(path).body(Body::empty()).expect("request");
        req.extensions_mut().insert(ConnectInfo(peer(i)));
        let res = router.clone().oneshot(req).await.expect("infallible");
        assert_eq!(res.status(), 200, "{path}");
        let _ = axum::body::to_bytes(res.into_body(), 1024).await;
    };
    for i in 0..n / 10 {
        call(i).await;
    }
    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for i in 0..n {
            call(i).await;
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    best
}

/// Microseconds per request over HTTPS on one keep-alive connection, best of `ROUNDS`.
async fn over_https(app: &TestApp, path: &str, n: usize) -> f64 {
    let client = clientflow_test_support::client_for(&app.cert_path(), app.addr).build().expect("client");
    let url = app.url(path);
    let call = async || {
        let res = client.get(&url).send().await.expect("request");
        assert_eq!(res.status(), 200, "{path}");
        let _ = res.bytes().await;
    };
    for _ in 0..n / 10 {
        call().await;
    }
    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..n {
            call().await;
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    best
}

struct Row {
    name: &'static str,
    router_us: f64,
    https_us: f64,
}

fn print(rows: &[Row]) {
    let (reference_router, reference_https) = (rows[0].router_us, rows[0].https_us);
    println!(
        "{:<44} {:>14} {:>8} {:>14} {:>8} {:>16}",
        "", "router µs/req", "ratio", "HTTPS µs/req", "ratio", "decision µs"
    );
    for r in rows {
        println!(
            "{:<44} {:>14.1} {:>7.2}x {:>14.1} {:>7.2}x {:>16.1}",
            r.name,
            r.router_us,
            r.router_us / reference_router,
            r.https_us,
            r.https_us / reference_https,
            r.router_us - reference_router,
        );
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    println!(
        "rate limit cost per request (best of {ROUNDS} rounds; one sequential caller; 'decision' is the \
         router figure minus the reference)"
    );
    let local = app(None).await;
    let router = clientflow::routes::router_from(local.state.clone(), routes());
    let mut rows = vec![
        Row {
            name: "no limit (reference)",
            router_us: through_router(&router, "/bench/plain", 20_000).await,
            https_us: over_https(&local, "/bench/plain", 3_000).await,
        },
        Row {
            name: "in-process, sliding window",
            router_us: through_router(&router, "/bench/limited", 20_000).await,
            https_us: over_https(&local, "/bench/limited", 3_000).await,
        },
    ];
    if !test_redis::available() {
        print(&rows);
        println!("redis-server not found: Redis rows skipped");
        return;
    }
    let server = RedisServer::start().await;
    let shared = app(Some(&server)).await;
    let router = clientflow::routes::router_from(shared.state.clone(), routes());
    rows.push(Row {
        name: "redis, sliding window",
        router_us: through_router(&router, "/bench/limited", 3_000).await,
        https_us: over_https(&shared, "/bench/limited", 2_000).await,
    });
    rows.push(Row {
        name: "redis, sliding window + fail-closed mirror",
        router_us: through_router(&router, "/bench/mirrored", 3_000).await,
        https_us: over_https(&shared, "/bench/mirrored", 2_000).await,
    });
    print(&rows);
    if shared.state.rate_limits.limiter().is_degraded() {
        println!("warning: Redis failed during the run; its rows include in-process decisions");
    }
}
