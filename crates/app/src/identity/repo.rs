//! Users (global table).

use sqlx::PgConnection;

use crate::platform::ids::UserId;
use crate::platform::types::Email;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub display_name: String,
    pub status: String,
}

pub async fn create(
    conn: &mut PgConnection,
    email: &Email,
    display_name: &str,
) -> Result<User, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO users (id, email, display_name) VALUES ($1, $2, $3) \
         RETURNING id, email, display_name, status",
    )
    .bind(UserId::new())
    .bind(email.as_str())
    .bind(display_name)
    .fetch_one(conn)
    .await
}

pub async fn find_by_email(
    conn: &mut PgConnection,
    email: &Email,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as("SELECT id, email, display_name, status FROM users WHERE email = $1")
        .bind(email.as_str())
        .fetch_optional(conn)
        .await
}
