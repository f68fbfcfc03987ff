//! A browser-like client for the web surface: its own cookie jar, sends `Origin` like a
//! browser does on form posts, fills in the CSRF token the page carried, and solves the page's
//! proof-of-work challenge the way `pow.js` would.

use std::net::SocketAddr;
use std::path::Path;

use reqwest::Response;

pub struct Browser {
    pub client: reqwest::Client,
    pub base_url: String,
    /// The last page fetched with `get`, for form tokens.
    pub last_page: String,
    /// Sent as `X-Forwarded-For` on every request: where this browser appears to be when the
    /// app trusts the test's loopback address as a proxy.
    pub forwarded_for: Option<String>,
}

impl Browser {
    pub fn new(cert: &Path, addr: SocketAddr, base_url: &str) -> Self {
        let client = crate::client_for(cert, addr).cookie_store(true).build().expect("client");
        Self { client, base_url: base_url.to_string(), last_page: String::new(), forwarded_for: None }
    }

    /// This browser, appearing to come from `addr` (through a trusted proxy).
    pub fn from_address(mut self, addr: &str) -> Self {
        self.forwarded_for = Some(addr.to_string());
        self
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, self.url(path));
        match &self.forwarded_for {
            Some(addr) => req.header("x-forwarded-for", addr),
            None => req,
        }
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") { path.to_string() } else { format!("{}{}", self.base_url, path) }
    }

    /// GETs a path (doesn't remember the page).
    pub async fn get(&mut self, path: &str) -> Response {
        self.request(reqwest::Method::GET, path).send().await.expect("GET")
    }

    /// GETs a page, remembers it, returns (status, body).
    pub async fn page(&mut self, path: &str) -> (u16, String) {
        let res = self.get(path).await;
        let status = res.status().as_u16();
        let body = res.text().await.expect("body");
        self.last_page = body.clone();
        (status, body)
    }

    /// The CSRF token of the last page.
    pub fn token(&self) -> String {
        csrf_token(&self.last_page).unwrap_or_default()
    }

    /// Posts a form like a browser would from a page of this site: with `Origin`, the token of
    /// the page at `from` (fetched first) and, when the page carries a proof-of-work challenge,
    /// its solution (as `pow.js` would add it).
    pub async fn submit(&mut self, from: &str, action: &str, fields: &[(&str, &str)]) -> Response {
        self.page(from).await;
        let token = self.token();
        let mut fields: Vec<(&str, &str)> = fields.to_vec();
        let proof = pow_fields(&self.last_page);
        if let Some((challenge, solution)) = &proof {
            fields.push(("pow_challenge", challenge));
            fields.push(("pow_solution", solution));
        }
        self.post_with(action, &fields, Some(&token), true).await
    }

    /// Posts with full control over the CSRF token and the `Origin` header.
    pub async fn post_with(
        &self,
        action: &str,
        fields: &[(&str, &str)],
        token: Option<&str>,
        origin: bool,
    ) -> Response {
        let mut form: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if let Some(t) = token {
            form.push(("csrf_token".into(), t.to_string()));
        }
        let mut req = self.request(reqwest::Method::POST, action).form(&form);
        if origin {
            req = req.header("origin", self.base_url.clone());
        }
        req.send().await.expect("POST")
    }
}

/// The proof-of-work challenge of the first form in `html` that has one, and its solution.
pub fn pow_fields(html: &str) -> Option<(String, String)> {
    let challenge = hidden_value(html, "pow_challenge")?;
    let solution = clientflow::abuse::botcheck::solve_pow(&challenge)?;
    Some((challenge, solution.to_string()))
}

/// The value of the first hidden field called `name` in `html`.
pub fn hidden_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html.find(&marker)?;
    html[at + marker.len()..].split('"').next().map(str::to_string)
}

/// The value of the first `csrf_token` hidden field in `html`.
pub fn csrf_token(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf_token\" value=\"")?;
    let rest = &html[at + "name=\"csrf_token\" value=\"".len()..];
    rest.split('"').next().map(str::to_string)
}

/// The `Location` of a redirect.
pub fn location(res: &Response) -> String {
    res.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

/// All `Set-Cookie` values of a response.
pub fn set_cookies(res: &Response) -> Vec<String> {
    res.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok().map(str::to_string)).collect()
}
