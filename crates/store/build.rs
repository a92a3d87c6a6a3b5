//! `sqlx::migrate!` embeds the migration files at compile time; make Cargo rebuild the crate
//! when one of them is added or edited, which it would not notice on its own.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
