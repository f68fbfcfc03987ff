//! `sqlx::migrate!` embeds the migrations when this crate compiles; a migration added or
//! changed since must compile it again, which cargo doesn't know on its own.

fn main() {
    println!("cargo::rerun-if-changed=../../migrations");
}
