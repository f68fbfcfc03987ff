//! HTTP: the server loop and TLS, the middleware every request passes through, errors, input
//! refusals, and the route table's shape. The application assembles its router from these.

pub mod error;
pub mod input;
pub mod middleware;
pub mod route;
pub mod server;
pub mod tls;
