//! Who is asking, and what may they do: roles and permissions, what each route declares.

pub mod role;
pub mod route;
